"""`ghostnet bench`: latency and throughput of our GhostNet in each deploy form against peers, in one process.

Every model is timed under the same pinned thread count, after warm-up, on the same input size. Ratios are
taken against one baseline measured in the same run, because absolute times drift on a shared machine.
The "floor" is the model's FLOPs over this machine's measured fp32 matrix-multiply rate: what a perfectly
efficient kernel library would need.

Here: `run_bench` and the timing loop. The forms it times and the peers are in `bench_forms`; the result's
rows, table and plot in `bench_report` (their public names are importable from here too).
"""

from __future__ import annotations

import functools
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.profile import profile_model
from ..nn.rep import reparameterize

# `_all_entries` calls `torch_forms` by this module's name for it: replacing `bench.torch_forms` takes effect
from .bench_forms import (
    ReportFailure,
    TimedForm,
    build_ours,
    model_settings,
    onnx_forms,
    peer_builders,
    planned_forms,
    torch_forms,
)
from .bench_report import BenchRow, bench_rows, format_bench, plot_bench, set_ratios

__all__ = [
    "BenchRow",
    "run_bench",
    "interleaved_times",
    "torch_forms",
    "planned_forms",
    "format_bench",
    "plot_bench",
    "matmul_gflops",
    "as_trained",
]


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
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at `threads` threads (torch's thread count is set for
    the measurement and put back afterwards)."""
    with torch_threads(threads):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
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
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved_times(
    calls: dict[Any, Callable[[], Any]],
    total: int,
    per_round: int = 3,
    settle: int = 2,
    warm: int = 10,
    device: str = "cpu",
    on_error: Callable[[Any, Exception], None] | None = None,
) -> dict[Any, list[float]]:
    """Seconds per call of each of `calls`, timed round-robin: after `warm` untimed calls each, every round
    gives each call `settle` untimed calls, then `per_round` timed ones, until each has `total` timings.

    A machine's drift (another process, clock changes) so falls on all calls alike, and the settling calls
    absorb the switch between runtimes (ONNX Runtime's and OpenMP's worker threads spin for a while after a
    call and slow whatever runs next). With `on_error`, a call that raises is reported to it and left out of
    the rest (and of the result); without, the error propagates.
    """
    live = dict(calls)
    times: dict[Any, list[float]] = {}

    def run(key: Any, n: int, timed: bool) -> bool:
        try:
            for _ in range(n):
                if timed:
                    times.setdefault(key, []).append(_time_once(live[key], device))
                else:
                    live[key]()
            _sync(device)
            return True
        except Exception as err:  # noqa: BLE001 - one broken call must not lose the others' timings
            if on_error is None:
                raise
            on_error(key, err)
            del live[key]
            times.pop(key, None)
            return False

    for key in list(live):
        run(key, warm, timed=False)
    for _ in range(math.ceil(total / per_round)):
        for key in list(live):
            if run(key, settle, timed=False):
                run(key, per_round, timed=True)
    return times


def _check_baseline(baseline: str, plan: dict[str, set[str]]) -> None:
    """Refuse a baseline that this run will not measure, before any timing is spent."""
    model, sep, form = (part.strip() for part in baseline.partition(" / "))
    if not sep or model not in plan:
        raise ValueError(f"baseline must be 'MODEL / FORM' with MODEL one of {', '.join(plan)}; got {baseline!r}")
    if form not in plan[model]:
        raise ValueError(f"this run does not time {model} as {form!r}; its forms: {', '.join(sorted(plan[model]))}")


def run_bench(
    model_name: str = "ghostnet_100",
    input_size: int | tuple[int, int] = 224,
    batch_sizes: tuple[int, ...] | None = None,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 10,
    device: str = "cpu",
    compile: bool = True,
    onnx: bool = True,
    int8: bool = True,
    peers: bool = True,
    baseline: str | None = None,
    progress: Callable[[str], None] | None = None,
    bf16: bool | None = None,
) -> dict[str, Any]:
    """Time our model in each form and the peers; returns ``{"machine": ..., "rows": [...], "failed": [...]}``.

    Args:
        model_name: the registered model to measure in every form.
        input_size: the input's (height, width), or one int for a square; a segmenter (``lraspp_ghostnet_100``,
            ``deeplabv3_ghostnet_100``) is timed against torchvision's LR-ASPP and DeepLabV3 MobileNetV3-Large.
        batch_sizes: batch 1 gives the latency; the others give throughput (images/s). Default 1 and 32, and
            256 on CUDA.
        threads: CPU threads for torch and ONNX Runtime (default: all cores).
        runs, warmup: timed and untimed calls per measurement.
        device: ``cpu`` or ``cuda``.
        compile, onnx, int8, peers: which forms and models to include. ONNX Runtime forms are CPU-only; on
            CUDA the peers get the same PyTorch deploy forms as ours (BN folded, channels_last, bf16, CUDA
            graph, compiled), so that they are compared under the same settings.
        baseline: the row the ratios are relative to ("MODEL / FORM"); default timm's GhostNet eager if present.
        bf16: add bf16-autocast forms (default: on CUDA only).

    A form that fails (a compiler missing, a capture refused) does not end the run: it is listed under
    "failed" with its error, and the rest are timed.
    """
    cuda = _use_device(device)
    bf16 = cuda if bf16 is None else bf16
    threads = threads or (os.cpu_count() or 1)
    setup = _Setup(model_name, _height_width(input_size), device, cuda, compile, bf16, onnx, int8, peers, threads)
    if baseline is None and peers and model_name.startswith(("lraspp_", "deeplabv3_")):
        baseline = "tv lraspp_mobilenet_v3_large / eager"  # a segmenter's ratios: against torchvision's LR-ASPP
    if baseline is not None:
        _check_baseline(baseline, _planned(setup))
    batch_sizes = tuple(batch_sizes or ((1, 32, 256) if cuda else (1, 32)))
    say = progress or (lambda s: None)
    gflops = matmul_gflops(threads, device)
    failed: list[dict[str, str]] = []
    fail = _recorder(failed, say)
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="ghostnet-bench-") as tmp:
        entries = _all_entries(setup, Path(tmp), fail)
        latency, throughput = _time_all(entries, batch_sizes, runs, warmup, setup, fail, say)
    rows = bench_rows(entries, latency, throughput, gflops)
    base = set_ratios(rows, baseline, model_name, say)
    return {
        "machine": _machine(setup, gflops, runs),
        "baseline": base,
        "rows": [asdict(r) for r in rows],
        "failed": failed,
    }


def _height_width(input_size: int | tuple[int, int]) -> tuple[int, int]:
    """(H, W) from one size (a square) or a pair; refuses a size below 1."""
    hw = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    if min(hw) < 1:
        raise ValueError(f"input size must be positive, got {input_size}")
    return hw


@dataclass(frozen=True)
class _Setup:
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


def _recorder(failed: list[dict[str, str]], say: Callable[[str], None]) -> ReportFailure:
    """A `ReportFailure` that appends each failure to `failed` (with the first line of its error) and says it."""

    def fail(name: str, form: str, e: Exception) -> None:
        failed.append({"model": name, "form": form, "error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"})
        say(f"{name} / {form} failed: {failed[-1]['error']}")

    return fail


def _use_device(device: str) -> bool:
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


def _planned(setup: _Setup) -> dict[str, set[str]]:
    """Model name -> the form names this run will time for it (see `planned_forms`)."""
    names = [setup.model_name, *(peer_builders(setup.model_name) if setup.peers else [])]
    return {
        m: planned_forms(m == setup.model_name, setup.device, setup.compile, setup.bf16, setup.onnx, setup.int8)
        for m in names
    }


def _all_entries(setup: _Setup, tmp: Path, fail: ReportFailure) -> list[TimedForm]:
    """Every form to time: ours first, then each peer; each model's PyTorch forms, then its ONNX Runtime ones
    (ONNX files go under `tmp`)."""
    # Ours in its inference form: a GhostNetV3's branches folded (a no-op for the other models).
    builders: dict[str, Callable[[], nn.Module]] = {
        setup.model_name: lambda: reparameterize(as_trained(build_ours(setup.model_name), setup.input_size))
    }
    if setup.peers:
        builders.update(peer_builders(setup.model_name))
    entries: list[TimedForm] = []
    for name, build in builders.items():
        model = build().eval().to(setup.device)
        ours = name == setup.model_name
        macs = profile_model(model, setup.input_size).macs
        forms = torch_forms(model, setup.device, bf16=setup.bf16, **model_settings(ours, setup.cuda, setup.compile))
        entries += [TimedForm(name, form, fn, macs, numpy_input=False) for form, fn in forms.items()]
        if setup.onnx and not setup.cuda:
            onnx = onnx_forms(
                name, model, ours, tmp, size=setup.input_size, threads=setup.threads, int8=setup.int8, fail=fail
            )
            entries += [TimedForm(name, form, fn, macs, numpy_input=True) for form, fn in onnx.items()]
    return entries


@torch.no_grad()
def as_trained(model: nn.Module, size: int | tuple[int, int]) -> nn.Module:
    """`model` in eval mode with BN statistics measured on random batches, as after training: untrained
    statistics let a deep multi-branch model's activations grow to 1e7, where no export check can pass."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the passes below
    model.train()
    hw = (size, size) if isinstance(size, int) else size
    for _ in range(2):
        model(torch.randn(4, 3, *hw))
    return model.eval()


def _time_all(
    entries: list[TimedForm],
    batch_sizes: tuple[int, ...],
    runs: int,
    warmup: int,
    setup: _Setup,
    fail: ReportFailure,
    say: Callable[[str], None],
) -> tuple[dict[int, list[float]], dict[int, dict[int, list[float]]]]:
    """The batch-1 timings (`runs` timed calls each, after `warmup`), then batch size -> timings for each other
    batch size (a fifth as many calls, at least 3): see `_time_batch`."""
    latency = _time_batch(entries, 1, setup, fail, say, total=runs, per_round=3, settle=2, warm=warmup)
    throughput = {
        bs: _time_batch(entries, bs, setup, fail, say, total=max(3, runs // 5), per_round=1, settle=1, warm=2)
        for bs in batch_sizes
        if bs != 1
    }
    return latency, throughput


def _time_batch(
    entries: list[TimedForm],
    bs: int,
    setup: _Setup,
    fail: ReportFailure,
    say: Callable[[str], None],
    *,
    total: int,
    per_round: int,
    settle: int,
    warm: int,
) -> dict[int, list[float]]:
    """Every form's timings at batch `bs` (see `interleaved_times`), keyed by ``id(entry)``. A form that raises is
    reported to `fail` and left out of this batch size, and removed from `entries` (the table) if it fails at
    batch 1."""
    x = torch.randn(bs, 3, *setup.input_size, device=setup.device)
    args = {False: x, True: x.cpu().numpy() if any(e.numpy_input for e in entries) else None}
    by_key = {id(e): e for e in entries}

    def dropped(key: int, err: Exception) -> None:
        e = by_key[key]
        fail(e.model, e.form if bs == 1 else f"{e.form} @ batch {bs}", err)
        if bs == 1:
            entries.remove(e)

    say(f"batch {bs}: {len(entries)} forms, {total} timed calls each, {per_round} a round")
    calls: dict[Any, Callable[[], Any]] = {id(e): functools.partial(e.fn, args[e.numpy_input]) for e in entries}
    with torch.inference_mode():
        return interleaved_times(calls, total, per_round, settle, warm, setup.device, dropped)


def _machine(setup: _Setup, gflops: float, runs: int) -> dict[str, Any]:
    """What the timings were taken on and under."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": setup.threads,
        "device": torch.cuda.get_device_name() if setup.cuda else "cpu",
        "torch": torch.__version__,
        "matmul_gflops": round(gflops, 1),
        "input_size": list(setup.input_size),
        "runs": runs,
    }
