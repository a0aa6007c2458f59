"""Building blocks and model surgery; they import only torch.

- `blocks`: the Ghost module, the Ghost bottleneck, squeeze-excite, `make_divisible`, `init_weights`.
- `surgery`: conv -> BN pairs, submodule replacement, BatchNorm folding (`fuse_bn`, the `Fusable` mixin).
- `dfc`: GhostNetV2's DFC attention gate (`GhostModuleV2` in `blocks`).
- `rep`: GhostNetV3's re-parameterisable Ghost module and bottleneck, and `reparameterize` (folding).
- `ghostify`: turn any CNN's convolutions into Ghost modules.
- `ghost_deploy`: Ghost modules without the concat (`ghost_deploy_form`), an exact inference rewrite.
"""

from .blocks import ConvBnAct, GhostBottleneck, GhostModule, GhostModuleV2, SqueezeExcite, init_weights, make_divisible
from .dfc import DFCAttention
from .ghost_deploy import GhostDeploy, ghost_deploy_form
from .ghostify import GhostifyReport, ReplacedConv, ghostify, ghostify_report
from .rep import GhostBottleneckV3, GhostModuleV3, reparameterize
from .surgery import Fusable, conv_bn_pairs, fuse_bn, set_submodule

__all__ = [
    "ConvBnAct",
    "DFCAttention",
    "GhostBottleneckV3",
    "GhostModuleV2",
    "GhostModuleV3",
    "Fusable",
    "GhostBottleneck",
    "GhostDeploy",
    "GhostModule",
    "GhostifyReport",
    "ReplacedConv",
    "SqueezeExcite",
    "conv_bn_pairs",
    "fuse_bn",
    "ghost_deploy_form",
    "ghostify",
    "ghostify_report",
    "init_weights",
    "make_divisible",
    "reparameterize",
    "set_submodule",
]
