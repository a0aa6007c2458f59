"""Model surgery: find conv -> BN pairs, replace submodules, fold BatchNorm into convs.

These work on any `nn.Module` (ours, timm's, torchvision's), so every layer above can use them: `ghostify`
to swap convs, the models' ``fuse()``, and the deploy forms.
"""

from __future__ import annotations

import types
from typing import cast

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .rep import reparameterize

__all__ = ["Fusable", "SegmentationLogits", "conv_bn_pairs", "fuse_bn", "set_submodule"]


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted path) with `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv, BN) names for each Conv2d whose output goes only into a BatchNorm2d, found by torch.fx tracing.

    Subclasses of BatchNorm2d (which may carry an activation, as timm's do) do not count.

    Raises:
        ValueError: torch.fx cannot trace the model (e.g. data-dependent control flow).
    """
    import torch.fx

    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as e:  # noqa: BLE001 - tracing fails in many ways
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {first}") from None
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Conv2d) and len(node.users) == 1:
            user = next(iter(node.users))
            if user.op == "call_module" and type(modules.get(user.target)) is nn.BatchNorm2d:
                pairs.append((str(node.target), str(user.target)))
    return pairs


def _eval_only(self: nn.Module, mode: bool = True) -> nn.Module:
    if mode:
        raise RuntimeError("this model has its BatchNorms folded into its convs and is for inference only")
    return nn.Module.train(self, False)


def fuse_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` with every BatchNorm2d folded into the conv that feeds it (eval mode only).

    Covers the stem, Ghost modules' primary and cheap convs, depthwise convs, shortcuts and heads: any
    conv whose output goes only into a BN. GhostNetV3's multi-branch sites are folded first (`reparameterize`). The copy keeps its class and methods (``forward_features``,
    ``feature_info``...), refuses ``train()``, and matches the original's outputs to float rounding.

    Raises:
        ValueError: the model is in training mode (BN would use batch statistics), or a BN does not
            directly follow a conv (it cannot be folded), or torch.fx cannot trace the model.
    """
    if model.training:
        raise ValueError("fuse_bn needs a model in eval mode (call model.eval()): in training BN uses batch statistics")
    fused = reparameterize(model)  # a copy, with any re-parameterisable branches (GhostNetV3) folded first
    for conv_name, bn_name in conv_bn_pairs(fused):
        conv, bn = fused.get_submodule(conv_name), fused.get_submodule(bn_name)
        set_submodule(fused, conv_name, fuse_conv_bn_eval(cast(nn.Conv2d, conv), cast(nn.BatchNorm2d, bn)))
        set_submodule(fused, bn_name, nn.Identity())
    left = [n for n, m in fused.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(
            f"cannot fold {len(left)} BatchNorm layer(s) that no conv feeds directly: {', '.join(left[:5])}"
        )
    fused.train = types.MethodType(_eval_only, fused)  # type: ignore[method-assign]
    fused.is_fused = True  # type: ignore[assignment]
    return fused


class Fusable:
    """Gives a model ``fuse()``: an eval-only copy with every BatchNorm folded into its conv (`fuse_bn`)."""

    def fuse(self) -> nn.Module:
        if not isinstance(self, nn.Module):
            raise TypeError("Fusable is a mixin for nn.Module subclasses")
        return fuse_bn(self)


class SegmentationLogits(nn.Module):
    """A torchvision-style segmenter (``{"out", "aux"}``) as a module returning only the logits (B, C, H, W)."""

    def __init__(self, segmenter: nn.Module) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmenter(x)["out"]
