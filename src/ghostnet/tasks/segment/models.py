"""GhostNet as a semantic-segmentation backbone, under torchvision's LR-ASPP and DeepLabV3 heads.

    model = lraspp_ghostnet_100(num_classes=21)                       # output stride 16, as torchvision's MobileNetV3
    model = deeplabv3_ghostnet(num_classes=19, width=1.3, version="v2", output_stride=8, aux_loss=True)
    logits = model(images)["out"]                                     # (B, num_classes, H, W)

The backbone is GhostNet's stem and all its stages (through the 960-channel 1x1 conv, as torchvision takes
MobileNetV3's last map), without the classification head, at output stride 32, 16 or 8 (dilation replaces the
last strides). Heads: LR-ASPP (Howard et al., "Searching for MobileNetV3", Sec. 6.4) takes the stride-8 map
("low") and the last map ("high"); DeepLabV3 (Chen et al., 2017) puts ASPP (rates 12/24/36) on the last map,
with an optional auxiliary FCN head on the stride-8 map. The models return torchvision's ``{"out", "aux"}``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ...models.checkpoint import load_weights
from ...models.ghostnet import GhostNet
from ...models.registry import register_model

__all__ = [
    "GhostNetSegBackbone",
    "deeplabv3_ghostnet",
    "deeplabv3_ghostnet_100",
    "lraspp_ghostnet",
    "lraspp_ghostnet_100",
    "segmentation_backbone",
]

_LOW_BLOCK = 3  # blocks.3: the first stride-8 block (40 channels at width 1), where torchvision's MobileNetV3
# LR-ASPP also takes its "low" map; DeepLab's "aux" input
_HEAD_MODULES = ("global_pool", "conv_head", "act2", "flatten", "dropout", "classifier")


class GhostNetSegBackbone(nn.Module):
    """GhostNet stem and stages, no head: {low_name: the stride-8 map, high_name: the last (960w-channel) map}.

    Args:
        body: a GhostNet; its classification head is removed (its checkpoint keys are skipped on loading).
        low_name, high_name: the keys of the two maps (``"low"``/``"high"`` for LR-ASPP, ``"aux"``/``"out"`` for
            DeepLabV3, as torchvision's heads read them).
    """

    def __init__(self, body: GhostNet, low_name: str = "low", high_name: str = "high") -> None:
        super().__init__()
        if body.features_only:
            raise ValueError("the body must be a full GhostNet (its stages through the last 1x1 conv)")
        for name in _HEAD_MODULES:
            delattr(body, name)
        body.dropped_prefixes = ("conv_head.", "classifier.")
        self.body = body
        self.low_name, self.high_name = low_name, high_name
        self.low_channels = body.feature_info[2]["num_chs"]
        self.high_channels = body.num_features

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        body = self.body
        x = body.act1(body.bn1(body.conv_stem(x)))  # (B, 16w, H/2, W/2)
        low = x
        for i, block in enumerate(body.blocks):
            x = block(x)
            if i == _LOW_BLOCK:
                low = x  # (B, 40w, H/8, W/8)
        return OrderedDict([(self.low_name, low), (self.high_name, x)])  # high: (B, 960w, H/os, W/os)


def segmentation_backbone(
    width: float = 1.0,
    version: str = "v1",
    output_stride: int = 16,
    backbone_weights: str | os.PathLike | None = None,
    low_name: str = "low",
    high_name: str = "high",
) -> GhostNetSegBackbone:
    """GhostNet (any width, v1/v2/v3) at `output_stride`, with ImageNet classification weights if given."""
    body = GhostNet(width=width, version=version, output_stride=output_stride)
    seg = GhostNetSegBackbone(body, low_name, high_name)
    if backbone_weights:
        load_weights(body, backbone_weights)  # the head's keys are skipped; every other key must fit
    return seg


def _spec(kwargs: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """A segmenter is rebuilt around its checkpoint: its backbone weights path is not saved."""
    return {k: v for k, v in kwargs.items() if k != "backbone_weights"}


# The layers whose shape follows num_classes (left as initialised when fine-tuning to another class count).
_LRASPP = ("classifier.low_classifier.", "classifier.high_classifier.")
_DEEPLAB = ("classifier.4.", "aux_classifier.4.")


@register_model(task="segment", classifier_prefixes=_LRASPP, spec=_spec, input_size=512)
def lraspp_ghostnet(
    num_classes: int = 21,
    *,
    width: float = 1.0,
    version: str = "v1",
    output_stride: int = 16,
    inter_channels: int = 128,
    backbone_weights: str | os.PathLike | None = None,
) -> nn.Module:
    """torchvision's LR-ASPP on GhostNet: 1x1 conv-BN-ReLU to `inter_channels` on the last map, gated by global pool,
    1x1 conv, sigmoid; upsampled to the stride-8 map; a classifier on each, summed; upsampled to the input.

    Args:
        num_classes: output classes (background included).
        width, version: the GhostNet backbone (any width; ``"v1"``, ``"v2"`` or ``"v3"``).
        output_stride: 32, 16 (torchvision's MobileNetV3 choice) or 8.
        inter_channels: the head's width (128 in the paper).
        backbone_weights: ImageNet classification weights for the backbone (official/timm ``.pth`` or ours).
    """
    from torchvision.models.segmentation.lraspp import LRASPP

    _check_classes(num_classes)
    backbone = segmentation_backbone(width, version, output_stride, backbone_weights, "low", "high")
    return LRASPP(backbone, backbone.low_channels, backbone.high_channels, num_classes, inter_channels)


@register_model(task="segment", classifier_prefixes=_DEEPLAB, spec=_spec, input_size=512)
def deeplabv3_ghostnet(
    num_classes: int = 21,
    *,
    width: float = 1.0,
    version: str = "v1",
    output_stride: int = 16,
    aux_loss: bool = False,
    backbone_weights: str | os.PathLike | None = None,
) -> nn.Module:
    """torchvision's DeepLabV3 on GhostNet: ASPP (1x1, 3x3 at rates 12/24/36, image pool; 256 channels), 3x3 conv,
    BN, ReLU, 1x1 classifier on the last map, upsampled to the input; with `aux_loss` an FCN head on the stride-8 map.

    Args: as `lraspp_ghostnet`; `aux_loss` adds the auxiliary head (its output is ``"aux"``, for training only).
    """
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
    from torchvision.models.segmentation.fcn import FCNHead

    _check_classes(num_classes)
    backbone = segmentation_backbone(width, version, output_stride, backbone_weights, "aux", "out")
    aux = FCNHead(backbone.low_channels, num_classes) if aux_loss else None
    return DeepLabV3(backbone, DeepLabHead(backbone.high_channels, num_classes), aux)


@register_model(task="segment", classifier_prefixes=_LRASPP, spec=_spec, input_size=512)
def lraspp_ghostnet_100(num_classes: int = 21, **kwargs: Any) -> nn.Module:
    """LR-ASPP on GhostNet 1.0x at output stride 16: 2.92M params, 1.53G MACs at 512x512 with 21 classes."""
    return lraspp_ghostnet(num_classes, **_fixed_width(1.0, kwargs))


@register_model(task="segment", classifier_prefixes=_DEEPLAB, spec=_spec, input_size=512)
def deeplabv3_ghostnet_100(num_classes: int = 21, **kwargs: Any) -> nn.Module:
    """DeepLabV3 on GhostNet 1.0x at output stride 16: 10.72M params, 9.39G MACs at 512x512 (21 classes, no aux)."""
    return deeplabv3_ghostnet(num_classes, **_fixed_width(1.0, kwargs))


def _fixed_width(width: float, kwargs: dict[str, Any]) -> dict[str, Any]:
    if "width" in kwargs:
        raise ValueError("the named segmenters fix their width; use lraspp_ghostnet / deeplabv3_ghostnet for another")
    return {"width": width, **kwargs}


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2 (background included), got {num_classes!r}")
