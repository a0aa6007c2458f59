"""GhostNetV2 (Tang et al., "GhostNetV2: Enhance Cheap Operation with Long-Range Attention", NeurIPS 2022).

GhostNet's stage table, stem and head, with a DFC attention gate (`ghostnet.nn.DFCAttention`) on the
expanding Ghost module of every bottleneck but the first two. Module names follow the official release
(the gate is ``ghost1.short_conv``), so its checkpoints and timm's load unchanged.
"""

from __future__ import annotations

from typing import Any

from .ghostnet import GhostNet, fixed_width_ghostnet
from .registry import register_model

__all__ = ["ghostnetv2", "ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160"]


@register_model(default_width=1.0)
def ghostnetv2(width: float = 1.0, **kwargs: Any) -> GhostNet:
    """GhostNetV2 at any width multiplier."""
    return GhostNet(width=width, version="v2", **kwargs)


@register_model(default_width=1.0)
def ghostnetv2_100(**kwargs: Any) -> GhostNet:
    """GhostNetV2 1.0x: 6.16M params, 167.0M MACs at 224 (paper: 75.3 top-1)."""
    return fixed_width_ghostnet(1.0, "v2", **kwargs)


@register_model(default_width=1.3)
def ghostnetv2_130(**kwargs: Any) -> GhostNet:
    """GhostNetV2 1.3x: 8.96M params, 269.3M MACs at 224 (paper: 76.9 top-1)."""
    return fixed_width_ghostnet(1.3, "v2", **kwargs)


@register_model(default_width=1.6)
def ghostnetv2_160(**kwargs: Any) -> GhostNet:
    """GhostNetV2 1.6x: 12.39M params, 398.6M MACs at 224 (paper: 77.8 top-1)."""
    return fixed_width_ghostnet(1.6, "v2", **kwargs)
