"""Golden complexity of every named model: the one table the tests recompute.

(params, MACs) at the given input size with 1000 classes (10 for the CIFAR models). Params include BN
affine weights; MACs count conv and linear multiply-adds (torch's FLOP counter / 2). The paper's
figures (SPEC.md) are in the comments; ours must equal the params and be within the stated MAC tolerance.
"""

# name: (input size, num_classes, params, MACs)
GOLDEN = {
    "ghostnet_050": (224, 1000, 2_587_292, 42_328_152),  # paper: 2.6M / 42M
    "ghostnet_100": (224, 1000, 5_182_508, 141_150_512),  # paper: 5.2M / 141M
    "ghostnet_130": (224, 1000, 7_358_820, 227_003_256),  # paper: 7.3M / 226M
}

# SPEC §3 reference MACs, which the measured numbers must match within 0.5%.
SPEC_MACS = {"ghostnet_050": 42.3e6, "ghostnet_100": 141.2e6, "ghostnet_130": 227.0e6}
