"""GhostNet building blocks (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020).

Attribute names follow the official release (`primary_conv`, `cheap_operation`, `conv_dw`, `bn_dw`,
`se.conv_reduce`, ...) so that its state dicts, and timm's, load unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .dfc import DFCAttention

__all__ = [
    "init_weights",
    "make_divisible",
    "GhostModule",
    "GhostModuleV2",
    "SqueezeExcite",
    "ConvBnAct",
    "GhostBottleneck",
    "ghost_shortcut",
    "dilate_",
]


def make_divisible(v: float, divisor: int = 4, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of `divisor`, never dropping more than 10%.

    Args:
        v: the unrounded channel count (e.g. ``16 * width``).
        divisor: the multiple to round to (GhostNet uses 4).
        min_value: the smallest value returned; defaults to ``divisor``.
    """
    if divisor < 1:
        raise ValueError(f"divisor must be >= 1, got {divisor}")
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:  # rounding down must not remove more than 10% of the channels
        new_v += divisor
    return new_v


def init_weights(model: nn.Module) -> None:
    """As the official release: He-normal (fan_out) convs, unit BN, N(0, 0.01) linear layers, zero biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_stride(stride: int) -> None:
    if stride not in (1, 2):
        raise ValueError(f"stride must be 1 or 2, got {stride!r}")


def _check_odd_kernel(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer, got {value!r}")


class GhostModule(nn.Module):
    """k x k conv, BN, [ReLU] -> m intrinsic maps; dw d x d conv, BN, [ReLU] -> m(s-1) ghosts; concat, keep n.

    Paper Sec. 3.1: an ordinary conv makes ``m = ceil(n / s)`` intrinsic maps and a cheap depthwise
    conv (groups = m) makes ``s - 1`` ghost maps from each of them. ``ratio=1`` is a plain conv.

    Args:
        in_channels: input channels ``c``.
        out_channels: output channels ``n`` (any positive integer; the concat is sliced to ``n``).
        kernel_size: kernel ``k`` of the primary conv.
        ratio: ``s``, how many output maps each intrinsic map accounts for (>= 1).
        dw_size: ``d``, the odd kernel of the cheap depthwise conv.
        stride: stride of the primary conv (1 or 2).
        relu: apply ReLU after both BNs; ``False`` gives a linear module.
        padding: primary conv padding; defaults to ``dilation * (kernel_size // 2)`` ("same").
        dilation: primary conv dilation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
        *,
        padding: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        _check_positive("in_channels", in_channels)
        _check_positive("out_channels", out_channels)
        _check_positive("kernel_size", kernel_size)
        _check_positive("dilation", dilation)
        if not isinstance(ratio, int) or isinstance(ratio, bool) or ratio < 1:
            raise ValueError(f"ratio must be an integer >= 1, got {ratio!r}")
        _check_odd_kernel("dw_size", dw_size)
        _check_stride(stride)
        if padding is None:
            padding = dilation * (kernel_size // 2)
        elif padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding!r}")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.ratio = ratio
        self.dw_size = dw_size
        init_channels = math.ceil(out_channels / ratio)  # m intrinsic maps
        new_channels = init_channels * (ratio - 1)  # m (s - 1) ghost maps
        self.init_channels = init_channels
        self.new_channels = new_channels

        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, init_channels, kernel_size, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(init_channels),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation: nn.Module
        if new_channels > 0:
            self.cheap_operation = nn.Sequential(
                nn.Conv2d(init_channels, new_channels, dw_size, 1, dw_size // 2, groups=init_channels, bias=False),
                nn.BatchNorm2d(new_channels),
                nn.ReLU(inplace=True) if relu else nn.Identity(),
            )
        else:  # ratio == 1: no ghosts, the module is a plain conv
            self.cheap_operation = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)  # (B, m, H', W') intrinsic maps
        if self.new_channels == 0:
            return x1
        x2 = self.cheap_operation(x1)  # (B, m(s-1), H', W') ghost maps
        out = torch.cat([x1, x2], dim=1)  # (B, m s, H', W')
        if self.init_channels * self.ratio == self.out_channels:
            return out  # nothing to trim: no Slice node in an export (a copy per module in ONNX Runtime)
        return out[:, : self.out_channels]  # (B, n, H', W')


class GhostModuleV2(GhostModule):
    """A Ghost module whose output is multiplied by a DFC attention gate computed from its input (GhostNetV2).

    Takes `GhostModule`'s arguments; the gate (``short_conv``, `DFCAttention`) sees the input at half resolution.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        stride: int = 1,
        relu: bool = True,
        *,
        padding: int | None = None,
        dilation: int = 1,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, ratio, dw_size, stride, relu, padding=padding, dilation=dilation
        )
        self.short_conv = DFCAttention(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)  # (B, n, H', W')
        return out * self.short_conv(x, (out.shape[-2], out.shape[-1]))


class SqueezeExcite(nn.Module):
    """Global avg pool, 1x1 conv (bias), ReLU, 1x1 conv (bias), hard-sigmoid gate, channel-wise multiply."""

    def __init__(self, in_chs: int, se_ratio: float = 0.25, divisor: int = 4) -> None:
        super().__init__()
        _check_positive("in_chs", in_chs)
        if not 0.0 < se_ratio <= 1.0:
            raise ValueError(f"se_ratio must be in (0, 1], got {se_ratio!r}")
        reduced_chs = make_divisible(in_chs * se_ratio, divisor)
        self.conv_reduce = nn.Conv2d(in_chs, reduced_chs, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced_chs, in_chs, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(
            x, 1
        )  # (B, C, 1, 1); exports as GlobalAveragePool, faster in ONNX Runtime than ReduceMean
        s = self.conv_expand(self.act1(self.conv_reduce(s)))
        return x * F.hardsigmoid(s)  # hard-sigmoid = relu6(x + 3) / 6


class ConvBnAct(nn.Module):
    """k x k conv, BN, ReLU (the 1x1 conv stage before the head)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.act1 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostBottleneck(nn.Module):
    """Ghost(ReLU) expand, [dw k x k stride 2, BN], [SE], Ghost(linear) reduce, + shortcut; no final activation.

    Paper Fig. 3. The shortcut is the identity when shapes allow, otherwise dw k x k (stride), BN, 1x1 conv, BN.

    Args:
        in_chs: input channels.
        mid_chs: expanded (hidden) channels.
        out_chs: output channels.
        dw_kernel_size: kernel of the stride-2 depthwise conv and of the shortcut's depthwise conv.
        stride: 1 or 2.
        se_ratio: squeeze-excite reduction ratio; 0 disables SE.
        ratio: Ghost module ratio ``s``.
        dw_size: Ghost module cheap-operation kernel ``d``.
        attention: expand with a `GhostModuleV2` (DFC attention gate), as GhostNetV2 does.
    """

    def __init__(
        self,
        in_chs: int,
        mid_chs: int,
        out_chs: int,
        dw_kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.0,
        *,
        ratio: int = 2,
        dw_size: int = 3,
        attention: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_chs", in_chs), ("mid_chs", mid_chs), ("out_chs", out_chs)):
            _check_positive(name, value)
        _check_odd_kernel("dw_kernel_size", dw_kernel_size)
        _check_stride(stride)
        if se_ratio < 0:
            raise ValueError(f"se_ratio must be >= 0, got {se_ratio!r}")
        self.stride = stride
        pad = (dw_kernel_size - 1) // 2

        expand = GhostModuleV2 if attention else GhostModule
        self.ghost1 = expand(in_chs, mid_chs, ratio=ratio, dw_size=dw_size, relu=True)
        self.conv_dw: nn.Conv2d | None = None
        self.bn_dw: nn.BatchNorm2d | None = None
        if stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, pad, groups=mid_chs, bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        self.se = SqueezeExcite(mid_chs, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_chs, out_chs, ratio=ratio, dw_size=dw_size, relu=False)
        self.shortcut = ghost_shortcut(in_chs, out_chs, dw_kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)  # (B, out, H/s, W/s)
        x = self.ghost1(x)  # (B, mid, H, W)
        if self.conv_dw is not None and self.bn_dw is not None:
            x = self.bn_dw(self.conv_dw(x))  # (B, mid, H/s, W/s)
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)  # (B, out, H/s, W/s)
        return x + shortcut


def ghost_shortcut(in_chs: int, out_chs: int, dw_kernel_size: int, stride: int) -> nn.Module:
    """The bottleneck's shortcut: the identity when shapes allow, else dw k x k (stride), BN, 1x1 conv, BN."""
    if in_chs == out_chs and stride == 1:
        return nn.Identity()
    pad = (dw_kernel_size - 1) // 2
    return nn.Sequential(
        nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride, pad, groups=in_chs, bias=False),
        nn.BatchNorm2d(in_chs),
        nn.Conv2d(in_chs, out_chs, 1, bias=False),
        nn.BatchNorm2d(out_chs),
    )


def dilate_(module: nn.Module, dilation: int, *, remove_stride: bool = False) -> nn.Module:
    """Give every conv of `module` with a spatial kernel `dilation` (padding kept "same"), in place.

    What an output stride below 32 needs (DeepLab): the strides of the last stages are removed (`remove_stride`
    sets every conv's stride to 1) and the convs after a removed stride are dilated, so each layer keeps the
    receptive field it was trained with. Only strides, dilations and paddings change: the weights stay as they are.
    """
    _check_positive("dilation", dilation)
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if remove_stride:
                m.stride = (1, 1)
            kh, kw = m.kernel_size
            m.dilation = (dilation if kh > 1 else 1, dilation if kw > 1 else 1)
            m.padding = (m.dilation[0] * (kh // 2), m.dilation[1] * (kw // 2))
    return module
