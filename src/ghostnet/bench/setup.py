"""One `ghostnet bench` run's settings, checked and resolved once (`BenchSetup`), and the clock every mode uses:
pinned threads, the machine's matrix-multiply rate, the round-robin timing loop, what a result records of the
machine."""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

MODES = ("latency", "train", "profile")
# mode -> (batch sizes, timed runs, untimed runs); --quick: (batch sizes, runs, warm-up) and a 64x64 input
_DEFAULTS = {"latency": ((1, 32), 50, 10), "train": ((32,), 10, 3), "profile": ((1,), 20, 3)}
_QUICK = {"latency": ((1, 4), 3, 1), "train": ((4,), 2, 1), "profile": ((1,), 2, 1)}
# /proc/cpuinfo flags that int8 (and bf16) kernels depend on, and how the table names them
CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "amx_int8": "AMX"}


@dataclass(frozen=True)
class BenchSetup:
    """One run's settings. Zero, empty or None means "the default": the mode's batch sizes, runs and warm-up
    (`_DEFAULTS`, or `_QUICK` with `quick`), all cores, ghostnet_100 (or the checkpoint's model), the model's
    registered input size (or the checkpoint's), ``torch,ort``, bf16 on CUDA only. Refuses bad input in one line."""

    mode: str = "latency"  # latency | train | profile
    model_name: str = ""
    input_size: int | tuple[int, ...] = 0  # (H, W), or one int for a square; resolved to (H, W)
    batch_sizes: tuple[int, ...] = ()
    threads: int = 0
    runs: int = 0  # timed calls at batch 1 (latency, profile) or timed steps (train)
    warmup: int = -1
    device: str = "cpu"
    compile: bool = False
    bf16: bool | None = None
    onnx: bool = True  # False: ``ort`` left out of the runtimes
    int8: bool = True
    peers: bool = True
    runtimes: str | tuple[str, ...] = "torch,ort"  # resolved to a tuple of names
    baseline: str = ""  # "MODEL / FORM" (latency)
    checkpoint: str = ""  # latency: ours from this checkpoint, and each form's top-1
    eval_images: int = 500
    data_dir: str = ""
    concat_free: bool = False  # also ours' concat-free deploy form, as a model of its own
    channels_last: bool = False  # train, profile of the training step
    train_step: bool = False  # profile: the training step rather than the inference forms
    rounds: int = 2  # train: each model's best of this many rounds
    quick: bool = False
    # latency with a checkpoint: (checkpoint, data_dir) -> its model and its dataset's loaders (`.model`,
    # `.calibration`, `.test`); the task the checkpoint belongs to supplies it (the CLI passes classify's)
    trained_data: Callable[[str, str | None], Any] | None = None
    cuda: bool = field(init=False, default=False)
    in_chans: int = field(init=False, default=3)  # ours: a checkpoint's (peers always take 3)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"bench mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.eval_images < 1 or self.rounds < 1:
            raise ValueError("eval_images and rounds must be at least 1")
        put = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 - frozen: resolved once, here
        put("cuda", use_device(self.device))
        put("runtimes", resolve_runtimes(self.runtimes, self.onnx, self.mode))
        if self.cuda and (edge := [n for n in self.runtimes if n not in ("torch", "ort")]):
            raise ValueError(f"{', '.join(edge)} times on the CPU; leave it out of the runtimes or use --device cpu")
        if self.mode == "profile" and self.cuda:
            raise ValueError("profiles are taken on the CPU; leave out --device")
        size: int | tuple[int, ...] = self.input_size or (64 if self.quick and not self.checkpoint else 0)
        if self.checkpoint:
            name, chans, trained = _checkpoint_model(self.checkpoint, self.model_name, size)
            put("model_name", name)
            put("in_chans", chans)
            size = size or trained
        put("model_name", self.model_name or "ghostnet_100")
        _check_model(self.model_name)  # an unknown name is refused before anything is built or timed
        put("input_size", _height_width(size or _registered_size(self.model_name)))
        batches, runs, warm = (_QUICK if self.quick else _DEFAULTS)[self.mode]
        if self.mode == "latency" and self.cuda and not self.quick:
            batches = (1, 32, 256)
        if self.mode == "profile" and self.train_step and not self.quick:
            batches = (32,)
        put("batch_sizes", tuple(self.batch_sizes) or batches)
        put("runs", self.runs or runs)
        put("warmup", warm if self.warmup < 0 else self.warmup)
        put("threads", self.threads or os.cpu_count() or 1)
        put("bf16", self.cuda if self.bf16 is None else self.bf16)

    @property
    def hw(self) -> tuple[int, int]:
        """The input's (height, width)."""
        h, w = self.input_size if isinstance(self.input_size, tuple) else (self.input_size, self.input_size)
        return h, w

    @property
    def ours(self) -> tuple[str, ...]:
        """The names ours is timed under: the model, and its concat-free form if asked for."""
        return (self.model_name, f"{self.model_name} concat-free") if self.concat_free else (self.model_name,)


def resolve_runtimes(runtimes: str | tuple[str, ...], onnx: bool = True, mode: str = "latency") -> tuple[str, ...]:
    """The runtimes a run times, in the order given (a comma-separated string or names), less ``ort`` without
    `onnx`. Refuses an unknown name, a runtime the mode does not cover, or an edge runtime that is not installed
    (naming the extra that installs it), before any work is done."""
    from .forms import RUNTIME_NAMES, require_runtime

    parts = runtimes.split(",") if isinstance(runtimes, str) else list(runtimes)
    names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise ValueError(f"runtimes: name at least one of {', '.join(RUNTIME_NAMES)}")
    if unknown := [n for n in names if n not in RUNTIME_NAMES]:
        raise ValueError(f"unknown runtime {', '.join(map(repr, unknown))}; choose from {', '.join(RUNTIME_NAMES)}")
    allowed = {"latency": RUNTIME_NAMES, "train": ("torch", "ort"), "profile": ("torch", "ort")}[mode]
    if other := [n for n in names if n not in allowed]:
        raise ValueError(f"bench {mode} covers the runtimes {', '.join(allowed)}, not {', '.join(other)}")
    for name in names:
        require_runtime(name)
    return tuple(n for n in names if onnx or n != "ort")


def use_device(device: str) -> bool:
    """Refuse a device other than an available ``cpu`` or ``cuda[:N]``, make a named GPU the current one (events,
    syncs and graphs then all act on it), and say whether it is CUDA."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
        torch.cuda.set_device(dev)
    return dev.type == "cuda"


def _checkpoint_model(checkpoint: str, model_name: str, size: int | tuple[int, ...]) -> tuple[str, int, int]:
    """(model name, input channels, image size) of one of our checkpoints, refusing a model name or an input size
    other than its own."""
    from ..models.checkpoint import read_checkpoint

    ckpt = read_checkpoint(checkpoint)
    name, meta = ckpt.get("model_name"), ckpt.get("data") or {}
    if not isinstance(name, str) or not ckpt.get("config"):
        raise ValueError(f"{checkpoint} is not a checkpoint of `ghostnet train` (it names no model or dataset)")
    if model_name and model_name != name:
        raise ValueError(f"{checkpoint} holds a {name}, not a {model_name}")
    trained = int(meta.get("image_size", 224))
    if size and _height_width(size) != (trained, trained):
        raise ValueError(
            f"{checkpoint} was trained at {trained}x{trained}; its top-1 is measured there: leave out the size"
        )
    return name, int(meta.get("in_chans", 3)), trained


def _check_model(model_name: str) -> None:
    """A registered model or ``ghostify:NAME`` of a torchvision classifier; else `ValueError` naming the choices."""
    from ..models import model_entry
    from .models import ghostified_torchvision

    if ghostified_torchvision(model_name) is None and model_entry(model_name).task == "detect":
        raise ValueError(f"{model_name} is a detector: the bench times models that take a batch of images of one size")


def _registered_size(model_name: str) -> int:
    """The input size `model_name` is registered with (32 for the CIFAR models), 224 for any other name."""
    from ..models import list_models, model_entry

    return int(model_entry(model_name).default_cfg.get("input_size", 224)) if model_name in list_models() else 224


def _height_width(size: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    """(H, W) from one size (a square) or a pair; refuses more numbers or a size below 1."""
    hw = (size,) if isinstance(size, int) else tuple(int(s) for s in size)
    hw = hw * 2 if len(hw) == 1 else hw
    if len(hw) != 2:
        raise ValueError(f"--input-size takes H W or one size for a square, got {len(hw)} numbers")
    if min(hw) < 1:
        raise ValueError(f"input size must be positive, got {size}")
    return hw[0], hw[1]


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch at `threads` CPU threads, then put the caller's count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def matmul_gflops(threads: int, device: str = "cpu", n: int = 1024, runs: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at `threads` threads."""
    with torch_threads(threads):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        for _ in range(2):
            a @ b
        _sync(device)
        t = time.perf_counter()
        for _ in range(runs):
            a @ b
        _sync(device)
        return 2 * n**3 * runs / (time.perf_counter() - t) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_once(fn: Callable[[], Any], device: str) -> float:
    """Seconds one call of `fn` takes: wall time on the CPU, CUDA events (then a sync) on a GPU."""
    if not device.startswith("cuda"):
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000


def interleaved_times(
    calls: dict[Any, Callable[[], Any]],
    total: int,
    per_round: int = 3,
    settle: int = 2,
    warm: int = 10,
    device: str = "cpu",
    on_error: Callable[[Any, Exception], None] | None = None,
) -> dict[Any, list[float]]:
    """Seconds per call of each of `calls`, timed round-robin: after `warm` untimed calls each, every round gives
    each call `settle` untimed calls, then `per_round` timed ones, until each has `total` timings.

    A machine's drift then falls on all calls alike, and the settling calls absorb the switch between runtimes
    (ONNX Runtime's and OpenMP's worker threads spin for a while after a call). With `on_error`, a call that
    raises is reported to it and left out of the rest (and of the result); without, the error propagates."""
    live, times = dict(calls), {key: list[float]() for key in calls}

    def run(key: Any, n: int, timed: bool) -> bool:
        try:
            for _ in range(n):
                if timed:
                    times[key].append(_time_once(live[key], device))
                else:
                    live[key]()
            _sync(device)
            return True
        except Exception as err:  # noqa: BLE001 - one broken call must not lose the others' timings
            if on_error is None:
                raise
            on_error(key, err)
            del live[key], times[key]
            return False

    for key in list(live):
        run(key, warm, timed=False)
    for _ in range(math.ceil(total / per_round)):
        for key in list(live):
            if run(key, settle, timed=False):
                run(key, per_round, timed=True)
    return times


def machine_info(**extra: Any) -> dict[str, Any]:
    """What every result records of the machine (the CPU, its vector extensions, cores, torch), and `extra`."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return {**cpu_info(text), "cores": os.cpu_count(), "torch": torch.__version__, **extra}


def cpu_info(cpuinfo: str) -> dict[str, Any]:
    """``{"cpu": model name, "cpu_features": {flag: present} or None}`` from Linux's /proc/cpuinfo text (elsewhere,
    empty text: the platform's processor name, features unknown)."""
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in cpuinfo.splitlines()) if v)
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    return {"cpu": name, "cpu_features": {f: f in flags for f in CPU_FEATURES} if cpuinfo else None}


def cpu_label(machine: dict[str, Any]) -> str:
    """``CPU; its vector extensions`` from a result's machine (``no AVX2`` when it has none of `CPU_FEATURES`)."""
    features = machine.get("cpu_features")
    if features is None:
        return str(machine["cpu"])
    return f"{machine['cpu']}; {', '.join(CPU_FEATURES[f] for f, on in features.items() if on) or 'no AVX2'}"
