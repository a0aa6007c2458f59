"""`ghostnet bench`'s arguments checked and resolved before any timing: the device, the input size (a model's
registered size, a checkpoint's), the runtimes, and which forms each model will get (for the baseline check)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from ..models import list_models, model_entry
from .bench_forms import concat_free_name, is_ghost_pair, peer_builders, planned_forms
from .bench_runtimes import edge_form_names, resolve_runtimes

__all__ = ["BenchSetup", "check_baseline", "planned", "resolve_input_size", "resolve_setup", "use_device"]


def check_baseline(baseline: str, plan: dict[str, set[str]]) -> None:
    """Refuse a baseline that this run will not measure, before any timing is spent."""
    model, sep, form = (part.strip() for part in baseline.partition(" / "))
    if not sep or model not in plan:
        raise ValueError(f"baseline must be 'MODEL / FORM' with MODEL one of {', '.join(plan)}; got {baseline!r}")
    if form not in plan[model]:
        raise ValueError(f"this run does not time {model} as {form!r}; its forms: {', '.join(sorted(plan[model]))}")


def resolve_setup(
    model_name: str | None,
    input_size: int | tuple[int, int] | None,
    device: str,
    compile: bool,
    bf16: bool | None,
    onnx: bool,
    int8: bool,
    peers: bool,
    threads: int | None,
    runtimes: str | Iterable[str] | None,
    checkpoint: str | os.PathLike | None,
    concat_free: bool = False,
) -> BenchSetup:
    """`run_bench`'s arguments checked and resolved (a checkpoint's model name and input size read from it)."""
    cuda = use_device(device)
    names = resolve_runtimes(runtimes, onnx)
    if cuda and (edge := [n for n in names if n not in ("torch", "ort")]):
        raise ValueError(f"{', '.join(edge)} times on the CPU; leave it out of the runtimes or use --device cpu")
    in_chans, default_size = 3, _registered_size(model_name or "ghostnet_100")
    if checkpoint:
        model_name, in_chans, default_size = _checkpoint_model(checkpoint, model_name, input_size)
    hw = _height_width(default_size if input_size is None else input_size)
    return BenchSetup(
        model_name or "ghostnet_100",
        hw,
        device,
        cuda,
        compile,
        cuda if bf16 is None else bf16,
        "ort" in names,
        int8,
        peers,
        threads or (os.cpu_count() or 1),
        names,
        in_chans,
        concat_free,
    )


def _checkpoint_model(
    checkpoint: str | os.PathLike, model_name: str | None, input_size: int | tuple[int, int] | None
) -> tuple[str, int, int]:
    """(model name, input channels, image size) of one of our checkpoints, refusing a model name or an input size
    other than its own."""
    from ..models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    name, meta = ckpt.get("model_name"), ckpt.get("data") or {}
    if not isinstance(name, str) or not ckpt.get("config"):
        raise ValueError(
            f"{checkpoint} is not a checkpoint of `ghostnet classify train` (it names no model or dataset)"
        )
    if model_name and model_name != name:
        raise ValueError(f"{checkpoint} holds a {name}, not a {model_name}")
    size = int(meta.get("image_size", 224))
    if input_size is not None and _height_width(input_size) != (size, size):
        raise ValueError(f"{checkpoint} was trained at {size}x{size}; its top-1 is measured there: leave out the size")
    return name, int(meta.get("in_chans", 3)), size


def resolve_input_size(model_name: str, input_size: int | tuple[int, int] | None = None) -> tuple[int, int]:
    """(H, W) for `model_name`: `input_size` (one int: a square), or the size the model is registered with (32 for
    the CIFAR models; 224 for any other name)."""
    return _height_width(_registered_size(model_name) if input_size is None else input_size)


def _registered_size(model_name: str) -> int:
    """The input size `model_name` is registered with (32 for the CIFAR models), 224 for any other name."""
    return int(model_entry(model_name).default_cfg.get("input_size", 224)) if model_name in list_models() else 224


def _height_width(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from one size (a square) or a pair; refuses a size below 1."""
    hw = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    if min(hw) < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    return hw


@dataclass(frozen=True)
class BenchSetup:
    """One `run_bench` call's settings, as resolved from its arguments."""

    model_name: str
    input_size: tuple[int, int]  # (H, W)
    device: str
    cuda: bool
    compile: bool
    bf16: bool
    onnx: bool
    int8: bool
    peers: bool
    threads: int
    runtimes: tuple[str, ...] = ("torch", "ort")
    in_chans: int = 3  # ours: a checkpoint's (peers always take 3)
    concat_free: bool = False  # also ours' concat-free deploy form, as a model of its own

    @property
    def ours(self) -> tuple[str, ...]:
        """The names ours is timed under: the model, and its concat-free form if asked for."""
        return (self.model_name, concat_free_name(self.model_name)) if self.concat_free else (self.model_name,)


def use_device(device: str) -> bool:
    """Refuse a device other than an available ``cpu`` or ``cuda[:N]``, make a named GPU the current one (events,
    syncs and graphs then all act on it), and say whether it is CUDA."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    if cuda and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(dev)
    return cuda


def planned(setup: BenchSetup) -> dict[str, set[str]]:
    """Model name -> the form names this run will time for it (see `planned_forms`)."""
    names = [*setup.ours, *(peer_builders(setup.model_name) if setup.peers else [])]
    torch_on, edge = "torch" in setup.runtimes, edge_form_names(setup.runtimes, setup.int8)
    return {
        m: planned_forms(
            m in setup.ours or is_ghost_pair(setup.model_name),
            setup.device,
            setup.compile,
            setup.bf16,
            setup.onnx,
            setup.int8,
            torch_on,
        )
        | (set() if setup.cuda else edge)
        for m in names
    }
