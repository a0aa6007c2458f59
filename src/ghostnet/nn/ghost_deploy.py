"""Ghost modules in an inference form without the concat: `ghost_deploy_form`.

A fused Ghost module is k x k conv (bias), [ReLU]; dw d x d conv (bias), [ReLU]; concat; [slice]. Here the cheap
conv becomes a depthwise conv with channel multiplier ``s`` whose first kernel per channel is the identity, so one
conv gives every intrinsic map followed by its ``s - 1`` ghosts: no concat, no slice, but the channels come out
interleaved (``x1_0, g_0, x1_1, g_1, ...``). A Ghost module is rewritten only where every layer that reads its
output can take that order: torch.fx follows the output through channel-order-blind ops (ReLU, max-pool, ...) and
per-channel layers (depthwise convs, squeeze-excite, PReLU), whose channels are permuted, to dense convs and Ghost
modules, whose input weights are permuted. A Ghost module whose output reaches anything else (a residual add,
a flatten, the model's output) keeps its form. The result computes the same function (the identity kernel
copies exactly; trimmed channels get zero weights downstream).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import cast

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .blocks import GhostModule, SqueezeExcite
from .dfc import DFCAttention
from .rep import GhostModuleV3
from .surgery import fuse_bn, set_submodule

__all__ = ["GhostDeploy", "ghost_deploy_form"]

_GHOSTS = (GhostModule, GhostModuleV3)  # GhostModuleV2 is a GhostModule with a DFC gate (`short_conv`)
# Ops that act on each channel alone and the same way on all of them: the channel order passes through unchanged.
_BLIND_MODULES = (nn.ReLU, nn.ReLU6, nn.Identity, nn.MaxPool2d, nn.Hardswish, nn.SiLU, nn.Dropout)
_BLIND_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.hardswish, F.silu, F.max_pool2d, F.dropout}
_BLIND_METHODS = {"relu", "relu_", "contiguous"}


class GhostDeploy(nn.Module):
    """k x k conv (bias), [act]; dw d x d conv with multiplier s (bias, identity first), [act]; [x DFC gate].

    The output holds the Ghost module's ``m s`` maps interleaved (each intrinsic map, then its ghosts); made
    by `ghost_deploy_form`, which permutes the layers that read it to match. The second activation leaves the
    intrinsic maps as they are (ReLU twice is ReLU; a PReLU gets slope 1 there).
    """

    def __init__(
        self, primary: nn.Conv2d, primary_act: nn.Module, cheap: nn.Conv2d, act: nn.Module, gate: DFCAttention | None
    ) -> None:
        super().__init__()
        self.primary = primary
        self.primary_act = primary_act
        self.cheap = cheap
        self.act = act
        self.short_conv = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.cheap(self.primary_act(self.primary(x))))  # (B, m s, H', W'), interleaved
        if self.short_conv is not None:
            y = y * self.short_conv(x, (y.shape[-2], y.shape[-1]))
        return y


@dataclass
class _Plan:
    """One Ghost module to rewrite and what reads its output: layers to permute per channel, inputs to permute."""

    name: str
    channel_wise: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)


class _GhostLeafTracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = isinstance(m, (*_GHOSTS, SqueezeExcite, DFCAttention))
        return leaf or super().is_leaf_module(m, module_qualified_name)


def ghost_deploy_form(model: nn.Module) -> nn.Module:
    """A copy of `model` (BN folded by `fuse_bn` unless it already is) with its Ghost modules as `GhostDeploy`.

    Args:
        model: any model in eval mode; Ghost modules (V1, V2, folded V3) whose output only reaches layers that can
            take another channel order are rewritten, the rest (and everything else) is left as it is.

    Raises:
        ValueError: the model is in training mode, or torch.fx cannot trace it (as `fuse_bn`).
    """
    if model.training:
        raise ValueError("ghost_deploy_form needs a model in eval mode (call model.eval())")
    out = copy.deepcopy(model) if getattr(model, "is_fused", False) else fuse_bn(model)
    try:
        graph = _GhostLeafTracer().trace(out)
    except Exception as e:  # noqa: BLE001 - tracing fails in many ways
        raise ValueError(f"torch.fx cannot trace {type(model).__name__}: {str(e).splitlines()[0]}") from None
    modules = dict(out.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    plans = [p for p in (_plan(n, modules, calls) for n in graph.nodes) if p is not None]
    with torch.no_grad():
        for plan in plans:
            _apply(out, plan, modules)
    out.ghost_deploy_modules = len(plans)  # type: ignore[assignment]
    return out


_ACTS = (nn.Identity, nn.ReLU, nn.PReLU)


@dataclass
class _Parts:
    """A folded Ghost module's primary conv and activation, cheap conv and activation."""

    primary: nn.Conv2d
    primary_act: nn.Module
    cheap: nn.Conv2d
    cheap_act: nn.Module


def _conv_act(seq: nn.Module) -> tuple[nn.Conv2d, nn.Module] | None:
    """(conv, activation) of a folded ``conv, [Identity], act`` sequence, else None (a BN left, another act)."""
    if not isinstance(seq, nn.Sequential):
        return None  # ratio 1: no cheap operation
    convs = [m for m in seq if isinstance(m, nn.Conv2d)]
    acts = [m for m in seq if isinstance(m, _ACTS) and type(m) is not nn.Identity]
    if len(convs) != 1 or len(acts) > 1 or any(not isinstance(m, (nn.Conv2d, *_ACTS)) for m in seq):
        return None
    return convs[0], acts[0] if acts else nn.Identity()


def _ghost_parts(module: nn.Module) -> _Parts | None:
    """The parts of a folded Ghost module that can be rewritten, else None."""
    if not isinstance(module, _GHOSTS) or (isinstance(module, GhostModuleV3) and not module.folded):
        return None
    first, second = _conv_act(module.primary_conv), _conv_act(module.cheap_operation)
    if first is None or second is None:
        return None
    parts = _Parts(first[0], first[1], second[0], second[1])
    d, cheap = parts.cheap.kernel_size[0], parts.cheap
    same = cheap.padding == (d // 2, d // 2) and cheap.stride == (1, 1) and cheap.dilation == (1, 1)
    square = cheap.kernel_size[1] == d and cheap.groups == parts.primary.out_channels
    if type(parts.primary_act) is not type(parts.cheap_act) or not same or not square:
        return None
    return parts


def _plan(node: torch.fx.Node, modules: dict[str, nn.Module], calls: dict[str, int]) -> _Plan | None:
    """The rewrite of the Ghost module that `node` calls, if every reader of its output can be permuted."""
    if node.op != "call_module" or calls[str(node.target)] != 1:
        return None
    if _ghost_parts(modules[str(node.target)]) is None:
        return None
    plan = _Plan(str(node.target))
    frontier, seen = list(node.users), set()
    while frontier:
        user = frontier.pop()
        if user in seen:
            continue
        seen.add(user)
        kind = _classify(user, modules, calls)
        if kind is None:
            return None
        if kind == "reader":
            plan.readers.append(str(user.target))
            continue
        if kind == "channel":
            plan.channel_wise.append(str(user.target))
        frontier.extend(user.users)
    return plan


def _classify(node: torch.fx.Node, modules: dict[str, nn.Module], calls: dict[str, int]) -> str | None:
    """How a reader of a rewritten output takes the new order: 'blind', 'channel' (permute it), 'reader' (permute
    its input weights), or None (it cannot)."""
    if len(node.all_input_nodes) != 1 or not node.args or not isinstance(node.args[0], torch.fx.Node):
        return None  # it mixes the output with another tensor (a residual add, a concat)
    if node.op == "call_function":
        return "blind" if node.target in _BLIND_FUNCTIONS else None
    if node.op == "call_method":
        return "blind" if node.target in _BLIND_METHODS else None
    if node.op != "call_module":
        return None
    m = modules[str(node.target)]
    if isinstance(m, _BLIND_MODULES) or (isinstance(m, nn.PReLU) and m.num_parameters == 1):
        return "blind"
    if calls[str(node.target)] != 1:
        return None  # a layer with weights called from two places cannot be permuted for one of them
    if isinstance(m, (SqueezeExcite, nn.PReLU)):
        return "channel"
    if isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels and m.groups > 1:
        return "channel"
    if isinstance(m, nn.Conv2d) and m.groups == 1:
        return "reader"
    if isinstance(m, _GHOSTS) and _ghost_parts(m) is not None:
        return "reader"
    return None


def _source_channels(module: nn.Module, parts: _Parts) -> torch.Tensor:
    """For each interleaved channel ``i s + k``, the Ghost module's output channel it holds (-1: trimmed away)."""
    m, n = parts.primary.out_channels, cast(int, module.out_channels)
    s = parts.cheap.out_channels // m + 1
    i = torch.arange(m).repeat_interleave(s)
    k = torch.arange(s).repeat(m)
    src = torch.where(k == 0, i, m + i * (s - 1) + k - 1)
    return torch.where(src < n, src, torch.full_like(src, -1))


def _gather(t: torch.Tensor, dim: int, src: torch.Tensor) -> torch.Tensor:
    """`t` indexed by `src` along `dim`, zeros where `src` is -1."""
    zeros = torch.zeros_like(t.narrow(dim, 0, 1))
    padded = torch.cat([t, zeros], dim)
    return padded.index_select(dim, torch.where(src < 0, t.shape[dim], src))


def _interleaved_cheap(cheap: nn.Conv2d, s: int) -> nn.Conv2d:
    """The cheap dw conv with an identity kernel before each channel's ``s - 1`` ghost kernels."""
    m, d = cheap.groups, cheap.kernel_size[0]
    w = torch.zeros(m, s, 1, d, d, dtype=cheap.weight.dtype, device=cheap.weight.device)
    w[:, 0, 0, d // 2, d // 2] = 1.0
    w[:, 1:] = cheap.weight.reshape(m, s - 1, 1, d, d)
    b = torch.zeros(m, s, dtype=w.dtype, device=w.device)
    if cheap.bias is not None:
        b[:, 1:] = cheap.bias.reshape(m, s - 1)
    conv = nn.Conv2d(m, m * s, d, 1, d // 2, groups=m, bias=True).to(w.device, w.dtype)
    conv.weight.copy_(w.reshape(m * s, 1, d, d))
    cast(torch.Tensor, conv.bias).copy_(b.reshape(-1))
    return conv


def _permute_out(conv: nn.Conv2d, src: torch.Tensor) -> None:
    """Reorder a conv's output channels (a depthwise conv's channels) in place; zero weights for -1."""
    conv.weight = nn.Parameter(_gather(conv.weight, 0, src))
    bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels, device=conv.weight.device)
    conv.bias = nn.Parameter(_gather(bias, 0, src))
    conv.out_channels = len(src)
    if conv.groups > 1:
        conv.in_channels = conv.groups = len(src)


def _permute_in(conv: nn.Conv2d, src: torch.Tensor) -> None:
    """Reorder a dense conv's input channels in place; zero weights for -1."""
    conv.weight = nn.Parameter(_gather(conv.weight, 1, src))
    conv.in_channels = len(src)


def _permute_channel_wise(m: nn.Module, src: torch.Tensor) -> None:
    if isinstance(m, SqueezeExcite):
        _permute_in(m.conv_reduce, src)
        _permute_out(m.conv_expand, src)
    elif isinstance(m, nn.PReLU):
        m.weight = nn.Parameter(_gather(m.weight, 0, src))
        m.num_parameters = len(src)
    else:
        _permute_out(cast(nn.Conv2d, m), src)


def _permute_reader(m: nn.Module, src: torch.Tensor) -> None:
    if isinstance(m, nn.Conv2d):
        _permute_in(m, src)
        return
    parts = _ghost_parts(m)
    assert parts is not None  # `_classify` checked
    _permute_in(parts.primary, src)
    gate = getattr(m, "short_conv", None)
    if isinstance(gate, DFCAttention):  # the gate reads the same input
        _permute_in(cast(nn.Conv2d, gate[0]), src)


def _interleaved_act(act: nn.Module, m: int, s: int) -> nn.Module:
    """The activation after the interleaved conv: the cheap one on the ghosts, none on the intrinsic maps."""
    if not isinstance(act, nn.PReLU):
        return act  # Identity, or ReLU (idempotent on the intrinsic maps, already activated)
    slopes = torch.ones(m, s, dtype=act.weight.dtype, device=act.weight.device)
    slopes[:, 1:] = act.weight.expand(m * (s - 1)).reshape(m, s - 1)
    out = nn.PReLU(m * s).to(act.weight.device, act.weight.dtype)
    out.weight.copy_(slopes.reshape(-1))
    return out


def _apply(model: nn.Module, plan: _Plan, modules: dict[str, nn.Module]) -> None:
    """Permute the readers of one Ghost module's output, then put its `GhostDeploy` in its place."""
    ghost = modules[plan.name]
    parts = _ghost_parts(ghost)
    assert parts is not None  # `_plan` checked
    src = _source_channels(ghost, parts)
    for name in plan.channel_wise:
        _permute_channel_wise(modules[name], src)
    for name in plan.readers:
        _permute_reader(modules[name], src)
    gate = getattr(ghost, "short_conv", None)
    if isinstance(gate, DFCAttention):
        for i in (0, 2, 4):  # the 1x1 conv and the two depthwise convs make one gate map per output channel
            _permute_out(cast(nn.Conv2d, gate[i]), src)
    m = parts.primary.out_channels
    s = parts.cheap.out_channels // m + 1
    act = _interleaved_act(parts.cheap_act, m, s)
    deploy = GhostDeploy(parts.primary, parts.primary_act, _interleaved_cheap(parts.cheap, s), act, gate)
    set_submodule(model, plan.name, deploy)
