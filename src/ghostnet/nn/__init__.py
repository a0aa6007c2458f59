"""Building blocks and model surgery; they import only torch.

- `blocks`: the Ghost module, the Ghost bottleneck, squeeze-excite, `make_divisible`, `init_weights`.
- `surgery`: conv -> BN pairs, submodule replacement, BatchNorm folding (`fuse_bn`, the `Fusable` mixin).
- `ghostify`: turn any CNN's convolutions into Ghost modules.
"""

from .blocks import ConvBnAct, GhostBottleneck, GhostModule, SqueezeExcite, init_weights, make_divisible
from .ghostify import GhostifyReport, ReplacedConv, ghostify, ghostify_report
from .surgery import Fusable, conv_bn_pairs, fuse_bn, set_submodule

__all__ = [
    "ConvBnAct",
    "Fusable",
    "GhostBottleneck",
    "GhostModule",
    "GhostifyReport",
    "ReplacedConv",
    "SqueezeExcite",
    "conv_bn_pairs",
    "fuse_bn",
    "ghostify",
    "ghostify_report",
    "init_weights",
    "make_divisible",
    "set_submodule",
]
