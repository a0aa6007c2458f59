"""`ghostnet bench`: latency and throughput of our GhostNet in each deploy form against peers, in one process.

Every model is timed under the same pinned thread count, after warm-up, on the same input size. Ratios are
taken against one baseline measured in the same run, because absolute times drift on a shared machine.
The "floor" is the model's FLOPs over this machine's measured fp32 matrix-multiply rate: what a perfectly
efficient kernel library would need.
"""

from __future__ import annotations

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

from .deploy import export_model, fuse_bn, onnx_session
from .models import create_model
from .profile import profile_model

__all__ = ["BenchRow", "run_bench", "format_bench", "plot_bench", "matmul_gflops"]


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
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at `threads` threads."""
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


def _time(fn: Callable[[], Any], runs: int, warmup: int, device: str) -> list[float]:
    """Wall times (s) of `runs` calls after `warmup` calls; CUDA events on GPU."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(runs):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return times


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


def _forms_for_ours(model: nn.Module, device: str, compile: bool) -> dict[str, Callable[[torch.Tensor], Any]]:
    forms: dict[str, Callable[[torch.Tensor], Any]] = {"eager": model}
    fused = fuse_bn(model).to(memory_format=torch.channels_last)
    forms["fused+cl"] = lambda x: fused(x.contiguous(memory_format=torch.channels_last))
    if device.startswith("cuda"):
        def bf16(x: torch.Tensor) -> Any:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return fused(x.contiguous(memory_format=torch.channels_last))

        forms["fused+cl bf16"] = bf16
    if compile:
        # On CUDA "max-autotune" also captures CUDA graphs; on CPU, inductor's C++/OpenMP kernels.
        compiled = torch.compile(fused, mode="max-autotune" if device.startswith("cuda") else None)
        forms["compiled"] = lambda x: compiled(x.contiguous(memory_format=torch.channels_last))
    return forms


def run_bench(
    model_name: str = "ghostnet_100",
    input_size: int = 224,
    batch_sizes: tuple[int, ...] = (1, 32),
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
) -> dict[str, Any]:
    """Time our model in each form and the peers; returns ``{"machine": ..., "rows": [...]}``.

    Args:
        model_name: the registered model to measure in every form.
        input_size: square input resolution.
        batch_sizes: batch 1 gives the latency; the others give throughput (images/s).
        threads: CPU threads for torch and ONNX Runtime (default: all cores).
        runs, warmup: timed and untimed calls per measurement.
        device: ``cpu`` or ``cuda``.
        compile, onnx, int8, peers: which forms and models to include.
        baseline: the row the ratios are relative to ("MODEL / FORM"); default timm's GhostNet eager if present.
    """
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device must be cpu or cuda[:N], got {device!r}")
    threads = threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    say = progress or (lambda s: None)
    gflops = matmul_gflops(threads, device)
    rows: list[BenchRow] = []
    tmp = Path(tempfile.mkdtemp(prefix="ghostnet-bench-"))

    def measure(name: str, form: str, fn: Callable[[np.ndarray | torch.Tensor], Any], macs: int, numpy_input: bool = False) -> None:
        say(f"{name} / {form}")
        throughput: dict[str, float] = {}
        lat: list[float] = []
        for bs in (1, *[b for b in batch_sizes if b != 1]):
            x = torch.randn(bs, 3, input_size, input_size, device=device)
            arg = x.cpu().numpy() if numpy_input else x
            with torch.inference_mode():
                times = _time(lambda: fn(arg), runs if bs == 1 else max(3, runs // 5), warmup if bs == 1 else 2, device)
            if bs == 1:
                lat = times
            else:
                throughput[str(bs)] = bs / statistics.median(times)
        rows.append(BenchRow(name, form, macs, 1000 * statistics.median(lat), 1000 * float(np.percentile(lat, 90)),
                             throughput, 1000 * 2 * macs / (gflops * 1e9)))

    def onnx_forms(name: str, model: nn.Module, macs: int) -> None:
        path = tmp / f"{name.replace(' ', '_')}.onnx"
        # ours is exported BN-folded (as `ghostnet export --fuse`); peers as they are (ORT folds BN itself)
        export_model(fuse_bn(model.cpu()) if name == model_name else model.cpu(), path, "onnx", (input_size, input_size), dynamic_batch=True)
        sess = onnx_session(path, threads)
        measure(name, "ort-fp32", lambda a: sess.run(None, {"input": a}), macs, numpy_input=True)
        if int8 and name == model_name:
            q = _quantize_random(path, tmp, input_size)
            qs = onnx_session(q, threads)
            measure(name, "ort-int8", lambda a: qs.run(None, {"input": a}), macs, numpy_input=True)

    ours = create_model(model_name).eval().to(device)
    macs = profile_model(ours, (input_size, input_size)).macs
    for form, fn in _forms_for_ours(ours, device, compile).items():
        measure(model_name, form, fn, macs)
    if onnx and device == "cpu":
        onnx_forms(model_name, ours, macs)
    if peers:
        for name, build in _peers().items():
            m = build().eval().to(device)
            pm = profile_model(m, (input_size, input_size)).macs
            measure(name, "eager", m, pm)
            if onnx and device == "cpu":
                onnx_forms(name, m, pm)

    base = baseline or ("timm ghostnet_100 / eager" if any(r.model == "timm ghostnet_100" for r in rows) else f"{model_name} / eager")
    ref = next((r for r in rows if f"{r.model} / {r.form}" == base), None)
    if ref is None:
        raise ValueError(f"baseline {base!r} was not measured; rows: {', '.join(f'{r.model} / {r.form}' for r in rows)}")
    for r in rows:
        r.ratio = r.latency_ms / ref.latency_ms
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "threads": threads,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "matmul_gflops": round(gflops, 1),
        "input_size": input_size,
        "runs": runs,
    }
    return {"machine": machine, "baseline": base, "rows": [asdict(r) for r in rows]}


def _quantize_random(fp32: Path, tmp: Path, size: int) -> Path:
    """int8 (QDQ, per-channel; stem and classifier in fp32, as `ghostnet quantize` makes it) calibrated on random
    inputs: right for timing, not for accuracy (see `ghostnet quantize`)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .quantize import KEEPABLE, fp32_nodes

    class Random:
        def __init__(self) -> None:
            self.left = 4

        def get_next(self):
            self.left -= 1
            return {"input": np.random.default_rng(self.left).standard_normal((1, 3, size, size)).astype(np.float32)} if self.left >= 0 else None

    pre, out = tmp / "pre.onnx", tmp / "int8.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Random(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=fp32_nodes(pre, KEEPABLE))
    return out


def format_bench(result: dict[str, Any]) -> str:
    """The benchmark as a table, ratios against the baseline."""
    m = result["machine"]
    bs = sorted({k for r in result["rows"] for k in r["throughput"]}, key=int)
    head = f"{'model':<24} {'form':<14} {'MACs':>8} {'lat. ms':>8} {'p90 ms':>8} {'floor ms':>8} {'x base':>7}" + "".join(f" {'img/s@' + b:>11}" for b in bs)
    lines = [
        f"{m['device']} ({m['cpu']}, {m['threads']} threads), torch {m['torch']}, fp32 matmul {m['matmul_gflops']} GFLOP/s, "
        f"input {m['input_size']}x{m['input_size']}, {m['runs']} runs; ratios vs {result['baseline']}",
        head,
        "-" * len(head),
    ]
    for r in result["rows"]:
        tp = "".join(f" {r['throughput'].get(b, float('nan')):>11.1f}" for b in bs)
        lines.append(
            f"{r['model']:<24} {r['form']:<14} {r['macs'] / 1e6:>7.0f}M {r['latency_ms']:>8.2f} {r['latency_p90_ms']:>8.2f} "
            f"{r['floor_ms']:>8.2f} {r['ratio']:>7.2f}{tp}"
        )
    return "\n".join(lines)


def plot_bench(result: dict[str, Any], path: str | Path) -> Path:
    """Batch-1 latency against MACs, one marker per model, one colour per form (log-scaled latency)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2), constrained_layout=True)
    forms = sorted({r["form"] for r in result["rows"]})
    models = list(dict.fromkeys(r["model"] for r in result["rows"]))
    markers = "o^sDvP*X"
    colours = plt.get_cmap("tab10")
    for r in result["rows"]:
        ax.scatter(r["macs"] / 1e6, r["latency_ms"], marker=markers[models.index(r["model"]) % len(markers)],
                   color=colours(forms.index(r["form"])), s=60)
    for m in models:
        ax.scatter([], [], marker=markers[models.index(m) % len(markers)], color="gray", label=m)
    for f in forms:
        ax.scatter([], [], marker="o", color=colours(forms.index(f)), label=f)
    m = result["machine"]
    ax.set(xlabel="MACs (M)", ylabel="batch-1 latency (ms, log scale)", yscale="log",
           title=f"{m['device']} / {m['cpu']}, {m['threads']} threads, input {m['input_size']}x{m['input_size']}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=2, loc="best")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
