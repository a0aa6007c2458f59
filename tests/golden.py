"""Golden complexity of every named model: the one table the tests recompute.

(input size, num_classes, kwargs, params, MACs). Params include BN affine weights; MACs count conv and
linear multiply-adds (torch's FLOP counter / 2), the Ghost modules' cheap depthwise convs included.
PAPER holds the paper's figures, which ours must match: params to 0.1M and MACs within 0.5% (GhostNet)
or 3% (CIFAR models). See docs/COMPLEXITY.md for the one row counted differently from the paper.
"""

GOLDEN = {
    # name: (input, classes, kwargs, params, MACs)
    "ghostnet_050": (224, 1000, {}, 2_587_292, 42_328_152),
    "ghostnet_100": (224, 1000, {}, 5_182_508, 141_150_512),
    "ghostnet_130": (224, 1000, {}, 7_358_820, 227_003_256),
    "ghostnet_small_050": (32, 10, {}, 1_318_838, 12_153_312),
    "ghostnet_small_100": (32, 10, {}, 3_913_790, 42_680_384),
    "vgg16": (32, 10, {}, 14_986_698, 313_463_808),
    "ghost_vgg16": (32, 10, {}, 7_651_050, 158_699_520),
    "resnet56": (32, 10, {}, 855_770, 125_747_840),
    "ghost_resnet56": (32, 10, {}, 440_058, 65_473_152),
    # the s/d ablation on VGG-16 (paper Tables 2 and 3)
    "ghost_vgg16 s=3": (32, 10, {"ratio": 3}, 5_219_210, 107_995_752),
    "ghost_vgg16 s=4": (32, 10, {"ratio": 4}, 3_983_226, 81_317_376),
    "ghost_vgg16 s=5": (32, 10, {"ratio": 5}, 3_270_604, 66_596_112),
    "ghost_vgg16 d=1": (32, 10, {"dw_size": 1}, 7_634_410, 157_855_744),
    "ghost_vgg16 d=5": (32, 10, {"dw_size": 5}, 7_684_330, 160_387_072),
    "ghost_vgg16 d=7": (32, 10, {"dw_size": 7}, 7_734_250, 162_918_400),
    # GhostNetV2 and V3 (V3 in its training form, then folded for inference)
    "ghostnetv2_100": (224, 1000, {}, 6_156_908, 167_048_288),
    "ghostnetv2_130": (224, 1000, {}, 8_960_404, 269_322_976),
    "ghostnetv2_160": (224, 1000, {}, 12_392_698, 398_607_224),
    "ghostnetv3_050": (224, 1000, {}, 3_395_384, 117_528_000),
    "ghostnetv3_100": (224, 1000, {}, 8_129_028, 404_128_320),
    "ghostnetv3_130": (224, 1000, {}, 12_217_720, 654_842_824),
    "ghostnetv3_160": (224, 1000, {}, 17_275_700, 971_574_612),
    "ghostnetv3_050 folded": (224, 1000, {"folded": True}, 2_853_176, 49_640_656),
    "ghostnetv3_100 folded": (224, 1000, {"folded": True}, 6_147_588, 167_048_288),
    "ghostnetv3_130 folded": (224, 1000, {"folded": True}, 8_948_296, 269_322_976),
    "ghostnetv3_160 folded": (224, 1000, {"folded": True}, 12_377_778, 398_607_224),
    # GhostFaceNets (112x112 faces; "num_classes" is the embedding size)
    "ghostfacenet_v1": (112, 512, {}, 3_221_696, 139_180_272),  # the generic builders at their default width 1.0
    "ghostfacenet_v2": (112, 512, {}, 4_196_096, 165_078_048),
    "ghostfacenet_v1_100": (112, 512, {}, 3_221_696, 139_180_272),
    "ghostfacenet_v1_130": (112, 512, {}, 5_194_136, 224_825_944),
    "ghostfacenet_v2_100": (112, 512, {}, 4_196_096, 165_078_048),
    "ghostfacenet_v2_130": (112, 512, {}, 6_795_720, 267_145_664),
}

# The paper's Table 1 (ImageNet) and Tables 2-4 (CIFAR): (params, MACs) as it states them.
PAPER = {
    "ghostnet_050": (2_587_292, 42.3e6),
    "ghostnet_100": (5_182_508, 141.2e6),
    "ghostnet_130": (7_358_820, 227.0e6),
    "vgg16": (15.0e6, 313e6),
    "ghost_vgg16": (7.7e6, 158e6),
    "resnet56": (0.85e6, 125e6),
    "ghost_resnet56": (0.43e6, 63e6),
    "ghost_vgg16 s=3": (5.2e6, 107e6),
    "ghost_vgg16 s=4": (4.0e6, 80e6),
    "ghost_vgg16 s=5": (3.3e6, 65e6),
    "ghost_vgg16 d=1": (7.6e6, 157e6),
    "ghost_vgg16 d=5": (7.7e6, 160e6),
    "ghost_vgg16 d=7": (7.7e6, 163e6),
    # The successors' published tables (GhostNetV2 Table 2; GhostNetV3's, training form and folded).
    "ghostnetv2_100": (6.16e6, 167e6),
    "ghostnetv2_130": (8.96e6, 269e6),
    "ghostnetv2_160": (12.39e6, 399e6),
    "ghostnetv3_050": (3.395e6, 117.5e6),
    "ghostnetv3_100": (8.129e6, 404.1e6),
    "ghostnetv3_130": (12.218e6, 654.8e6),
    "ghostnetv3_160": (17.276e6, 971.6e6),
    "ghostnetv3_050 folded": (2.853e6, 49.6e6),
    "ghostnetv3_100 folded": (6.1e6, 167e6),
    "ghostnetv3_130 folded": (8.9e6, 269e6),
    "ghostnetv3_160 folded": (12.3e6, 399e6),
}

# The paper's Ghost-ResNet-56 row (63M) matches our count without the cheap depthwise convs (63.1M);
# with them it is 65.5M. Its VGG rows clearly include them (MACs grow with d), so we always count them.
PAPER_EXCLUDES_CHEAP_OPS = {"ghost_resnet56"}
