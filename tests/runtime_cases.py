"""Small models the edge-runtime tests convert: shapes and orders a converter can get wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
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


class DataDependent(nn.Module):
    """A branch on a value: torch.export refuses it, a trace would keep only the branch its example took."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


def assert_refused_in_one_line(convert: Callable, model: nn.Module, path: Path, prefix: str, names: str) -> None:
    """`convert(model, example, path, None)` raises a one-line ValueError starting with `prefix` and naming
    `names`, and leaves nothing in `path`'s folder."""
    with pytest.raises(ValueError) as caught:
        convert(model.eval(), torch.randn(1, 3, 8, 8), path, None)
    message = str(caught.value)
    assert message.startswith(prefix) and "\n" not in message and names in message, message
    assert list(path.parent.iterdir()) == []
