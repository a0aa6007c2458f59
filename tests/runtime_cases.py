"""Small models the edge-runtime tests convert: shapes and orders a converter can get wrong."""

from __future__ import annotations

import torch
from torch import nn


class ThreeHeads(nn.Module):
    """A conv, then three outputs of different shapes in a fixed order: pooled (N, 8), map (N, 8, H/2, W/2), and
    x + 1, an output computed straight from the input (ncnn computes it in place on its input blob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = torch.relu(self.conv(x))
        return y.mean((2, 3)), y, x + 1
