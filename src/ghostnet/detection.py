"""GhostNet as a detection backbone (paper Sec. 4.3): multi-scale maps + FPN for torchvision's detectors.

    model = retinanet_ghostnet(num_classes=91, width=1.1, backbone_weights="state_dict_73.98.pth")
    model = fasterrcnn_ghostnet(num_classes=91, width=1.1, trainable_layers=3)

The backbone is `GhostNet(features_only=True)` at strides 8/16/32 (configurable), wrapped with
torchvision's `FeaturePyramidNetwork`; BN can be frozen and the early stages fixed, as torchvision's
own builders do.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from .checkpoint import load_weights
from .ghostify import set_submodule
from .models import GhostNet

__all__ = ["GhostNetFPN", "ghostnet_fpn_backbone", "retinanet_ghostnet", "fasterrcnn_ghostnet", "freeze_bn"]

# The stem and the nine bottleneck stages, deepest first: what "trainable_layers" counts, as torchvision does.
_STAGE_PREFIXES = ["blocks.7.", "blocks.6.", "blocks.5.", "blocks.4.", "blocks.3.", "blocks.2.", "blocks.1.", "blocks.0.", "conv_stem", "bn1"]


class GhostNetFPN(nn.Module):
    """GhostNet features at the chosen levels -> FPN (+ extra levels): an OrderedDict of `out_channels`-wide maps."""

    def __init__(self, body: GhostNet, out_channels: int = 256, extra: str = "pool") -> None:
        super().__init__()
        if not body.features_only:
            raise ValueError("the body must be a features_only GhostNet")
        self.body = body
        extra_block = LastLevelP6P7(out_channels, out_channels) if extra == "p6p7" else LastLevelMaxPool()
        self.fpn = FeaturePyramidNetwork([f["num_chs"] for f in body.feature_info], out_channels, extra_blocks=extra_block)
        self.out_channels = out_channels  # what torchvision's detectors read

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)  # [(B, C_i, H/r_i, W/r_i)]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def freeze_bn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with its statistics and affine weights (in place)."""
    for name, m in list(model.named_modules()):
        if type(m) is nn.BatchNorm2d:
            frozen = FrozenBatchNorm2d(m.num_features, eps=m.eps)
            frozen.weight.copy_(m.weight.detach())
            frozen.bias.copy_(m.bias.detach())
            frozen.running_mean.copy_(m.running_mean)
            frozen.running_var.copy_(m.running_var)
            set_submodule(model, name, frozen)
    return model


def ghostnet_fpn_backbone(
    width: float = 1.1,
    out_indices: Sequence[int] = (2, 3, 4),
    backbone_weights: str | os.PathLike | None = None,
    trainable_layers: int = 3,
    frozen_bn: bool = True,
    out_channels: int = 256,
    extra: str = "pool",
) -> GhostNetFPN:
    """GhostNet (any width) + FPN.

    Args:
        width: GhostNet width (1.1 in the paper).
        out_indices: feature levels (2, 3, 4 = strides 8, 16, 32).
        backbone_weights: ImageNet classification weights (official/timm ``.pth``, ours); head keys are skipped.
        trainable_layers: how many stages, from the deepest, are trained (0-10; 10 trains everything).
        frozen_bn: use FrozenBatchNorm2d (standard with small detection batches).
        out_channels: FPN width.
        extra: ``"pool"`` (one max-pooled level, Faster R-CNN) or ``"p6p7"`` (RetinaNet).
    """
    if not 0 <= trainable_layers <= len(_STAGE_PREFIXES):
        raise ValueError(f"trainable_layers must be in 0..{len(_STAGE_PREFIXES)}, got {trainable_layers}")
    if extra not in ("pool", "p6p7"):
        raise ValueError(f"extra must be 'pool' or 'p6p7', got {extra!r}")
    body = GhostNet(width=width, features_only=True, out_indices=out_indices)
    if backbone_weights:
        load_weights(body, backbone_weights)
    if frozen_bn:
        freeze_bn(body)
    trainable = tuple(_STAGE_PREFIXES[:trainable_layers])
    for name, p in body.named_parameters():
        p.requires_grad_(name.startswith(trainable) if trainable else False)
    return GhostNetFPN(body, out_channels, extra)


def retinanet_ghostnet(
    num_classes: int,
    width: float = 1.1,
    backbone_weights: str | os.PathLike | None = None,
    trainable_layers: int = 3,
    min_size: int = 800,
    max_size: int = 1333,
    **kwargs,
) -> nn.Module:
    """torchvision's RetinaNet on GhostNet + FPN (P3-P7), images resized to short side `min_size` (long <= `max_size`)."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    backbone = ghostnet_fpn_backbone(width, (2, 3, 4), backbone_weights, trainable_layers, extra="p6p7")
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(backbone, num_classes, min_size=min_size, max_size=max_size, anchor_generator=anchors, **kwargs)


def fasterrcnn_ghostnet(
    num_classes: int,
    width: float = 1.1,
    backbone_weights: str | os.PathLike | None = None,
    trainable_layers: int = 3,
    min_size: int = 800,
    max_size: int = 1333,
    **kwargs,
) -> nn.Module:
    """torchvision's Faster R-CNN on GhostNet + FPN (strides 8-64), images resized as `retinanet_ghostnet`."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    backbone = ghostnet_fpn_backbone(width, (2, 3, 4), backbone_weights, trainable_layers, extra="pool")
    anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
    roi_pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
    return FasterRCNN(backbone, num_classes, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors,
                      box_roi_pool=roi_pool, **kwargs)
