"""`ghostnet bench`: latency and throughput of our GhostNet in each deploy form against peers, in one process.

Every model is timed under the same pinned thread count, after warm-up, on the same input size. Ratios are
taken against one baseline measured in the same run, because absolute times drift on a shared machine.
The "floor" is the model's FLOPs over this machine's measured fp32 matrix-multiply rate: what a perfectly
efficient kernel library would need.

Here: `run_bench`, which runs everything in turn. Its arguments are checked in `bench_setup`; the timing loop
is in `bench_timing`; the forms and the peers in `bench_forms`; the runtimes (``--runtimes``) in
`bench_runtimes`; a checkpoint's top-1 in `bench_accuracy`; the result's rows, table and plot in `bench_report`
(their public names are importable from here too). The training step (``--train-step``) is timed by
`bench_train`, and each form profiled by op type (``--profile``) by `bench_profile`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.profile import profile_model
from ..nn.rep import reparameterize
from .bench_accuracy import TrainedOurs, accuracy_summary, forms_top1, trained_ours

# `_all_entries` calls `torch_forms` by this module's name for it: replacing `bench.torch_forms` takes effect
from .bench_forms import (
    ReportFailure,
    TimedForm,
    as_trained,
    build_ours,
    concat_free_form,
    error_line,
    is_ghost_pair,
    model_settings,
    peer_builders,
    planned_forms,
    torch_forms,
)
from .bench_report import BenchRow, bench_rows, format_bench, machine_info, plot_bench, set_ratios
from .bench_runtimes import RuntimeForms, cpu_runtime_entries, photo_calibration
from .bench_setup import BenchSetup, check_baseline, planned, resolve_input_size, resolve_setup, use_device
from .bench_timing import interleaved_times, matmul_gflops, torch_threads

__all__ = [
    "BenchRow",
    "run_bench",
    "interleaved_times",
    "torch_forms",
    "planned_forms",
    "format_bench",
    "plot_bench",
    "matmul_gflops",
    "torch_threads",
    "as_trained",
    "resolve_input_size",
    "use_device",
]


def run_bench(
    model_name: str | None = "ghostnet_100",
    input_size: int | tuple[int, int] | None = None,
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
    *,
    runtimes: str | Iterable[str] | None = None,
    checkpoint: str | os.PathLike | None = None,
    eval_images: int = 500,
    data_dir: str | None = None,
    concat_free: bool = False,
) -> dict[str, Any]:
    """Time our model in each form and the peers; returns ``{"machine", "baseline", "accuracy", "rows", "failed"}``.

    Args:
        model_name: the registered model to measure in every form (with `checkpoint`: None, or the checkpoint's).
        input_size: the input's (height, width), or one int for a square (default the model's registered size, else 224; with `checkpoint`, its
            image size); a segmenter (``lraspp_ghostnet_100``, ``deeplabv3_ghostnet_100``) is timed against
            torchvision's LR-ASPP and DeepLabV3 MobileNetV3-Large.
        batch_sizes: batch 1 gives the latency; the others give throughput (images/s). Default 1 and 32, and
            256 on CUDA.
        threads: CPU threads for torch and every other runtime (default: all cores).
        runs, warmup: timed and untimed calls per measurement (at least one untimed call).
        device: ``cpu`` or ``cuda``.
        compile, onnx, int8, peers: which forms and models to include (`onnx` False: ``ort`` left out of
            `runtimes`). ONNX Runtime and edge runtime forms are CPU-only; on CUDA the peers get the same PyTorch
            deploy forms as ours (BN folded, channels_last, bf16, CUDA graph, compiled).
        baseline: the row the ratios are relative to ("MODEL / FORM"); default timm's GhostNet eager if present.
        bf16: add bf16-autocast forms (default: on CUDA only).
        runtimes: ``torch``, ``ort``, ``openvino``, ``executorch``, ``tflite`` (a comma-separated string or a
            list; default ``torch,ort``). Each edge runtime gives every model ``<label>-fp32`` and
            ``<label>-int8`` (calibrated on real photographs, or on the checkpoint's training images for ours).
        checkpoint: one of our trained checkpoints: ours is built from it, and each form of ours gets its top-1 on
            the first `eval_images` test images of its dataset (`data_dir`: where that dataset is now).
        concat_free: also time ours' concat-free deploy form (`nn.ghost_deploy_form`) as a model of its own,
            ``<model> concat-free``, in every form and runtime ours gets.

    Unknown or uninstalled runtimes, a bad device or baseline are refused before any work. A form that fails (a
    compiler missing, a conversion refused) does not end the run: it is listed under "failed" with its error.
    """
    setup = resolve_setup(
        model_name, input_size, device, compile, bf16, onnx, int8, peers, threads, runtimes, checkpoint, concat_free
    )
    if baseline is None and peers and setup.model_name.startswith(("lraspp_", "deeplabv3_")):
        baseline = "tv lraspp_mobilenet_v3_large / eager"  # a segmenter's ratios: against torchvision's LR-ASPP
    if baseline is not None:
        check_baseline(baseline, planned(setup))
    ours = trained_ours(checkpoint, eval_images, data_dir=data_dir) if checkpoint else None
    sizes = tuple(batch_sizes or ((1, 32, 256) if setup.cuda else (1, 32)))
    return _measure(setup, ours, sizes, runs, warmup, baseline, progress or (lambda s: None))


def _measure(
    setup: BenchSetup,
    ours: TrainedOurs | None,
    sizes: tuple[int, ...],
    runs: int,
    warmup: int,
    baseline: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """`run_bench` once its arguments are checked: make the forms, time them, score ours, build the result."""
    gflops = matmul_gflops(setup.threads, setup.device)
    failed: list[dict[str, str]] = []
    fail = _recorder(failed, say)
    with torch_threads(setup.threads), tempfile.TemporaryDirectory(prefix="ghostnet-bench-") as tmp:
        entries = _all_entries(setup, Path(tmp), fail, ours)
        latency, throughput = _time_all(entries, sizes, runs, warmup, setup, fail, say)
        top1 = forms_top1(entries, ours, setup.device, fail, say) if ours else {}
    rows = bench_rows(entries, latency, throughput, gflops, top1)
    base = set_ratios(rows, baseline, setup.model_name, say)
    return {
        "machine": _machine(setup, gflops, runs),
        "baseline": base,
        "accuracy": accuracy_summary(ours),
        "rows": [asdict(r) for r in rows],
        "failed": failed,
    }


def _recorder(failed: list[dict[str, str]], say: Callable[[str], None]) -> ReportFailure:
    """A `ReportFailure` that appends each failure to `failed` (with the first line of its error) and says it."""

    def fail(name: str, form: str, e: Exception) -> None:
        failed.append({"model": name, "form": form, "error": error_line(e)})
        say(f"{name} / {form} failed: {failed[-1]['error']}")

    return fail


def _all_entries(setup: BenchSetup, tmp: Path, fail: ReportFailure, ours: TrainedOurs | None = None) -> list[TimedForm]:
    """Every form to time: ours first (from `ours`' checkpoint if given), then each peer; each model's PyTorch forms,
    then its ONNX Runtime and edge runtime ones (their files go under `tmp`). Beside a Ghost model made from a
    baseline (Ghost-ResNet-56's ResNet-56, ``ghostify:NAME``'s NAME), the baseline gets every form ours gets."""
    rf = RuntimeForms(setup.runtimes, tmp, setup.input_size, setup.threads, setup.int8, fail, ours is not None)
    photos = photo_calibration(setup.input_size) if setup.int8 and set(setup.runtimes) - {"torch", "ort"} else None
    pair = is_ghost_pair(setup.model_name)
    entries: list[TimedForm] = []
    for name, build in _builders(setup, ours).items():
        try:
            model = build().eval().to(setup.device)
        except ValueError as e:  # ours' concat-free form, where no Ghost module can be rewritten
            fail(name, "every form", e)
            continue
        is_ours = name in setup.ours
        full = is_ours or pair  # every deploy form, as ours
        chans = setup.in_chans if is_ours else 3
        macs = profile_model(model, setup.input_size, chans).macs
        if "torch" in setup.runtimes:
            forms = torch_forms(model, setup.device, bf16=setup.bf16, **model_settings(full, setup.cuda, setup.compile))
            entries += [TimedForm(name, form, fn, macs, False, chans) for form, fn in forms.items()]
        if not setup.cuda:
            calibration = ours.calibration if ours is not None and is_ours else photos
            entries += cpu_runtime_entries(name, model, full, macs, chans, calibration, rf)
    return entries


def _builders(setup: BenchSetup, ours: TrainedOurs | None) -> dict[str, Callable[[], nn.Module]]:
    """Model name -> what builds it for `_all_entries`: ours in its inference form (a GhostNetV3's branches folded;
    from `ours`' checkpoint if given), its concat-free form if asked for, then the peers."""
    build_ours_once = functools.cache(  # one model: its concat-free form is made from the same weights
        (lambda: reparameterize(ours.model))
        if ours is not None
        else (lambda: reparameterize(as_trained(build_ours(setup.model_name), setup.input_size)))
    )
    builders: dict[str, Callable[[], nn.Module]] = {setup.model_name: build_ours_once}
    if setup.concat_free:
        builders[setup.ours[1]] = lambda: concat_free_form(build_ours_once(), setup.ours[1])
    if setup.peers:
        builders.update(peer_builders(setup.model_name))
    return builders


def _time_all(
    entries: list[TimedForm],
    batch_sizes: tuple[int, ...],
    runs: int,
    warmup: int,
    setup: BenchSetup,
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
    setup: BenchSetup,
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
    inputs = {c: torch.randn(bs, c, *setup.input_size, device=setup.device) for c in {e.in_chans for e in entries}}
    arrays = {c: x.cpu().numpy() for c, x in inputs.items()}
    by_key = {id(e): e for e in entries}

    def dropped(key: int, err: Exception) -> None:
        e = by_key[key]
        fail(e.model, e.form if bs == 1 else f"{e.form} @ batch {bs}", err)
        if bs == 1:
            entries.remove(e)

    say(f"batch {bs}: {len(entries)} forms, {total} timed calls each, {per_round} a round")
    calls: dict[Any, Callable[[], Any]] = {
        id(e): functools.partial(e.fn, (arrays if e.numpy_input else inputs)[e.in_chans]) for e in entries
    }
    with torch.inference_mode():  # warm-up calls (at least one) make an edge runtime's file for this batch size
        return interleaved_times(calls, total, per_round, settle, max(1, warm), setup.device, dropped)


def _machine(setup: BenchSetup, gflops: float, runs: int) -> dict[str, Any]:
    """What the timings were taken on and under."""
    return machine_info() | {
        "threads": setup.threads,
        "device": torch.cuda.get_device_name() if setup.cuda else "cpu",
        "matmul_gflops": round(gflops, 1),
        "input_size": list(setup.input_size),
        "runs": runs,
        "runtimes": list(setup.runtimes),
    }
