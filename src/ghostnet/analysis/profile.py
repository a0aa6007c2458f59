"""Complexity profile: parameters, MACs, activation memory, per layer, counted by running the real model.

MACs come from torch's own FLOP counter (`torch.utils.flop_counter.FlopCounterMode`), which counts
convolutions and matrix multiplies; FLOPs / 2 = multiply-adds, the paper's "FLOPs". BatchNorm,
activations, pooling and the SE multiply are not counted, as in the paper (BN folds into the conv at
inference). Parameters include BN's affine weights, as every published parameter count does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..nn.blocks import GhostModule

__all__ = [
    "LayerStats",
    "ModelProfile",
    "count_params",
    "format_ghost_module",
    "format_profile",
    "profile_ghost_module",
    "profile_model",
]


@dataclass
class LayerStats:
    """One leaf layer's share of the cost."""

    name: str
    type: str
    output_shape: list[int]
    params: int
    macs: int
    activation_bytes: int  # bytes of the layer's output (0 for an in-place op, which reuses its input)


@dataclass
class ModelProfile:
    """A model's cost for one input: what `ghostnet profile` prints."""

    model: str
    input_shape: list[int]  # (1, C, H, W)
    params: int
    trainable_params: int
    macs: int
    cheap_macs: int  # the part of `macs` spent in Ghost modules' cheap depthwise operations
    activation_bytes: int  # distinct tensors output by leaf layers in one forward pass, batch 1
    param_bytes: int
    layers: list[LayerStats] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (BN affine weights included; buffers excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def profile_model(
    model: nn.Module,
    input_size: tuple[int, int] = (224, 224),
    in_chans: int | None = None,
    name: str | None = None,
) -> ModelProfile:
    """Run `model` once on a (1, C, H, W) zero input and count params, MACs and activation memory per layer.

    Args:
        model: any `nn.Module` taking an image batch.
        input_size: (H, W).
        in_chans: input channels; inferred from the first conv when not given.
        name: the name shown in reports; defaults to the registry name or the class name.
    """
    h, w = input_size
    if h < 1 or w < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    if in_chans is None:
        in_chans = _first_conv_channels(model)
    x = torch.zeros(1, in_chans, h, w, device=_device(model))
    leaves = {n or type(m).__name__: m for n, m in model.named_modules() if not list(m.children())}
    counter, outputs = _run_counted(model, x, leaves)
    rows, act_total = _layer_rows(leaves, outputs, _flops_per_module(model, counter))
    cheap = {f"{n}.cheap_operation.0" for n, m in model.named_modules() if isinstance(m, GhostModule)}
    return ModelProfile(
        model=name or type(model).__name__,
        input_shape=[1, in_chans, h, w],
        params=count_params(model),
        trainable_params=count_params(model, trainable_only=True),
        macs=counter.get_total_flops() // 2,
        cheap_macs=sum(r.macs for r in rows if r.name in cheap),
        activation_bytes=act_total,
        param_bytes=sum(q.numel() * q.element_size() for q in model.parameters()),
        layers=rows,
    )


def _first_conv_channels(model: nn.Module) -> int:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("cannot infer in_chans: the model has no Conv2d; pass in_chans")
    return first_conv.in_channels


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _run_counted(
    model: nn.Module, x: torch.Tensor, leaves: dict[str, nn.Module]
) -> tuple[FlopCounterMode, dict[str, torch.Tensor]]:
    """One forward pass in eval mode under a FLOP counter: the counter and each leaf layer's output tensor."""
    outputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(_capture(n, outputs)) for n, m in leaves.items()]
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
        for hk in hooks:
            hk.remove()
    return counter, outputs


def _flops_per_module(model: nn.Module, counter: FlopCounterMode) -> dict[str, int]:
    """FLOPs by module name as `named_modules` spells it (the root of a single-layer model by its class name)."""
    # FlopCounterMode keys modules by "<RootClass>.<qualified name>".
    root = type(model).__name__
    per_module = {
        (k[len(root) + 1 :] if k.startswith(root + ".") else k): sum(v.values())
        for k, v in counter.get_flop_counts().items()
    }
    if list(model.children()) == []:  # a single layer: the root is the only leaf
        per_module[root] = counter.get_total_flops()
    return per_module


def _layer_rows(
    leaves: dict[str, nn.Module], outputs: dict[str, torch.Tensor], flops: dict[str, int]
) -> tuple[list[LayerStats], int]:
    """One row per leaf layer, and the bytes of all distinct output tensors (in-place outputs counted once)."""
    rows: list[LayerStats] = []
    seen_storage: set[int] = set()
    act_total = 0
    for n, m in leaves.items():
        out = outputs.get(n)
        shape = list(out.shape) if out is not None else []
        act = 0
        if out is not None:
            key = out.untyped_storage().data_ptr()
            if key not in seen_storage:  # in-place ops (ReLU(inplace=True)) share their input's storage
                seen_storage.add(key)
                act = out.numel() * out.element_size()
        act_total += act
        p = sum(q.numel() for q in m.parameters(recurse=False))
        rows.append(LayerStats(n, type(m).__name__, shape, p, flops.get(n, 0) // 2, act))
    return rows, act_total


def _capture(name: str, store: dict[str, torch.Tensor]):
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            store[name] = output

    return hook


def _conv_weights(model: nn.Module) -> int:
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d))


def profile_ghost_module(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    ratio: int = 2,
    dw_size: int = 3,
    stride: int = 1,
    input_size: tuple[int, int] = (56, 56),
) -> dict[str, Any]:
    """A Ghost module against the plain conv it replaces: measured and theoretical ratios (paper eq. 4, 5).

    Theory (c inputs, n outputs, k x k primary kernel, d x d cheap kernel, ratio s):
    ``r_s = c k^2 / ((1/s) c k^2 + ((s-1)/s) d^2) ~ s c / (s + c - 1) ~ s`` and ``r_c`` the same expression
    for weights. The measured ratios count the real layers' conv MACs and conv weights, which differ from
    the formula where ``n`` is not a multiple of ``s`` (the concat is sliced) and BN is not counted.

    Returns:
        A dict with the plain conv's and the Ghost module's params/MACs, the measured ``speedup`` and
        ``compression``, the theoretical ``r_s``/``r_c`` and their ``s c / (s + c - 1)`` approximation,
        and the output memory in bytes (float32; the Ghost module stores both halves before the concat).
    """
    ghost = GhostModule(in_channels, out_channels, kernel_size, ratio, dw_size, stride)
    plain = nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False)
    gp = profile_model(ghost, input_size, in_channels, name="GhostModule")
    pp = profile_model(plain, input_size, in_channels, name="Conv2d")
    c, k, d, s = in_channels, kernel_size, dw_size, ratio
    r_theory = (c * k * k) / ((1 / s) * c * k * k + ((s - 1) / s) * d * d)
    ho, wo = pp.layers[0].output_shape[2:]
    m = math.ceil(out_channels / s)
    return {
        "in_channels": c,
        "out_channels": out_channels,
        "kernel_size": k,
        "ratio": s,
        "dw_size": d,
        "stride": stride,
        "input_size": list(input_size),
        "output_size": [ho, wo],
        "intrinsic_maps": m,
        "ghost_maps": m * (s - 1),
        "plain_params": _conv_weights(plain),
        "plain_macs": pp.macs,
        "ghost_params": _conv_weights(ghost),
        "ghost_params_with_bn": gp.params,
        "ghost_macs": gp.macs,
        "speedup": pp.macs / gp.macs,
        "compression": _conv_weights(plain) / _conv_weights(ghost),
        "r_s": r_theory,
        "r_c": r_theory,
        "approx_sc": s * c / (s + c - 1),
        "plain_output_bytes": ho * wo * out_channels * 4,
        "ghost_output_bytes": ho * wo * (m + m * (s - 1)) * 4,
    }


def _human(n: float, unit: str = "") -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def format_profile(p: ModelProfile, per_layer: bool = False) -> str:
    """A readable table of a profile (the per-layer rows only when asked)."""
    lines = []
    if per_layer:
        header = f"{'layer':<44} {'type':<12} {'output':<18} {'params':>10} {'MACs':>12} {'act. mem':>11}"
        lines += [header, "-" * len(header)]
        for r in p.layers:
            shape = "x".join(str(v) for v in r.output_shape[1:])
            lines.append(
                f"{r.name:<44} {r.type:<12} {shape:<18} {r.params:>10,} {r.macs:>12,} {_human(r.activation_bytes, 'B'):>11}"
            )
        lines.append("")
    shape = "x".join(str(v) for v in p.input_shape)
    lines += [
        f"model               {p.model}",
        f"input               {shape}",
        f"parameters          {p.params:,} ({_human(p.params)}; {_mib(p.param_bytes)} fp32)",
        f"trainable           {p.trainable_params:,}",
        f"MACs                {p.macs:,} ({_human(p.macs)}; the paper's 'FLOPs')",
        *(
            [f"  of which cheap     {p.cheap_macs:,} ({_human(p.cheap_macs)}) in Ghost modules' depthwise ghost convs"]
            if p.cheap_macs
            else []
        ),
        f"activation memory   {_mib(p.activation_bytes)} (batch 1, fp32, leaf-layer outputs)",
    ]
    return "\n".join(lines)


def format_ghost_module(r: dict[str, Any]) -> str:
    """A readable comparison of a Ghost module with the plain conv it replaces."""
    return "\n".join(
        [
            f"Ghost module c={r['in_channels']} -> n={r['out_channels']}, k={r['kernel_size']}, s={r['ratio']}, "
            f"d={r['dw_size']}, stride={r['stride']}, input {r['input_size'][0]}x{r['input_size'][1]}",
            f"  intrinsic maps m    {r['intrinsic_maps']}   ghost maps {r['ghost_maps']}",
            f"{'':22}{'plain conv':>14}{'Ghost module':>16}{'ratio':>10}",
            f"  {'conv weights':<20}{r['plain_params']:>14,}{r['ghost_params']:>16,}{r['compression']:>10.3f}",
            f"  {'MACs':<20}{r['plain_macs']:>14,}{r['ghost_macs']:>16,}{r['speedup']:>10.3f}",
            f"  {'output memory':<20}{_human(r['plain_output_bytes'], 'B'):>14}{_human(r['ghost_output_bytes'], 'B'):>16}",
            f"  theoretical r_s = r_c = c k^2 / (c k^2 / s + (s-1) d^2 / s) = {r['r_s']:.3f}"
            f"   (~ s c / (s + c - 1) = {r['approx_sc']:.3f})",
        ]
    )
