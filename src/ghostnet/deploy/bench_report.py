"""`ghostnet bench`'s result: one row per timed form with its ratio to the baseline, and the result as a table
and as a latency-against-MACs plot.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .bench_forms import TimedForm

__all__ = [
    "BenchRow",
    "bench_rows",
    "cpu_info",
    "cpu_label",
    "format_bench",
    "machine_info",
    "plot_bench",
    "set_ratios",
]

# /proc/cpuinfo flags that int8 (and bf16) kernels depend on, and how the table names them
CPU_FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX-512 VNNI", "amx_int8": "AMX"}


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
    runtime: str = "torch"  # torch, ort, openvino, executorch, tflite, ncnn
    top1: float | None = None  # % on the checkpoint's test images (ours, with a checkpoint)


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, dict[str, bool] | None]:
    """(the CPU's model name, whether it has each of `CPU_FEATURES`) from Linux's `cpuinfo`; elsewhere the
    platform's processor name and None."""
    import platform

    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return platform.processor() or platform.machine(), None
    fields = dict(
        (key.strip(), value.strip()) for key, _, value in (line.partition(":") for line in text.splitlines()) if value
    )  # every CPU repeats the same name and flags: the last one's are kept
    flags = set(fields.get("flags", "").split())
    name = fields.get("model name") or platform.processor() or platform.machine()
    return name, {flag: flag in flags for flag in CPU_FEATURES}


def machine_info() -> dict[str, Any]:
    """What every `ghostnet bench` result records of the machine: the CPU, its vector extensions, cores, torch."""
    import torch

    cpu, features = cpu_info()
    return {"cpu": cpu, "cpu_features": features, "cores": os.cpu_count(), "torch": torch.__version__}


def cpu_label(machine: dict[str, Any]) -> str:
    """``CPU; its vector extensions`` from a result's machine (``no AVX2`` when it has none of `CPU_FEATURES`)."""
    features = machine.get("cpu_features")
    if features is None:  # not read from /proc/cpuinfo: nothing known of the extensions
        return str(machine["cpu"])
    return f"{machine['cpu']}; {', '.join(CPU_FEATURES[f] for f, on in features.items() if on) or 'no AVX2'}"


def bench_rows(
    entries: list[TimedForm],
    latency: dict[int, list[float]],
    throughput: dict[int, dict[int, list[float]]],
    gflops: float,
    top1: dict[int, float] | None = None,
) -> list[BenchRow]:
    """One row per form that ran at batch 1 (timings keyed by ``id(entry)``): median and p90 latency, images/s at
    each other batch size it ran at, the floor that `gflops` sets and the form's runtime and `top1`, if measured
    (ratios are left to `set_ratios`)."""
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
                runtime=e.runtime,
                top1=(top1 or {}).get(id(e)),
            )
        )
    return rows


def set_ratios(rows: list[BenchRow], baseline: str | None, model_name: str, say: Callable[[str], None]) -> str:
    """Set each row's latency ratio to the baseline row's (timm's model eager if timed, else ours eager; without
    PyTorch forms, that model's first form; unless `baseline` names one) and return the baseline's name; with no
    such row, the ratios stay None."""
    timm_peer = next((r.model for r in rows if r.model.startswith("timm ")), None)
    model = timm_peer or model_name
    first = next((r.form for r in rows if r.model == model), "eager")
    base = baseline or f"{model} / {'eager' if any(r.form == 'eager' for r in rows) else first}"
    ref = next((r for r in rows if f"{r.model} / {r.form}" == base), None)
    if ref is None:  # it failed, or this configuration does not make that form: keep the timings, drop the ratios
        say(f"baseline {base} was not measured: no ratios")
    for r in rows:
        r.ratio = None if ref is None else r.latency_ms / ref.latency_ms
    return base


def input_hw(machine: dict[str, Any]) -> str:
    """The timed input size as ``HxW`` (results of older versions stored one int for a square)."""
    size = machine["input_size"]
    h, w = (size, size) if isinstance(size, int) else size
    return f"{h}x{w}"


def machine_line(result: dict[str, Any]) -> str:
    """The table's first line: what the timings were taken on and under, and the baseline."""
    m = result["machine"]
    cpu = cpu_label(m)
    measured = any(r["ratio"] is not None for r in result["rows"])
    return (
        f"{m['device']} ({cpu}, {m['threads']} threads), torch {m['torch']}, fp32 matmul {m['matmul_gflops']} GFLOP/s, "
        f"input {input_hw(m)}, {m['runs']} runs; "
        + (
            f"ratios vs {result['baseline']}"
            if measured
            else f"no ratios: the baseline {result['baseline']} was not measured"
        )
    )


def format_bench(result: dict[str, Any]) -> str:
    """The benchmark as a table (a top-1 column with a checkpoint), ratios against the baseline, then any forms
    that failed."""
    rows, acc = result["rows"], result.get("accuracy")
    bs = sorted({k for r in rows for k in r["throughput"]}, key=int)
    fw = max([14, *(len(r["form"]) for r in rows)])
    mw = max([24, *(len(r["model"]) for r in rows)])
    rw = max([7, *(len(r.get("runtime", "")) for r in rows)])
    head = (
        f"{'model':<{mw}} {'form':<{fw}} {'runtime':<{rw}} {'MACs':>8} {'lat. ms':>8} {'p90 ms':>8} {'floor ms':>8}"
        f" {'x base':>7}" + "".join(f" {'img/s@' + b:>11}" for b in bs) + (f" {'top-1 %':>8}" if acc else "")
    )
    lines = [machine_line(result)]
    if acc:
        lines.append(
            f"top-1: {acc['checkpoint']} on the first {acc['images']} of {acc['test_images']} {acc['dataset']} test "
            f"images, batch 1; int8 calibrated on {acc['calibration_images']} training images (peers: no weights)"
        )
    lines += [head, "-" * len(head)]
    for r in rows:
        tp = "".join(f" {r['throughput'].get(b, float('nan')):>11.1f}" for b in bs)
        ratio = f"{r['ratio']:>7.2f}" if r["ratio"] is not None else f"{'-':>7}"
        top1 = "" if not acc else f" {r['top1']:>8.2f}" if r.get("top1") is not None else f" {'':>8}"
        lines.append(
            f"{r['model']:<{mw}} {r['form']:<{fw}} {r.get('runtime', ''):<{rw}} {r['macs'] / 1e6:>7.0f}M "
            f"{r['latency_ms']:>8.2f} {r['latency_p90_ms']:>8.2f} {r['floor_ms']:>8.2f} {ratio}{tp}{top1}"
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
        f"input {input_hw(m)}",
    )
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers of ten
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))  # 2s and 5s
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2, loc="best")
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
