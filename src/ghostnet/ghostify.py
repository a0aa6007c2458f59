"""`ghostify`: turn the convolutions of any PyTorch CNN into Ghost modules (paper Sec. 4.1).

Each eligible ``nn.Conv2d`` becomes a linear `GhostModule` (primary conv + BN, cheap depthwise conv + BN, no
activation: it replaces a linear operation, and the network's own activation after it stays) with the same
in/out channels, kernel, stride, padding and dilation, so the output shape is unchanged. A BatchNorm that
directly followed the conv is absorbed (replaced by ``nn.Identity``): the Ghost module normalises its own
two halves, as the paper's conv+BN -> Ghost module replacement does, and every BN left then sits right
after a conv, where `fuse_bn` can fold it.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from .layers import GhostModule

__all__ = ["ghostify", "GhostifyReport", "ReplacedConv", "conv_bn_pairs", "set_submodule"]


@dataclass
class ReplacedConv:
    """What happened to one Conv2d."""

    name: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
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
    before: dict | None = None  # {"params", "macs", "input_size"} when measured
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
            action = (r.action + (f" (absorbs {r.absorbed_bn})" if r.absorbed_bn else "")) if r.action == "replaced" else f"kept: {r.reason}"
            lines.append(f"{r.name:<36} {r.in_channels:>5} {r.out_channels:>5} {k:>5} {r.stride[0]:>6}  {action}")
        lines.append(self.message)
        if self.before and self.after:
            b, a = self.before, self.after
            size = "x".join(map(str, b["input_size"]))
            lines.append(
                f"params {b['params']:,} -> {a['params']:,} ({b['params'] / a['params']:.2f}x fewer); "
                f"MACs at {size} {b['macs'] / 1e6:,.1f}M -> {a['macs'] / 1e6:,.1f}M ({b['macs'] / a['macs']:.2f}x fewer)"
            )
        return "\n".join(lines)


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
    input_size: tuple[int, int] | None = None,
) -> GhostifyReport:
    """Replace the Conv2d layers of `model` with Ghost modules.

    Args:
        model: any CNN.
        ratio: Ghost ratio ``s`` (>= 1).
        dw_size: cheap depthwise kernel ``d`` (odd).
        skip: layer names (or shell patterns, e.g. ``"layer4.*"``) to leave alone.
        keep_first: leave the first conv (the stem, which sees the raw image) alone, as the paper does.
        inplace: modify `model` itself instead of a copy.
        input_size: (H, W) at which to measure params/MACs before and after (skipped when None).

    Returns:
        A `GhostifyReport` with the new model, one row per Conv2d, and the cost before/after if measured.

    Raises:
        ValueError: the model has no Conv2d, or a bad ratio/dw_size.
    """
    GhostModule(1, 1, ratio=ratio, dw_size=dw_size)  # validates ratio and dw_size with their usual errors
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(model).__name__} has no Conv2d layers to turn into Ghost modules")
    before = _measure(model, input_size)
    following_bn = _bn_after_conv(model)
    if not inplace:
        model = copy.deepcopy(model)
    report = GhostifyReport(model, ratio=ratio, dw_size=dw_size, before=before)
    for i, (name, conv) in enumerate(convs):
        reason = _why_not(conv)
        if keep_first and i == 0:
            reason = "first conv (sees the raw image)"
        elif any(fnmatch.fnmatch(name, pat) or name == pat for pat in skip):
            reason = "skipped by request"
        row = ReplacedConv(name, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.groups,
                           "kept" if reason else "replaced", reason, "" if reason else following_bn.get(name, ""))
        report.layers.append(row)
        if reason:
            continue
        if row.absorbed_bn:
            set_submodule(model, row.absorbed_bn, nn.Identity())
        ghost = GhostModule(
            conv.in_channels, conv.out_channels, conv.kernel_size[0], ratio, dw_size, conv.stride[0], relu=False,
            padding=conv.padding[0], dilation=conv.dilation[0],
        ).to(conv.weight.device)
        set_submodule(model, name, ghost)
    report.after = _measure(model, input_size)
    return report


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
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    modules = dict(model.named_modules())
    pairs = []
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Conv2d) and len(node.users) == 1:
            user = next(iter(node.users))
            if user.op == "call_module" and type(modules.get(user.target)) is nn.BatchNorm2d:
                pairs.append((node.target, user.target))
    return pairs


def _bn_after_conv(model: nn.Module) -> dict[str, str]:
    """{conv: BN} pairs to absorb; a model torch.fx cannot trace keeps all its BNs."""
    try:
        return dict(conv_bn_pairs(model))
    except ValueError:
        return {}


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule called `name` (dotted path) with `module`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def _measure(model: nn.Module, input_size: tuple[int, int] | None) -> dict | None:
    if input_size is None:
        return None
    from .profile import profile_model

    p = profile_model(model, input_size)
    return {"params": p.params, "macs": p.macs, "input_size": list(input_size)}
