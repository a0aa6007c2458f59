"""`ghostnet bench`'s results (one dataclass per mode, `to_dict()` for the JSON) as tables and as a plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from .setup import cpu_label


def error_line(e: BaseException) -> str:
    """How a failed form or model is reported: the error's type and the first line of its message."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


@dataclass
class Failure:
    """A form (latency) or a model at a batch size (train, profile) that could not be made or run."""

    model: str
    error: str
    form: str | None = None
    batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def where(self) -> str:
        return f"{self.model} / {self.form}" if self.form is not None else f"{self.model} at batch {self.batch}"


@dataclass
class Row:
    """One model in one form (latency)."""

    model: str
    form: str  # eager, fused+cl, compiled, ort-fp32, ort-int8, ov-int8, ...
    macs: int
    latency_ms: float  # batch 1, median
    latency_p90_ms: float
    throughput: dict[str, float]  # batch size -> images/s
    floor_ms: float  # batch 1: 2 * MACs / matmul rate
    ratio: float | None = None  # latency relative to the baseline row
    runtime: str = "torch"  # torch, ort, openvino, executorch, tflite, ncnn
    top1: float | None = None  # % on the checkpoint's test images (ours, with a checkpoint)


@dataclass
class TrainRow:
    """One model at one batch size (train): the best round's images/s, every round's, peak memory, x baseline."""

    model: str
    batch: int
    images_per_s: float
    rounds_images_per_s: list[float]
    peak_mib: float
    x_baseline: float | None


@dataclass
class Profile:
    """Op time of one model in one form at one batch size (profile): ms per call by op kind, and op calls."""

    model: str
    form: str
    batch: int
    op_ms: float
    ops: dict[str, float]
    op_calls: dict[str, int] = field(default_factory=dict)  # op kind -> its calls per call (aten ops; kernels)


class _Result:
    """`to_dict()` for a result dataclass: its fields as plain JSON (rows and failures as dicts)."""

    def to_dict(self) -> dict[str, Any]:
        def plain(v: Any) -> Any:
            if isinstance(v, list):
                return [plain(x) for x in v]
            return (
                v.to_dict()
                if isinstance(v, Failure)
                else asdict(v)
                if is_dataclass(v) and not isinstance(v, type)
                else v
            )

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass
class LatencyResult(_Result):
    machine: dict[str, Any]  # what the timings were taken on and under
    baseline: str  # "MODEL / FORM" the ratios are against
    rows: list[Row]
    failed: list[Failure]
    accuracy: dict[str, Any] | None = None  # the top-1 column's images (with a checkpoint)


@dataclass
class TrainResult(_Result):
    machine: dict[str, Any]
    baseline: str  # the model the ratios are against
    rows: list[TrainRow]
    failed: list[Failure]


@dataclass
class ProfileResult(_Result):
    machine: dict[str, Any]
    profiles: list[Profile]
    failed: list[Failure]


def _input_hw(machine: dict[str, Any]) -> str:
    h, w = machine["input_size"]
    return f"{h}x{w}"


def format_latency(result: LatencyResult) -> str:
    """The latency result as a table (a top-1 column with a checkpoint), then any forms that failed."""
    rows, acc, m = result.rows, result.accuracy, result.machine
    bs = sorted({k for r in rows for k in r.throughput}, key=int)
    fw, mw = max([14, *(len(r.form) for r in rows)]), max([24, *(len(r.model) for r in rows)])
    rw = max([7, *(len(r.runtime) for r in rows)])
    head = (
        f"{'model':<{mw}} {'form':<{fw}} {'runtime':<{rw}} {'MACs':>8} {'lat. ms':>8} {'p90 ms':>8} {'floor ms':>8}"
        f" {'x base':>7}" + "".join(f" {'img/s@' + b:>11}" for b in bs) + (f" {'top-1 %':>8}" if acc else "")
    )
    ratios = any(r.ratio is not None for r in rows)
    lines = [
        f"{m['device']} ({cpu_label(m)}, {m['threads']} threads), torch {m['torch']}, fp32 matmul "
        f"{m['matmul_gflops']} GFLOP/s, input {_input_hw(m)}, {m['runs']} runs; "
        + (f"ratios vs {result.baseline}" if ratios else f"no ratios: the baseline {result.baseline} was not measured")
    ]
    if acc:
        lines.append(
            f"top-1: {acc['checkpoint']} on the first {acc['images']} of {acc['test_images']} {acc['dataset']} test "
            f"images, batch 1; int8 calibrated on {acc['calibration_images']} training images (peers: no weights)"
        )
    lines += [head, "-" * len(head)]
    for r in rows:
        tp = "".join(f" {r.throughput.get(b, float('nan')):>11.1f}" for b in bs)
        ratio = f"{r.ratio:>7.2f}" if r.ratio is not None else f"{'-':>7}"
        top1 = "" if not acc else f" {r.top1:>8.2f}" if r.top1 is not None else f" {'':>8}"
        lines.append(
            f"{r.model:<{mw}} {r.form:<{fw}} {r.runtime:<{rw}} {r.macs / 1e6:>7.0f}M {r.latency_ms:>8.2f} "
            f"{r.latency_p90_ms:>8.2f} {r.floor_ms:>8.2f} {ratio}{tp}{top1}"
        )
    return "\n".join(lines + [f"failed: {f.where()}: {f.error}" for f in result.failed])


def format_train(result: TrainResult) -> str:
    """The training-step result as a table: images/s of each round and the best, x the baseline, peak memory."""
    m = result.machine
    lines = [
        f"training step: {m['device_name']} ({cpu_label(m)}, {m['threads']} threads), torch {m['torch']}, input "
        f"{_input_hw(m)}, {m['steps']} timed steps after {m['warmup']}, bf16 {m['bf16']}, channels_last "
        f"{m['channels_last']}; best of the rounds, ratios vs {result.baseline}"
    ]
    mw = max([24, *(len(r.model) for r in result.rows)])
    head = f"{'model':<{mw}} {'batch':>5} {'img/s':>8} {'x base':>7} {'peak MiB':>9}  rounds (img/s)"
    lines += [head, "-" * len(head)]
    for r in result.rows:
        ratio = f"{r.x_baseline:>7.2f}" if r.x_baseline is not None else f"{'-':>7}"
        rounds = ", ".join(f"{v:.1f}" for v in r.rounds_images_per_s)
        lines.append(f"{r.model:<{mw}} {r.batch:>5} {r.images_per_s:>8.1f} {ratio} {r.peak_mib:>9.1f}  {rounds}")
    return "\n".join(lines + [f"failed: {f.where()}: {f.error}" for f in result.failed])


def format_profile(result: ProfileResult, top: int = 8) -> str:
    """Each profile's op time, op calls and its `top` op kinds (ms per call and share of the op time)."""
    m = result.machine
    lines = [f"op time per call: {cpu_label(m)}, {m['threads']} threads, torch {m['torch']}, input {_input_hw(m)}"]
    for p in result.profiles:
        calls = sum(p.op_calls.values())
        lines.append(f"{p.model} / {p.form} @ batch {p.batch}: {p.op_ms:.3f} ms of op time, {calls} op calls")
        for op, ms in sorted(p.ops.items(), key=lambda kv: kv[1], reverse=True)[:top]:
            lines.append(f"    {op:<44} {ms:9.3f} ms {100 * ms / p.op_ms:5.1f}% {p.op_calls.get(op, 0):6d} calls")
    return "\n".join(lines + [f"failed: {f.where()}: {f.error}" for f in result.failed])


def plot_latency(result: LatencyResult, path: str | Path) -> Path:
    """Batch-1 latency against MACs, one marker per model, one colour per form (log scales)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: the user's backend and figure list are left alone
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.subplots()
    forms = sorted({r.form for r in result.rows})
    models = list(dict.fromkeys(r.model for r in result.rows))
    markers, colours = "o^sDvP*X", colormaps["tab10"]
    for r in result.rows:
        marker = markers[models.index(r.model) % len(markers)]
        ax.scatter(r.macs / 1e6, r.latency_ms, marker=marker, color=colours(forms.index(r.form)), s=60)
    for i, model in enumerate(models):
        ax.scatter([], [], marker=markers[i % len(markers)], color="gray", label=model)
    for f in forms:
        ax.scatter([], [], marker="o", color=colours(forms.index(f)), label=f)
    m = result.machine
    title = f"{m['device']} / {m['cpu']}, {m['threads']} thread{'s' if m['threads'] != 1 else ''}, input {_input_hw(m)}"
    ax.set(xlabel="MACs (M, log scale)", ylabel="batch-1 latency (ms, log scale)", xscale="log", yscale="log")
    ax.set_title(title)
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not powers of ten; minor ticks at 2s and 5s
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2, loc="best")
    fig.savefig(Path(path), dpi=120)
    return Path(path)
