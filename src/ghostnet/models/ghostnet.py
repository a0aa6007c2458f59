"""GhostNet for ImageNet-sized inputs (Han et al., CVPR 2020, Table 1), at any width."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from ..nn.blocks import ConvBnAct, GhostBottleneck, dilate_, init_weights, make_divisible
from ..nn.rep import GhostBottleneckV3, GhostModuleV3, reparameterize
from ..nn.surgery import Fusable
from .checkpoint import CheckpointError
from .registry import register_model

__all__ = [
    "fixed_width_ghostnet",
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
MAX_WIDTH = 10.0

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
        version: ``"v1"`` (Ghost bottlenecks), ``"v2"`` (DFC attention on the expansion of every bottleneck
            but the first two, GhostNetV2) or ``"v3"`` (V2 with re-parameterisable branches, GhostNetV3).
        folded: V3 only: build the inference form (one conv with bias per site) instead of the training form.
        output_stride: 32, 16 or 8: the strides of the last stages are removed and the convs after them dilated
            (as DeepLab does), so the deepest map is H/16 or H/8; the weights are the same for every value.
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
        version: str = "v1",
        folded: bool = False,
        output_stride: int = 32,
    ) -> None:
        super().__init__()
        out_indices = tuple(out_indices)
        _check_args(num_classes, width, in_chans, drop_rate, features_only, out_indices)
        _check_output_stride(output_stride, small_input)
        block = _block_builder(version, ratio, dw_size, folded)
        # The constructor's arguments: what builds a twin of this model (e.g. to fold a checkpoint for it).
        self.arch: dict[str, Any] = dict(
            num_classes=num_classes, width=width, in_chans=in_chans, drop_rate=drop_rate, ratio=ratio, dw_size=dw_size,
            small_input=small_input, features_only=features_only, out_indices=out_indices, version=version,
        )  # fmt: skip
        if output_stride != 32:  # only then: checkpoints of the models built before the option stay as they were
            self.arch["output_stride"] = output_stride
        self.output_stride = output_stride
        self.version = version
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

        stages, feature_info = _build_stages(stem_chs, stem_stride, width, block, small_input, output_stride)
        self.num_features = make_divisible(LAST_STAGE_CHANNELS * width, 4)
        self.head_hidden_size = HEAD_CHANNELS
        levels = out_indices if features_only else tuple(range(len(_FEATURE_BLOCKS)))
        self._out_blocks = {_FEATURE_BLOCKS[i]: i for i in levels}  # block index -> feature level
        self.feature_info = [feature_info[i] for i in levels]
        if features_only:
            keep = _FEATURE_BLOCKS[max(out_indices)] + 1  # blocks after the deepest level are not built
            self.blocks = nn.Sequential(*stages[:keep])
            # Checkpoint keys of the layers left out; load_weights drops these instead of failing.
            dropped = [f"blocks.{i}." for i in range(keep, len(stages))]
            self.dropped_prefixes = (*dropped, "conv_head.", "classifier.")
        else:
            self.blocks = nn.Sequential(*stages)
            self.dropped_prefixes = ()
            self._build_head(num_classes, drop_rate)
        init_weights(self)

    def _build_head(self, num_classes: int, drop_rate: float) -> None:
        """Global pool, 1x1 conv to 1280 (bias), ReLU, flatten, dropout, classifier."""
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(self.num_features, HEAD_CHANNELS, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes) if num_classes > 0 else nn.Identity()

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

    @property
    def folded(self) -> bool:
        """Whether the re-parameterisable sites (V3) are folded into single convs (the inference form)."""
        return any(isinstance(m, GhostModuleV3) and m.folded for m in self.modules())

    def reparameterize(self) -> GhostNet:
        """A copy in the inference form: every re-parameterisable site folded into one conv (V3; eval mode)."""
        return cast(GhostNet, reparameterize(self))

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's weights in this model's names (called by `load_weights` before matching keys).

        Drops thop's ``total_ops``/``total_params`` counters (official V2 files), renames timm's ``.bn1`` inside
        V3 branches to the official ``.bn``, and folds a V3 training-form checkpoint for a folded model.
        """
        sd = {k: v for k, v in state_dict.items() if not k.endswith(("total_ops", "total_params"))}
        sd = {_RPR_BN1.sub(r"\1.bn.", k): v for k, v in sd.items()}
        if self.version != "v3":
            return sd
        holds_branches = any("_rpr_" in k for k in sd)
        if self.folded and holds_branches:
            return _fold_state_dict(self, sd)
        if not self.folded and not holds_branches and any(k.endswith("primary_conv.0.bias") for k in sd):
            raise CheckpointError(
                "the checkpoint holds the folded (inference) form of a GhostNetV3 and this model is in the training "
                "form; build it folded: create_model(name, folded=True, ...) (training cannot resume from folded weights)"
            )
        return sd


# timm's V3 names a branch's BN "bn1" where the official release (and this package) name it "bn".
_RPR_BN1 = re.compile(r"(_rpr_(?:conv\.\d+|scale))\.bn1\.")


def _fold_state_dict(model: GhostNet, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A V3 training-form state dict, folded: loaded into a training-form twin of `model`, which is folded."""
    twin = GhostNet(**model.arch)  # built in the training form
    missing, unexpected = twin.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"the training-form checkpoint does not fit this GhostNetV3: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
        )
    return reparameterize(twin.eval(), inplace=True).state_dict()


def _check_args(
    num_classes: int, width: float, in_chans: int, drop_rate: float, features_only: bool, out_indices: tuple[int, ...]
) -> None:
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
    if not 0 < width <= MAX_WIDTH:  # 10x has 272M parameters; far wider would exhaust memory before any check
        raise ValueError(f"width must be in (0, {MAX_WIDTH:g}], got {width!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive integer, got {in_chans!r}")
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
    if features_only and (not out_indices or any(i not in range(len(_FEATURE_BLOCKS)) for i in out_indices)):
        raise ValueError(f"out_indices must be a non-empty subset of 0..{len(_FEATURE_BLOCKS) - 1}, got {out_indices}")


def _check_output_stride(output_stride: int, small_input: bool) -> None:
    if output_stride not in (8, 16, 32) or (small_input and output_stride != 32):
        raise ValueError(f"output_stride must be 32, 16 or 8 (and 32 with small_input), got {output_stride!r}")


Block = Callable[[int, int, int, int, int, int, float], nn.Module]  # (layer, in, mid, out, k, stride, se) -> block


def _block_builder(version: str, ratio: int, dw_size: int, folded: bool) -> Block:
    """The bottleneck of `version` for one row of Table 1; V2 and V3 put DFC attention on layers 2-15."""
    if version not in ("v1", "v2", "v3"):
        raise ValueError(f"version must be 'v1', 'v2' or 'v3', got {version!r}")
    if folded and version != "v3":
        raise ValueError("folded applies to version 'v3' (the only one with re-parameterisable branches)")

    def block(layer: int, in_chs: int, mid: int, out: int, k: int, s: int, se: float) -> nn.Module:
        attention = version != "v1" and layer > 1
        if version == "v3":
            return GhostBottleneckV3(in_chs, mid, out, k, s, se, attention=attention, folded=folded)
        return GhostBottleneck(in_chs, mid, out, k, s, se, ratio=ratio, dw_size=dw_size, attention=attention)

    return block


def _build_stages(
    stem_chs: int, stem_stride: int, width: float, block: Block, small_input: bool, output_stride: int = 32
) -> tuple[list[nn.Module], list[dict[str, Any]]]:
    """The nine bottleneck stages of Table 1 and the 1x1 conv stage, with the five feature levels' info.

    A stride that would take the reduction past `output_stride` is removed, and every later block is dilated by
    the strides removed so far (the block that loses its stride keeps the previous dilation, as torchvision's
    DeepLab ResNets do).
    """
    feature_info = [{"num_chs": stem_chs, "reduction": stem_stride, "module": "conv_stem"}]
    stages: list[nn.Module] = []
    prev_chs, reduction, layer, dilation = stem_chs, stem_stride, 0, 1
    for stage_idx, stage in enumerate(GHOSTNET_STAGES):
        blocks = []
        for k, exp, out, se, s in stage:
            if small_input and stage_idx == 1:
                s = 1
            out_chs, mid_chs = make_divisible(out * width, 4), make_divisible(exp * width, 4)
            blocks.append(block(layer, prev_chs, mid_chs, out_chs, k, s, se))
            if reduction * s > output_stride:  # (B, C, H/os, W/os) from here on: dilation replaces the stride
                dilate_(blocks[-1], dilation, remove_stride=True)
                dilation, s = dilation * s, 1
            elif dilation > 1:
                dilate_(blocks[-1], dilation)
            prev_chs, reduction, layer = out_chs, reduction * s, layer + 1
        stages.append(nn.Sequential(*blocks))
        if stage_idx in _FEATURE_BLOCKS:
            feature_info.append({"num_chs": prev_chs, "reduction": reduction, "module": f"blocks.{stage_idx}"})
    stages.append(nn.Sequential(ConvBnAct(prev_chs, make_divisible(LAST_STAGE_CHANNELS * width, 4), 1)))
    return stages, feature_info


def fixed_width_ghostnet(width: float, version: str = "v1", /, **kwargs: Any) -> GhostNet:
    """The GhostNet a named model (``ghostnet_100``, ``ghostnetv3_130``, ...) stands for: its width and version fixed."""
    for fixed in ("width", "version"):
        if fixed in kwargs:
            raise ValueError(
                f"the named models fix their {fixed}; use the generic builder (e.g. 'ghostnet') for another"
            )
    return GhostNet(width=width, version=version, **kwargs)


@register_model(default_width=1.0)
def ghostnet(width: float = 1.0, **kwargs) -> GhostNet:
    """GhostNet at any width multiplier (``width=1.1`` is the paper's detection backbone)."""
    return GhostNet(width=width, **kwargs)


@register_model(default_width=0.5, input_size=32)
def ghostnet_small_050(**kwargs) -> GhostNet:
    """GhostNet 0.5x for 32x32 images (output stride 8): 2.59M params, 13.4M MACs at 32."""
    return fixed_width_ghostnet(0.5, small_input=True, **kwargs)


@register_model(default_width=1.0, input_size=32)
def ghostnet_small_100(**kwargs) -> GhostNet:
    """GhostNet 1.0x for 32x32 images (output stride 8): 5.18M params, 43.9M MACs at 32."""
    return fixed_width_ghostnet(1.0, small_input=True, **kwargs)


@register_model(default_width=0.5)
def ghostnet_050(**kwargs) -> GhostNet:
    """GhostNet 0.5x: 2.59M params, 42.3M MACs at 224 (paper: 66.2 top-1)."""
    return fixed_width_ghostnet(0.5, **kwargs)


@register_model(default_width=1.0)
def ghostnet_100(**kwargs) -> GhostNet:
    """GhostNet 1.0x: 5.18M params, 141.2M MACs at 224 (paper: 73.9 top-1)."""
    return fixed_width_ghostnet(1.0, **kwargs)


@register_model(default_width=1.3)
def ghostnet_130(**kwargs) -> GhostNet:
    """GhostNet 1.3x: 7.36M params, 227.0M MACs at 224 (paper: 75.7 top-1)."""
    return fixed_width_ghostnet(1.3, **kwargs)
