"""GhostNet as a detection backbone (paper Sec. 4.3): multi-scale maps + FPN for torchvision's detectors.

    model = retinanet_ghostnet(num_classes=91, width=1.1, backbone_weights="state_dict_73.98.pth")
    model = fasterrcnn_ghostnet(num_classes=91, width=1.1, trainable_layers=3)

The backbone is `GhostNet(features_only=True)` at strides 8/16/32 (configurable), wrapped with
torchvision's `FeaturePyramidNetwork`; BN can be frozen and the early stages fixed, as torchvision's
own builders do. Anchors are 4x each level's stride (3 scales per octave for RetinaNet).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...models.checkpoint import load_weights
from ...models.ghostnet import GhostNet
from ...models.registry import register_model
from ...nn.surgery import set_submodule

__all__ = [
    "DetectorOptions",
    "GhostNetFPN",
    "ghostnet_fpn_backbone",
    "retinanet_ghostnet",
    "fasterrcnn_ghostnet",
    "freeze_bn",
]

# The stem and the nine bottleneck stages, deepest first: what "trainable_layers" counts, as torchvision does.
_STAGE_PREFIXES = [
    "blocks.7.",
    "blocks.6.",
    "blocks.5.",
    "blocks.4.",
    "blocks.3.",
    "blocks.2.",
    "blocks.1.",
    "blocks.0.",
    "conv_stem",
    "bn1",
]


class GhostNetFPN(nn.Module):
    """GhostNet features at the chosen levels -> FPN (+ extra levels): an OrderedDict of `out_channels`-wide maps."""

    def __init__(self, body: GhostNet, out_channels: int = 256, extra: str = "pool") -> None:
        super().__init__()
        if not body.features_only:
            raise ValueError("the body must be a features_only GhostNet")
        self.body = body
        from torchvision.ops import FeaturePyramidNetwork
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

        extra_block = LastLevelP6P7(out_channels, out_channels) if extra == "p6p7" else LastLevelMaxPool()
        self.fpn = FeaturePyramidNetwork(
            [f["num_chs"] for f in body.feature_info], out_channels, extra_blocks=extra_block
        )
        self.out_channels = out_channels  # what torchvision's detectors read

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)  # [(B, C_i, H/r_i, W/r_i)]
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats)))


def freeze_bn(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with its statistics and affine weights (in place)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, m in list(model.named_modules()):
        if type(m) is nn.BatchNorm2d:
            frozen = FrozenBatchNorm2d(m.num_features, eps=m.eps)
            frozen.weight.copy_(m.weight.detach())
            frozen.bias.copy_(m.bias.detach())
            frozen.running_mean.copy_(m.running_mean)
            frozen.running_var.copy_(m.running_var)
            set_submodule(model, name, frozen)
    return model


@dataclass
class DetectorOptions:
    """The detectors' own options, declared once: the builders' defaults, the detection config's fields and
    ``ghostnet detect train``'s options all come from here (a test holds the builders' signatures to it)."""

    width: float = field(default=1.1, metadata={"help": "GhostNet backbone width (1.1 in the paper)"})
    backbone_weights: str | None = field(
        default=None, metadata={"help": "ImageNet classification weights for the backbone (official/timm .pth or ours)"}
    )
    trainable_layers: int | None = field(
        default=None,
        metadata={
            "help": "backbone stages trained, deepest first (0-10; 10 = all); None = 3 with backbone_weights, else all"
        },
    )
    frozen_bn: bool | None = field(
        default=None,
        metadata={"help": "FrozenBatchNorm2d in the backbone; None = frozen when backbone_weights are given"},
    )
    min_size: int = field(default=800, metadata={"help": "images are resized to this short side ..."})
    max_size: int = field(default=1333, metadata={"help": "... unless the long side would pass this"})
    out_indices: list[int] = field(
        default_factory=lambda: [2, 3, 4],
        metadata={"help": "backbone levels fed to the FPN (2, 3, 4 = strides 8, 16, 32)"},
    )
    fpn_channels: int = field(default=256, metadata={"help": "FPN (and head) width"})
    rois_per_image: int = field(
        default=512, metadata={"help": "Faster R-CNN: RoIs sampled per image for the box head in training"}
    )

    def validate(self) -> None:
        """Raise `ValueError` naming the first option out of range."""
        levels = list(self.out_indices)
        checks = [
            (self.width > 0, "width must be > 0"),
            (self.min_size >= 32, "min_size must be >= 32"),
            (self.max_size >= self.min_size, "max_size must be >= min_size"),
            (
                len(levels) > 0 and levels == sorted(set(levels)) and all(0 <= i <= 4 for i in levels),
                "out_indices must be increasing levels in 0..4",
            ),
            (self.fpn_channels >= 8, "fpn_channels must be >= 8"),
            (self.trainable_layers is None or 0 <= self.trainable_layers <= 10, "trainable_layers must be in 0..10"),
            (self.rois_per_image >= 1, "rois_per_image must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def ghostnet_fpn_backbone(
    width: float = 1.1,
    out_indices: Sequence[int] = (2, 3, 4),
    backbone_weights: str | os.PathLike | None = None,
    trainable_layers: int | None = 3,
    frozen_bn: bool | None = True,
    out_channels: int = 256,
    extra: str = "pool",
) -> GhostNetFPN:
    """GhostNet (any width) + FPN.

    Args:
        width: GhostNet width (1.1 in the paper).
        out_indices: feature levels (2, 3, 4 = strides 8, 16, 32).
        backbone_weights: ImageNet classification weights (official/timm ``.pth``, ours); head keys are skipped.
        trainable_layers: how many stages, from the deepest, are trained (0-10; 10 trains everything);
            None = 3 with `backbone_weights`, all without (as torchvision: a randomly initialised stage must train).
        frozen_bn: use FrozenBatchNorm2d (standard with small detection batches); None = frozen when
            `backbone_weights` are given, trained BN otherwise (frozen identity BN would not normalise).
        out_channels: FPN width.
        extra: ``"pool"`` (one max-pooled level, Faster R-CNN) or ``"p6p7"`` (RetinaNet).
    """
    if trainable_layers is None:
        trainable_layers = 3 if backbone_weights else len(_STAGE_PREFIXES)
    if frozen_bn is None:
        frozen_bn = bool(backbone_weights)
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


def _anchor_sizes(backbone: GhostNetFPN, extra_levels: int) -> tuple[tuple[int, ...], ...]:
    """One anchor size per pyramid level: 4x the level's stride (32 at stride 8, as torchvision's detectors)."""
    strides = [f["reduction"] for f in backbone.body.feature_info]
    strides += [strides[-1] * 2 ** (i + 1) for i in range(extra_levels)]
    return tuple((4 * s,) for s in strides)


def _spec(kwargs: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """Enough to rebuild a detector around its checkpoint: the weights come from the checkpoint (no backbone weights
    path), and BN stays as it was built (frozen or not, as the builder decided)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    saved = {k: v for k, v in kwargs.items() if k != "backbone_weights"}
    saved["frozen_bn"] = any(isinstance(m, FrozenBatchNorm2d) for m in model.get_submodule("backbone.body").modules())
    return saved


# The layers whose shape follows num_classes (left as initialised when fine-tuning to another class count).
@register_model(task="detect", classifier_prefixes=("head.classification_head.cls_logits.",), spec=_spec)
def retinanet_ghostnet(
    num_classes: int = 91,
    width: float = 1.1,
    backbone_weights: str | os.PathLike | None = None,
    trainable_layers: int | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    out_indices: Sequence[int] = (2, 3, 4),
    fpn_channels: int = 256,
    frozen_bn: bool | None = None,
    **kwargs,
) -> nn.Module:
    """torchvision's RetinaNet on GhostNet + FPN (+P6, P7), images resized to short side `min_size` (long <= `max_size`).

    Args:
        num_classes: classes including background (index 0), as torchvision counts them.
        trainable_layers, frozen_bn: as `ghostnet_fpn_backbone`, where None (the default here) follows
            `backbone_weights`: 3 stages and frozen BN with weights, everything trained without.
        kwargs: passed on to torchvision's `RetinaNet` (score_thresh, detections_per_img, ...).
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    backbone = ghostnet_fpn_backbone(
        width, out_indices, backbone_weights, trainable_layers, frozen_bn, fpn_channels, extra="p6p7"
    )
    sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for (s,) in _anchor_sizes(backbone, 2))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    return RetinaNet(backbone, num_classes, min_size=min_size, max_size=max_size, anchor_generator=anchors, **kwargs)


@register_model(task="detect", classifier_prefixes=("roi_heads.box_predictor.",), spec=_spec)
def fasterrcnn_ghostnet(
    num_classes: int = 91,
    width: float = 1.1,
    backbone_weights: str | os.PathLike | None = None,
    trainable_layers: int | None = None,
    min_size: int = 800,
    max_size: int = 1333,
    out_indices: Sequence[int] = (2, 3, 4),
    fpn_channels: int = 256,
    frozen_bn: bool | None = None,
    rois_per_image: int = 512,
    **kwargs,
) -> nn.Module:
    """torchvision's Faster R-CNN on GhostNet + FPN (+ a max-pooled level), images resized as `retinanet_ghostnet`.

    Args: as `retinanet_ghostnet`; `rois_per_image` RoIs are sampled per image for the box head in training.
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign

    backbone = ghostnet_fpn_backbone(
        width, out_indices, backbone_weights, trainable_layers, frozen_bn, fpn_channels, extra="pool"
    )
    sizes = _anchor_sizes(backbone, 1)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    roi_pool = MultiScaleRoIAlign([str(i) for i in range(len(out_indices))], output_size=7, sampling_ratio=2)
    return FasterRCNN(
        backbone,
        num_classes,
        min_size=min_size,
        max_size=max_size,
        rpn_anchor_generator=anchors,
        box_roi_pool=roi_pool,
        box_batch_size_per_image=rois_per_image,
        **kwargs,
    )
