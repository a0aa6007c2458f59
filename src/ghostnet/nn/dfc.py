"""DFC attention (GhostNetV2, Tang et al., NeurIPS 2022): a gate from decoupled fully connected layers.

A Ghost module only mixes neighbouring pixels (1x1 and 3x3 convs); the DFC branch gives each output a view
of its whole row and column, cheaply: at half resolution, a 1x1 conv, then a horizontal (1 x 5) and a
vertical (5 x 1) depthwise conv, each followed by BN, make a sigmoid gate that multiplies the Ghost module's
output after nearest-neighbour upsampling.

Attribute names follow the official release (the branch is ``short_conv``, indices 0-5), so its
checkpoints and timm's load unchanged.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

__all__ = ["DFCAttention"]


def half_resolution(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling, as the paper; a map already smaller than 2x2 (a 32x32 input at stride 32) stays as it is."""
    if x.shape[-2] < 2 or x.shape[-1] < 2:
        return x
    return F.avg_pool2d(x, kernel_size=2, stride=2)


torch.fx.wrap("half_resolution")  # a leaf for torch.fx: its size test is not traced as control flow


class DFCAttention(nn.Sequential):
    """avg pool 2x2; 1x1 conv, BN; dw 1x5, BN; dw 5x1, BN; sigmoid; nearest upsample: a (B, C_out, H, W) gate.

    Args:
        in_chs: input channels.
        out_chs: gate channels (the gated module's output channels).
        kernel_size: kernel of the first conv (the gated module's primary kernel).
        stride: stride of the first conv (the gated module's stride), so the gate matches its output.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.Conv2d(out_chs, out_chs, (1, 5), 1, (0, 2), groups=out_chs, bias=False),  # along each row
            nn.BatchNorm2d(out_chs),
            nn.Conv2d(out_chs, out_chs, (5, 1), 1, (2, 0), groups=out_chs, bias=False),  # along each column
            nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The gate for `x` (B, C_in, H, W), upsampled to `size` (default: the first conv's output size)."""
        if size is None:
            stride = cast(nn.Conv2d, self[0]).stride
            size = (x.shape[-2] // stride[0], x.shape[-1] // stride[1])
        gate = super().forward(half_resolution(x))  # (B, C_out, H/2s, W/2s)
        return F.interpolate(gate.sigmoid(), size=size, mode="nearest")
