"""`ghostnet bench`: latency and throughput of our GhostNet in each deploy form against peers, in one process.

Every model is timed under the same pinned thread count, after warm-up, on the same input size. Ratios are
taken against one baseline measured in the same run, because absolute times drift on a shared machine.
The "floor" is the model's FLOPs over this machine's measured fp32 matrix-multiply rate: what a perfectly
efficient kernel library would need.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..analysis.profile import profile_model
from ..models import create_model
from ..nn.surgery import fuse_bn
from .export import export_model, onnx_session

__all__ = [
    "BenchRow",
    "run_bench",
    "interleaved_times",
    "torch_forms",
    "planned_forms",
    "format_bench",
    "plot_bench",
    "matmul_gflops",
]


@dataclass
class BenchRow:
    """One model in one form."""

    model: str
    form: str  # eager, fused+cl, compiled, ort-fp32, ort-int8, eager-bf16, ...
    macs: int
    latency_ms: float  # batch 1, median
    latency_p90_ms: float
    throughput: dict[str, float]  # batch size -> images/s
    floor_ms: float  # batch 1: 2 * MACs / matmul rate
    ratio: float | None = None  # latency relative to the baseline row


def matmul_gflops(threads: int, device: str = "cpu", n: int = 1024, runs: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at `threads` threads (torch's thread count is set for
    the measurement and put back afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
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
    finally:
        torch.set_num_threads(previous)


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


@dataclass
class _Entry:
    model: str
    form: str
    fn: Callable[[Any], Any]
    macs: int
    numpy_input: bool


def _peers() -> dict[str, Callable[[], nn.Module]]:
    import torchvision.models as tvm

    peers: dict[str, Callable[[], nn.Module]] = {}
    try:
        import timm

        peers["timm ghostnet_100"] = lambda: timm.create_model("ghostnet_100")
    except ImportError:
        pass
    peers["tv mobilenet_v3_large"] = lambda: tvm.mobilenet_v3_large()
    peers["tv mobilenet_v2"] = lambda: tvm.mobilenet_v2()
    peers["tv resnet18"] = lambda: tvm.resnet18()
    return peers


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _with_bf16(fn: Callable[[torch.Tensor], Any], device_type: str) -> Callable[[torch.Tensor], Any]:
    """`fn` under bf16 autocast (no weight-cast cache, so the form can also be captured in a CUDA graph)."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False):
            return fn(x)

    return run


def _cuda_graphed(fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
    """`fn` captured once per input shape into a CUDA graph and replayed: one launch instead of one per kernel.

    The input is copied into the graph's static buffer and the graph's own output tensor is returned (it is
    overwritten by the next replay), which is what a serving loop does.
    """
    graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = {}

    def run(x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key not in graphs:
            static_x = x.clone()
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
                for _ in range(3):
                    fn(static_x)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = fn(static_x)
            graphs[key] = (graph, static_x, static_y)
        graph, static_x, static_y = graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_y

    return run


def torch_forms(
    model: nn.Module, device: str, *, deploy: bool = True, compile: bool = False, bf16: bool = False
) -> dict[str, Callable[[torch.Tensor], Any]]:
    """The PyTorch forms of one model to time: name -> callable on an NCHW batch.

    ``eager`` is the model as built (fp32). With `deploy`: ``fused+cl`` (BN folded, channels_last, fp32; ``cl``
    where a BN cannot be folded), with `bf16` the same under bf16 autocast, and on CUDA that form replayed
    from a CUDA graph (``... graph``). With `compile`: ``compiled``, the deploy form through `torch.compile`
    (bf16 if `bf16`; on CUDA in "reduce-overhead" mode, which replays the compiled kernels from CUDA graphs).
    """
    forms: dict[str, Callable[[torch.Tensor], Any]] = {"eager": model}
    if not deploy:
        return forms
    try:
        lean, name = fuse_bn(model), "fused+cl"
    except ValueError:  # a BN that no conv feeds directly (timm's BatchNormAct2d, say): time it unfolded
        lean, name = copy.deepcopy(model), "cl"
    lean = lean.to(memory_format=torch.channels_last)
    fp32 = lambda x: lean(_cl(x))  # noqa: E731
    cuda = device.startswith("cuda")
    names = _deploy_names(name, cuda, compile, bf16)
    forms[names["fp32"]] = fp32
    best = _with_bf16(fp32, "cuda" if cuda else "cpu") if bf16 else fp32
    if "bf16" in names:
        forms[names["bf16"]] = best
    if "graph" in names:
        forms[names["graph"]] = _cuda_graphed(best)
    if "compiled" in names:
        compiled = torch.compile(lean, mode="reduce-overhead" if cuda else None)
        run = lambda x: compiled(_cl(x))  # noqa: E731
        forms[names["compiled"]] = _with_bf16(run, "cuda" if cuda else "cpu") if bf16 else run
    return forms


def _deploy_names(base: str, cuda: bool, compile: bool, bf16: bool) -> dict[str, str]:
    """The names of a model's deploy forms by role (fp32, bf16, graph, compiled); `base` is ``fused+cl`` or ``cl``."""
    names = {"fp32": base}
    if bf16:
        names["bf16"] = f"{base} bf16"
    if cuda:
        names["graph"] = f"{base}{' bf16' if bf16 else ''} graph"
    if compile:
        names["compiled"] = "compiled bf16" if bf16 else "compiled"
    return names


def _model_settings(ours: bool, cuda: bool, compile: bool) -> dict[str, bool]:
    """Which PyTorch forms a model gets: ours every one; peers only eager on a CPU (with ONNX Runtime beside
    it), and the same forms as ours on CUDA."""
    return {"deploy": ours or cuda, "compile": compile and (ours or cuda)}


def planned_forms(ours: bool, device: str, compile: bool, bf16: bool, onnx: bool, int8: bool) -> set[str]:
    """The form names a run will time for one model (ours or a peer), as `torch_forms` and the ONNX Runtime
    forms name them; both ``fused+cl`` and ``cl`` are listed, since which one a model gets is known only
    once its BN folding has been tried."""
    cuda = device.startswith("cuda")
    settings = _model_settings(ours, cuda, compile)
    forms = {"eager"}
    if settings["deploy"]:
        for base in ("fused+cl", "cl"):
            forms |= set(_deploy_names(base, cuda, settings["compile"], bf16).values())
    if onnx and not cuda:
        forms |= {"ort-fp32", "ort-int8"} if ours and int8 else {"ort-fp32"}
    return forms


def _check_baseline(baseline: str, plan: dict[str, set[str]]) -> None:
    """Refuse a baseline that this run will not measure, before any timing is spent."""
    model, sep, form = (part.strip() for part in baseline.partition(" / "))
    if not sep or model not in plan:
        raise ValueError(f"baseline must be 'MODEL / FORM' with MODEL one of {', '.join(plan)}; got {baseline!r}")
    if form not in plan[model]:
        raise ValueError(f"this run does not time {model} as {form!r}; its forms: {', '.join(sorted(plan[model]))}")


def run_bench(
    model_name: str = "ghostnet_100",
    input_size: int = 224,
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
        input_size: square input resolution.
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
    setup = _Setup(model_name, input_size, device, cuda, compile, bf16, onnx, int8, peers, threads)
    if baseline is not None:
        _check_baseline(baseline, _planned(setup))
    batch_sizes = tuple(batch_sizes or ((1, 32, 256) if cuda else (1, 32)))
    torch.set_num_threads(threads)
    say = progress or (lambda s: None)
    gflops = matmul_gflops(threads, device)
    failed: list[dict[str, str]] = []
    fail = _recorder(failed, say)
    with tempfile.TemporaryDirectory(prefix="ghostnet-bench-") as tmp:
        entries = _all_entries(setup, Path(tmp), fail)
        latency, throughput = _time_all(entries, batch_sizes, runs, warmup, setup, fail, say)
    rows = _rows(entries, latency, throughput, gflops)
    base = _set_ratios(rows, baseline, model_name, say)
    return {
        "machine": _machine(setup, gflops, runs),
        "baseline": base,
        "rows": [asdict(r) for r in rows],
        "failed": failed,
    }


@dataclass(frozen=True)
class _Setup:
    """One `run_bench` call's settings, as resolved from its arguments."""

    model_name: str
    input_size: int
    device: str
    cuda: bool
    compile: bool
    bf16: bool
    onnx: bool
    int8: bool
    peers: bool
    threads: int


_Fail = Callable[[str, str, Exception], None]  # (model, form, error): report a form that could not be made or run


def _recorder(failed: list[dict[str, str]], say: Callable[[str], None]) -> _Fail:
    """A `_Fail` that appends each failure to `failed` (with the first line of its error) and says it."""

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
    names = [setup.model_name, *(_peers() if setup.peers else [])]
    return {
        m: planned_forms(m == setup.model_name, setup.device, setup.compile, setup.bf16, setup.onnx, setup.int8)
        for m in names
    }


def _all_entries(setup: _Setup, tmp: Path, fail: _Fail) -> list[_Entry]:
    """Every form to time: ours first, then each peer; each model's PyTorch forms, then its ONNX Runtime ones
    (ONNX files go under `tmp`)."""
    builders: dict[str, Callable[[], nn.Module]] = {setup.model_name: lambda: create_model(setup.model_name)}
    if setup.peers:
        builders.update(_peers())
    entries: list[_Entry] = []
    for name, build in builders.items():
        model = build().eval().to(setup.device)
        ours = name == setup.model_name
        macs = profile_model(model, (setup.input_size, setup.input_size)).macs
        forms = torch_forms(model, setup.device, bf16=setup.bf16, **_model_settings(ours, setup.cuda, setup.compile))
        entries += [_Entry(name, form, fn, macs, numpy_input=False) for form, fn in forms.items()]
        if setup.onnx and not setup.cuda:
            entries += _onnx_entries(name, model, macs, ours, setup, tmp, fail)
    return entries


def _onnx_entries(
    name: str, model: nn.Module, macs: int, ours: bool, setup: _Setup, tmp: Path, fail: _Fail
) -> list[_Entry]:
    """A model's ONNX Runtime forms: ``ort-fp32``, and for ours ``ort-int8`` if asked; one that cannot be made is
    reported to `fail` and left out."""
    size = setup.input_size
    path = tmp / f"{name.replace(' ', '_')}.onnx"
    try:  # ours is exported BN-folded (as `ghostnet export --fuse`); peers as they are (ORT folds BN itself)
        export_model(fuse_bn(model.cpu()) if ours else model.cpu(), path, "onnx", (size, size), dynamic_batch=True)
        fp32 = onnx_session(path, setup.threads)
    except Exception as e:  # noqa: BLE001
        fail(name, "ort-fp32", e)
        return []
    entries = [_Entry(name, "ort-fp32", _ort_call(fp32), macs, numpy_input=True)]
    if setup.int8 and ours:
        try:
            int8 = onnx_session(_quantize_random(path, tmp, size), setup.threads)
        except Exception as e:  # noqa: BLE001
            fail(name, "ort-int8", e)
            return entries
        entries.append(_Entry(name, "ort-int8", _ort_call(int8), macs, numpy_input=True))
    return entries


def _ort_call(session: Any) -> Callable[[np.ndarray], Any]:
    """One run of an ONNX Runtime session on an NCHW array."""
    return lambda a: session.run(None, {"input": a})


def _time_all(
    entries: list[_Entry],
    batch_sizes: tuple[int, ...],
    runs: int,
    warmup: int,
    setup: _Setup,
    fail: _Fail,
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
    entries: list[_Entry],
    bs: int,
    setup: _Setup,
    fail: _Fail,
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
    x = torch.randn(bs, 3, setup.input_size, setup.input_size, device=setup.device)
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


def _rows(
    entries: list[_Entry], latency: dict[int, list[float]], throughput: dict[int, dict[int, list[float]]], gflops: float
) -> list[BenchRow]:
    """One row per form that ran at batch 1: median and p90 latency, images/s at each other batch size it ran
    at, and the floor that `gflops` sets (ratios are left to `_set_ratios`)."""
    rows = []
    for e in entries:
        lat = latency[id(e)]
        rows.append(
            BenchRow(
                e.model,
                e.form,
                e.macs,
                1000 * statistics.median(lat),
                1000 * float(np.percentile(lat, 90)),
                {str(bs): bs / statistics.median(t[id(e)]) for bs, t in throughput.items() if id(e) in t},
                1000 * 2 * e.macs / (gflops * 1e9),
            )
        )
    return rows


def _set_ratios(rows: list[BenchRow], baseline: str | None, model_name: str, say: Callable[[str], None]) -> str:
    """Set each row's latency ratio to the baseline row's (timm's GhostNet eager if timed, else ours eager, unless
    `baseline` names one) and return the baseline's name; with no such row, the ratios stay None."""
    base = baseline or (
        "timm ghostnet_100 / eager" if any(r.model == "timm ghostnet_100" for r in rows) else f"{model_name} / eager"
    )
    ref = next((r for r in rows if f"{r.model} / {r.form}" == base), None)
    if ref is None:  # it failed, or this configuration does not make that form: keep the timings, drop the ratios
        say(f"baseline {base} was not measured: no ratios")
    for r in rows:
        r.ratio = None if ref is None else r.latency_ms / ref.latency_ms
    return base


def _machine(setup: _Setup, gflops: float, runs: int) -> dict[str, Any]:
    """What the timings were taken on and under."""
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": setup.threads,
        "device": torch.cuda.get_device_name() if setup.cuda else "cpu",
        "torch": torch.__version__,
        "matmul_gflops": round(gflops, 1),
        "input_size": setup.input_size,
        "runs": runs,
    }


def _quantize_random(fp32: Path, tmp: Path, size: int) -> Path:
    """int8 as `ghostnet quantize` makes it, calibrated on random inputs: right for timing, not for accuracy."""
    from .quantize import quantize_onnx

    out = tmp / "int8.onnx"
    quantize_onnx(
        fp32, out, (np.random.default_rng(i).standard_normal((1, 3, size, size)).astype(np.float32) for i in range(4))
    )
    return out


def format_bench(result: dict[str, Any]) -> str:
    """The benchmark as a table, ratios against the baseline, then any forms that failed."""
    m = result["machine"]
    bs = sorted({k for r in result["rows"] for k in r["throughput"]}, key=int)
    fw = max([14, *(len(r["form"]) for r in result["rows"])])
    head = (
        f"{'model':<24} {'form':<{fw}} {'MACs':>8} {'lat. ms':>8} {'p90 ms':>8} {'floor ms':>8} {'x base':>7}"
        + "".join(f" {'img/s@' + b:>11}" for b in bs)
    )
    measured = any(r["ratio"] is not None for r in result["rows"])
    lines = [
        f"{m['device']} ({m['cpu']}, {m['threads']} threads), torch {m['torch']}, fp32 matmul {m['matmul_gflops']} GFLOP/s, "
        f"input {m['input_size']}x{m['input_size']}, {m['runs']} runs; "
        + (
            f"ratios vs {result['baseline']}"
            if measured
            else f"no ratios: the baseline {result['baseline']} was not measured"
        ),
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        tp = "".join(f" {r['throughput'].get(b, float('nan')):>11.1f}" for b in bs)
        ratio = f"{r['ratio']:>7.2f}" if r["ratio"] is not None else f"{'-':>7}"
        lines.append(
            f"{r['model']:<24} {r['form']:<{fw}} {r['macs'] / 1e6:>7.0f}M {r['latency_ms']:>8.2f} {r['latency_p90_ms']:>8.2f} "
            f"{r['floor_ms']:>8.2f} {ratio}{tp}"
        )
    for f in result.get("failed", []):
        lines.append(f"failed: {f['model']} / {f['form']}: {f['error']}")
    return "\n".join(lines)


def plot_bench(result: dict[str, Any], path: str | Path) -> Path:
    """Batch-1 latency against MACs, one marker per model, one colour per form (log-scaled latency)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: the user's backend and figure list are left alone
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    forms = sorted({r["form"] for r in result["rows"]})
    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    markers = "o^sDvP*X"
    colours = colormaps["tab10"]
    for r in result["rows"]:
        ax.scatter(
            r["macs"] / 1e6,
            r["latency_ms"],
            marker=markers[models.index(r["model"]) % len(markers)],
            color=colours(forms.index(r["form"])),
            s=60,
        )
    for m in models:
        ax.scatter([], [], marker=markers[models.index(m) % len(markers)], color="gray", label=m)
    for f in forms:
        ax.scatter([], [], marker="o", color=colours(forms.index(f)), label=f)
    m = result["machine"]
    ax.set(
        xlabel="MACs (M, log scale)",
        ylabel="batch-1 latency (ms, log scale)",
        xscale="log",
        yscale="log",
        title=f"{m['device']} / {m['cpu']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}, "
        f"input {m['input_size']}x{m['input_size']}",
    )
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers of ten
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))  # 2s and 5s
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2, loc="best")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
