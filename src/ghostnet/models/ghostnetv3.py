"""GhostNetV3 (Liu et al., "GhostNetV3: Exploring the Training Strategies for Compact Models", 2024).

GhostNetV2's topology trained with re-parameterisable branches (`ghostnet.nn.GhostModuleV3`,
`GhostBottleneckV3`): three k x k conv+BN branches, a 1x1 "scale" branch and a BN identity per site, summed.
For inference, ``model.eval().reparameterize()`` (or ``create_model(name, folded=True)`` for folded weights)
turns every site into one conv with bias: the folded model has GhostNetV2's cost. Distillation from a large
teacher is part of the recipe (``ghostnet classify train --config ghostnetv3 --teacher ...``).
"""

from __future__ import annotations

from typing import Any

from .ghostnet import GhostNet, fixed_width_ghostnet
from .registry import register_model

__all__ = ["ghostnetv3", "ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130", "ghostnetv3_160"]


@register_model(default_width=1.0)
def ghostnetv3(width: float = 1.0, **kwargs: Any) -> GhostNet:
    """GhostNetV3 at any width multiplier (training form; ``folded=True`` for the inference form)."""
    return GhostNet(width=width, version="v3", **kwargs)


@register_model(default_width=0.5)
def ghostnetv3_050(**kwargs: Any) -> GhostNet:
    """GhostNetV3 0.5x: 3.40M params, 117.5M MACs at 224 in training form (folded: 2.85M, 49.6M)."""
    return fixed_width_ghostnet(0.5, "v3", **kwargs)


@register_model(default_width=1.0)
def ghostnetv3_100(**kwargs: Any) -> GhostNet:
    """GhostNetV3 1.0x: 8.13M params, 404.1M MACs at 224 in training form (folded: 6.15M, 167.0M; paper: 77.1 top-1)."""
    return fixed_width_ghostnet(1.0, "v3", **kwargs)


@register_model(default_width=1.3)
def ghostnetv3_130(**kwargs: Any) -> GhostNet:
    """GhostNetV3 1.3x: 12.22M params, 654.8M MACs at 224 in training form (folded: 8.95M, 269.3M; paper: 79.1)."""
    return fixed_width_ghostnet(1.3, "v3", **kwargs)


@register_model(default_width=1.6)
def ghostnetv3_160(**kwargs: Any) -> GhostNet:
    """GhostNetV3 1.6x: 17.28M params, 971.6M MACs at 224 in training form (folded: 12.38M, 398.6M; paper: 80.4)."""
    return fixed_width_ghostnet(1.6, "v3", **kwargs)
