"""GhostNet for ImageNet-sized inputs (Han et al., CVPR 2020, Table 1), at any width."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..nn.blocks import ConvBnAct, GhostBottleneck, init_weights, make_divisible
from ..nn.surgery import Fusable
from .registry import register_model

__all__ = [
    "GhostNet",
    "GHOSTNET_STAGES",
    "ghostnet",
    "ghostnet_050",
    "ghostnet_100",
    "ghostnet_130",
    "ghostnet_small_050",
    "ghostnet_small_100",
]

# Paper Table 1, one list per stage, one tuple per Ghost bottleneck:
#   (k: depthwise kernel, exp: hidden channels, out: output channels, se: SE ratio (0 = none), s: stride)
# Channels are scaled by the width multiplier with make_divisible(c * width, 4).
GHOSTNET_STAGES: tuple[tuple[tuple[int, int, int, float, int], ...], ...] = (
    ((3, 16, 16, 0, 1),),  # 112 x 112
    ((3, 48, 24, 0, 2),),  # 56
    ((3, 72, 24, 0, 1),),
    ((5, 72, 40, 0.25, 2),),  # 28
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0, 2),),  # 14
    (
        (3, 200, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 184, 80, 0, 1),
        (3, 480, 112, 0.25, 1),
        (3, 672, 112, 0.25, 1),
    ),
    ((5, 672, 160, 0.25, 2),),  # 7
    (
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
        (5, 960, 160, 0, 1),
        (5, 960, 160, 0.25, 1),
    ),
)
STEM_CHANNELS = 16
LAST_STAGE_CHANNELS = 960  # stage 9: 1x1 conv, BN, ReLU
HEAD_CHANNELS = 1280  # the head's 1x1 conv is not scaled by width

# Feature levels for features_only / detection: the index in `blocks` after which each level is taken (-1: the stem).
# Strides 2/4/8/16/32 after the stem and after stages 1, 3, 5, 7.
_FEATURE_BLOCKS = (-1, 1, 3, 5, 7)


class GhostNet(Fusable, nn.Module):
    """3x3 conv s2, BN, ReLU; 16 Ghost bottlenecks in 9 stages; 1x1 conv, BN, ReLU; avg pool, 1x1 conv, ReLU, FC.

    Args:
        num_classes: classifier outputs; 0 leaves the classifier out (``forward`` returns pooled features).
        width: channel multiplier (0.5, 1.0, 1.3, ... any positive value).
        in_chans: input image channels.
        drop_rate: dropout before the classifier.
        ratio: Ghost module ratio ``s`` used in every bottleneck.
        dw_size: Ghost module cheap-operation kernel ``d``.
        small_input: for 32x32-class images: stem and stage 1 keep stride 1, so the output stride is 8
            instead of 32 (feature levels then have strides 1, 1, 2, 4, 8).
        features_only: build only the backbone up to the last level in ``out_indices``;
            ``forward`` then returns that list of feature maps.
        out_indices: feature levels returned when ``features_only`` (0..4 = strides 2, 4, 8, 16, 32).
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width: float = 1.0,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        *,
        ratio: int = 2,
        dw_size: int = 3,
        small_input: bool = False,
        features_only: bool = False,
        out_indices: Sequence[int] = (0, 1, 2, 3, 4),
    ) -> None:
        super().__init__()
        out_indices = tuple(out_indices)
        _check_args(num_classes, width, in_chans, drop_rate, features_only, out_indices)
        self.num_classes = num_classes
        self.width = width
        self.drop_rate = drop_rate
        self.features_only = features_only
        self.out_indices = out_indices
        self.small_input = small_input
        stem_stride = 1 if small_input else 2

        stem_chs = make_divisible(STEM_CHANNELS * width, 4)
        self.conv_stem = nn.Conv2d(in_chans, stem_chs, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)

        stages, feature_info = _build_stages(stem_chs, stem_stride, width, ratio, dw_size, small_input)
        self.num_features = make_divisible(LAST_STAGE_CHANNELS * width, 4)
        self.head_hidden_size = HEAD_CHANNELS
        levels = out_indices if features_only else tuple(range(len(_FEATURE_BLOCKS)))
        self._out_blocks = {_FEATURE_BLOCKS[i]: i for i in levels}  # block index -> feature level
        self.feature_info = [feature_info[i] for i in levels]
        if features_only:
            keep = _FEATURE_BLOCKS[max(out_indices)] + 1  # blocks after the deepest level are not built
            self.blocks = nn.Sequential(*stages[:keep])
            # Checkpoint keys of the layers left out; load_weights drops these instead of failing.
            self.dropped_prefixes = tuple(f"blocks.{i}." for i in range(keep, len(stages))) + (
                "conv_head.",
                "classifier.",
            )
        else:
            self.blocks = nn.Sequential(*stages)
            self.dropped_prefixes = ()
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.conv_head = nn.Conv2d(self.num_features, HEAD_CHANNELS, 1, bias=True)
            self.act2 = nn.ReLU(inplace=True)
            self.flatten = nn.Flatten(1)
            self.dropout = nn.Dropout(drop_rate)
            self.classifier = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()
        init_weights(self)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one for `num_classes` (0 removes it)."""
        if self.features_only:
            raise ValueError("a features_only model has no classifier")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        if num_classes > 0:
            like = self.conv_head.weight  # the new head lives where the model lives, in its dtype
            self.classifier = nn.Linear(HEAD_CHANNELS, num_classes, device=like.device, dtype=like.dtype)
            nn.init.normal_(self.classifier.weight, 0, 0.01)
            nn.init.zeros_(self.classifier.bias)
        else:
            self.classifier = nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and all blocks: (B, in_chans, H, W) -> (B, num_features, H/32, W/32)."""
        x = self.act1(self.bn1(self.conv_stem(x)))  # (B, 16w, H/2, W/2)
        return self.blocks(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, 1x1 conv to 1280, ReLU, [dropout, classifier]: (B, C, h, w) -> (B, num_classes) or (B, 1280)."""
        x = self.global_pool(x)  # (B, C, 1, 1)
        x = self.flatten(self.act2(self.conv_head(x)))  # (B, 1280)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at ``out_indices`` (all five levels on a full model): a list of (B, C_i, H/r_i, W/r_i)."""
        features: list[torch.Tensor] = []
        x = self.act1(self.bn1(self.conv_stem(x)))
        if -1 in self._out_blocks:
            features.append(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self._out_blocks:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))


def _check_args(
    num_classes: int, width: float, in_chans: int, drop_rate: float, features_only: bool, out_indices: tuple[int, ...]
) -> None:
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if features_only and (not out_indices or any(i not in range(len(_FEATURE_BLOCKS)) for i in out_indices)):
        raise ValueError(f"out_indices must be a non-empty subset of 0..{len(_FEATURE_BLOCKS) - 1}, got {out_indices}")


def _build_stages(
    stem_chs: int, stem_stride: int, width: float, ratio: int, dw_size: int, small_input: bool
) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """The nine bottleneck stages of Table 1 and the 1x1 conv stage, with the five feature levels' info."""
    feature_info = [{"num_chs": stem_chs, "reduction": stem_stride, "module": "conv_stem"}]
    stages: list[nn.Module] = []
    prev_chs, reduction = stem_chs, stem_stride
    for stage_idx, stage in enumerate(GHOSTNET_STAGES):
        blocks = []
        for k, exp, out, se, s in stage:
            if small_input and stage_idx == 1:
                s = 1
            out_chs, mid_chs = make_divisible(out * width, 4), make_divisible(exp * width, 4)
            blocks.append(GhostBottleneck(prev_chs, mid_chs, out_chs, k, s, se, ratio=ratio, dw_size=dw_size))
            prev_chs, reduction = out_chs, reduction * s
        stages.append(nn.Sequential(*blocks))
        if stage_idx in _FEATURE_BLOCKS:
            feature_info.append({"num_chs": prev_chs, "reduction": reduction, "module": f"blocks.{stage_idx}"})
    stages.append(nn.Sequential(ConvBnAct(prev_chs, make_divisible(LAST_STAGE_CHANNELS * width, 4), 1)))
    return stages, feature_info


def _ghostnet(fixed_width: float, **kwargs) -> GhostNet:
    if "width" in kwargs:
        raise ValueError("the named models fix their width; use create_model('ghostnet', width=...) for another one")
    return GhostNet(width=fixed_width, **kwargs)


# The official release's ImageNet weights (top-1 73.98 / top-5 91.46), a plain state dict.
_OFFICIAL_1X_URL = "https://github.com/huawei-noah/CV-backbones/releases/download/ghostnet_pth/ghostnet_1x.pth"


@register_model(default_width=1.0)
def ghostnet(width: float = 1.0, **kwargs) -> GhostNet:
    """GhostNet at any width multiplier (``width=1.1`` is the paper's detection backbone)."""
    return GhostNet(width=width, **kwargs)


@register_model(default_width=0.5, input_size=32)
def ghostnet_small_050(**kwargs) -> GhostNet:
    """GhostNet 0.5x for 32x32 images (output stride 8): 2.59M params, 13.4M MACs at 32."""
    return _ghostnet(0.5, small_input=True, **kwargs)


@register_model(default_width=1.0, input_size=32)
def ghostnet_small_100(**kwargs) -> GhostNet:
    """GhostNet 1.0x for 32x32 images (output stride 8): 5.18M params, 43.9M MACs at 32."""
    return _ghostnet(1.0, small_input=True, **kwargs)


@register_model(default_width=0.5)
def ghostnet_050(**kwargs) -> GhostNet:
    """GhostNet 0.5x: 2.59M params, 42.3M MACs at 224 (paper: 66.2 top-1)."""
    return _ghostnet(0.5, **kwargs)


@register_model(default_width=1.0, url=_OFFICIAL_1X_URL)
def ghostnet_100(**kwargs) -> GhostNet:
    """GhostNet 1.0x: 5.18M params, 141.2M MACs at 224 (paper: 73.9 top-1)."""
    return _ghostnet(1.0, **kwargs)


@register_model(default_width=1.3)
def ghostnet_130(**kwargs) -> GhostNet:
    """GhostNet 1.3x: 7.36M params, 227.0M MACs at 224 (paper: 75.7 top-1)."""
    return _ghostnet(1.3, **kwargs)
