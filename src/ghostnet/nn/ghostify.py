"""`ghostify`: turn the convolutions of any PyTorch CNN into Ghost modules (paper Sec. 4.1).

Each eligible ``nn.Conv2d`` becomes a linear `GhostModule` (primary conv + BN, cheap depthwise conv + BN, no
activation: it replaces a linear operation, and the network's own activation after it stays) with the same
in/out channels, kernel, stride, padding and dilation, so the output shape is unchanged. A BatchNorm that
directly followed the conv is absorbed (replaced by ``nn.Identity``): the Ghost module normalises its own
two halves, as the paper's conv+BN -> Ghost module replacement does, and every BN left then sits right
after a conv, where `fuse_bn` can fold it.

    model = ghostify(resnet50(), ratio=2, dw_size=3)          # the Ghost model
    report = ghostify_report(resnet50(), ratio=2)             # the model and one row per Conv2d
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

from torch import nn

from .blocks import GhostModule, GhostModuleV2
from .rep import GhostModuleV3
from .surgery import conv_bn_pairs, set_submodule

# The module each `version` puts in place of a conv.
_MODULES: dict[str, type[nn.Module]] = {"v1": GhostModule, "v2": GhostModuleV2, "v3": GhostModuleV3}

__all__ = ["ghostify", "ghostify_report", "GhostifyReport", "ReplacedConv"]


@dataclass
class ReplacedConv:
    """What happened to one Conv2d."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    groups: int
    action: str  # "replaced" or "kept"
    reason: str = ""  # why a conv was kept
    absorbed_bn: str = ""  # the BatchNorm after it that the Ghost module's own BNs made redundant


@dataclass
class GhostifyReport:
    """The ghostified model and what was done to it."""

    model: nn.Module
    layers: list[ReplacedConv] = field(default_factory=list)
    ratio: int = 2
    dw_size: int = 3
    before: dict | None = None  # {"params", "macs", "input_size"} when measured (as `ghostnet ghostify` does)
    after: dict | None = None

    @property
    def replaced(self) -> list[ReplacedConv]:
        return [r for r in self.layers if r.action == "replaced"]

    @property
    def kept(self) -> list[ReplacedConv]:
        return [r for r in self.layers if r.action == "kept"]

    @property
    def message(self) -> str:
        if self.replaced:
            return f"replaced {len(self.replaced)} of {len(self.layers)} Conv2d layers with Ghost modules (s={self.ratio}, d={self.dw_size})"
        reasons = sorted({r.reason for r in self.kept})
        return f"nothing replaced: all {len(self.layers)} Conv2d layers were kept ({'; '.join(reasons)})"

    def format(self) -> str:
        """The report as a readable table."""
        lines = [f"{'layer':<36} {'in':>5} {'out':>5} {'k':>5} {'stride':>6}  action"]
        for r in self.layers:
            k = f"{r.kernel_size[0]}x{r.kernel_size[1]}"
            action = (
                (r.action + (f" (absorbs {r.absorbed_bn})" if r.absorbed_bn else ""))
                if r.action == "replaced"
                else f"kept: {r.reason}"
            )
            lines.append(f"{r.name:<36} {r.in_channels:>5} {r.out_channels:>5} {k:>5} {r.stride[0]:>6}  {action}")
        lines.append(self.message)
        if self.before and self.after:
            b, a = self.before, self.after
            size = "x".join(map(str, b["input_size"]))
            lines.append(
                f"params {b['params']:,} -> {a['params']:,} ({_change(b['params'], a['params'])}); "
                f"MACs at {size} {b['macs'] / 1e6:,.1f}M -> {a['macs'] / 1e6:,.1f}M ({_change(b['macs'], a['macs'])})"
            )
        return "\n".join(lines)


def _change(before: float, after: float) -> str:
    """``2.00x fewer`` or, when the replacement costs more (a DFC gate per module), ``1.49x more``."""
    return f"{before / after:.2f}x fewer" if after <= before else f"{after / before:.2f}x more"


def _why_not(conv: nn.Conv2d) -> str:
    """The reason a conv cannot (or should not) become a Ghost module, or '' if it can."""
    if conv.groups > 1:
        return "grouped/depthwise (already cheap)"
    if conv.kernel_size[0] != conv.kernel_size[1]:
        return f"non-square kernel {conv.kernel_size}"
    if conv.kernel_size[0] % 2 == 0:
        return f"even kernel {conv.kernel_size}"
    if conv.stride[0] != conv.stride[1] or conv.stride[0] not in (1, 2):
        return f"stride {conv.stride}"
    if isinstance(conv.padding, str) or conv.padding[0] != conv.padding[1]:
        return f"padding {conv.padding}"
    if conv.dilation[0] != conv.dilation[1]:
        return f"dilation {conv.dilation}"
    if conv.padding_mode != "zeros":
        return f"padding mode {conv.padding_mode}"
    return ""


def ghostify(
    model: nn.Module,
    ratio: int = 2,
    dw_size: int = 3,
    skip: Sequence[str] = (),
    keep_first: bool = True,
    inplace: bool = False,
    absorb_bn: bool = True,
    version: str = "v1",
) -> nn.Module:
    """Replace the Conv2d layers of `model` with Ghost modules; returns the Ghost model.

    Args:
        model: any CNN.
        ratio: Ghost ratio ``s`` (>= 1).
        dw_size: cheap depthwise kernel ``d`` (odd).
        skip: layer names (or shell patterns, e.g. ``"layer4.*"``) to leave alone.
        keep_first: leave the first conv (the stem, which sees the raw image) alone, as the paper does.
        inplace: modify `model` itself instead of a copy.
        absorb_bn: drop the BatchNorm right after each replaced conv (found by torch.fx tracing). A model
            that torch.fx cannot trace raises unless this is False (every BatchNorm is then kept).
        version: the module that replaces each conv: ``"v1"`` `GhostModule`, ``"v2"`` `GhostModuleV2`
            (with a DFC attention gate), ``"v3"`` `GhostModuleV3` (re-parameterisable branches; fold the
            result with `reparameterize` for inference; convs without "same" padding are kept).

    Raises:
        ValueError: the model has no Conv2d, a bad ratio/dw_size, or it cannot be traced to find its BNs.
    """
    return ghostify_report(model, ratio, dw_size, skip, keep_first, inplace, absorb_bn, version).model


def ghostify_report(
    model: nn.Module,
    ratio: int = 2,
    dw_size: int = 3,
    skip: Sequence[str] = (),
    keep_first: bool = True,
    inplace: bool = False,
    absorb_bn: bool = True,
    version: str = "v1",
) -> GhostifyReport:
    """`ghostify` with its report: the Ghost model and one row per Conv2d (replaced, or kept and why).

    Takes the same arguments as `ghostify`.
    """
    GhostModule(1, 1, ratio=ratio, dw_size=dw_size)  # validates ratio and dw_size with their usual errors
    if version not in _MODULES:
        raise ValueError(f"version must be one of {', '.join(_MODULES)}, got {version!r}")
    if version == "v3" and ratio < 2:
        raise ValueError("version 'v3' needs ratio >= 2 (its cheap branches have an identity)")
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layers to turn into Ghost modules")
    following_bn = _bn_after_conv(model) if absorb_bn else {}
    if not inplace:
        model = copy.deepcopy(model)
    report = GhostifyReport(model, ratio=ratio, dw_size=dw_size)
    for i, (name, conv) in enumerate(convs):
        reason = _why_not(conv) or (_why_not_v3(conv) if version == "v3" else "")
        if keep_first and i == 0:
            reason = "first conv (sees the raw image)"
        elif any(fnmatch.fnmatch(name, pat) or name == pat for pat in skip):
            reason = "skipped by request"
        row = ReplacedConv(
            name,
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.groups,
            "kept" if reason else "replaced",
            reason,
            "" if reason else following_bn.get(name, ""),
        )
        report.layers.append(row)
        if not reason:
            _replace(model, row, conv, ratio, dw_size, version)
    return report


def _replace(model: nn.Module, row: ReplacedConv, conv: nn.Conv2d, ratio: int, dw_size: int, version: str) -> None:
    if row.absorbed_bn:
        set_submodule(model, row.absorbed_bn, nn.Identity())
    k, stride = conv.kernel_size[0], conv.stride[0]
    ghost: nn.Module
    if version == "v3":  # "same" padding, no dilation: `_why_not_v3` kept the others
        ghost = GhostModuleV3(conv.in_channels, conv.out_channels, k, ratio, dw_size, stride, relu=False)
    else:
        padding = cast(tuple[int, int], conv.padding)[0]  # not "same"/"valid": `_why_not` kept those convs
        ghost = _MODULES[version](
            conv.in_channels, conv.out_channels, k, ratio, dw_size, stride, False,
            padding=padding, dilation=conv.dilation[0],
        )  # fmt: skip
    set_submodule(model, row.name, ghost.to(conv.weight.device))


def _why_not_v3(conv: nn.Conv2d) -> str:
    """Why a conv cannot become a `GhostModuleV3` (whose branches all pad to the same size), or ''."""
    k = conv.kernel_size[0]
    if conv.dilation[0] != 1 or cast(tuple[int, int], conv.padding)[0] != k // 2:
        return "GhostNetV3 branches need 'same' padding and no dilation"
    return ""


def _bn_after_conv(model: nn.Module) -> dict[str, str]:
    """{conv: BN} pairs to absorb; a model torch.fx cannot trace is refused rather than left with stray BNs."""
    try:
        return dict(conv_bn_pairs(model))
    except ValueError as e:
        raise ValueError(f"{e}; pass absorb_bn=False to replace its convs and keep every BatchNorm") from None
