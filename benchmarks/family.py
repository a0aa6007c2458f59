"""The GhostNet family on this CPU: params, MACs, published ImageNet top-1 and measured batch-1 latency of
V1, V2, V3 (folded) and torchvision's MobileNetV3, in one interleaved run; a table and an accuracy-vs-latency chart.

Each model is timed in its deploy forms: PyTorch with BN folded and channels_last, and ONNX Runtime fp32,
round-robin with the harness of `ghostnet bench` (random weights with BN statistics measured on random
batches: right for timing only). Top-1 is the published figure of the released weights, not measured here.

    python benchmarks/family.py --threads 2 --runs 30 --output docs/family_cpu.json --plot docs/img/family_cpu.png
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import torch

    from ghostnet import create_model
    from ghostnet.analysis import profile_model
    from ghostnet.bench import as_trained, interleaved_times, torch_threads
    from ghostnet.deploy.export import check_output_path, export_model, onnx_session
    from ghostnet.nn import fuse_bn, reparameterize
    from ghostnet.tasks.options import positive_int
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")

# ImageNet top-1 of the published weights (the papers' tables; torchvision's model cards for MobileNetV3).
TOP1 = {
    "ghostnet_050": 66.2,
    "ghostnet_100": 73.9,
    "ghostnet_130": 75.7,
    "ghostnetv2_100": 75.3,
    "ghostnetv2_130": 76.9,
    "ghostnetv2_160": 77.8,
    "ghostnetv3_100": 77.1,
    "ghostnetv3_130": 79.1,
    "ghostnetv3_160": 80.4,
    "mobilenet_v3_small": 67.7,
    "mobilenet_v3_large": 75.3,
}


def build(name: str) -> torch.nn.Module:
    """The model in its inference form, BN statistics measured on random batches as after training."""
    import torchvision.models as tvm

    model = getattr(tvm, name)() if name.startswith("mobilenet") else create_model(name)
    return reparameterize(as_trained(model, 224))


def forms(name: str, model: torch.nn.Module, tmp: Path, threads: int) -> dict[str, Callable[[], object]]:
    """Batch-1 calls of the model's deploy forms: folded PyTorch (channels_last) and ONNX Runtime fp32."""
    x = torch.randn(1, 3, 224, 224)
    fused = fuse_bn(model).to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)
    export_model(fuse_bn(model), tmp / f"{name}.onnx", "onnx", (224, 224), dynamic_batch=True)
    session = onnx_session(tmp / f"{name}.onnx", threads)
    feed = {"input": x.numpy()}

    def eager() -> object:
        with torch.inference_mode():
            return fused(xc)

    return {"torch folded+cl": eager, "ONNX Runtime fp32": lambda: session.run(None, feed)}


def measure(names: list[str], threads: int, runs: int) -> dict[str, object]:
    rows, calls = [], {}
    with tempfile.TemporaryDirectory() as d, torch_threads(threads):
        for name in names:
            model = build(name)
            p = profile_model(model, (224, 224))
            rows.append({"model": name, "params": p.params, "macs": p.macs, "top1": TOP1.get(name)})
            for form, fn in forms(name, model, Path(d), threads).items():
                calls[(name, form)] = fn
            print(f"built {name}", file=sys.stderr)
        times = interleaved_times(calls, runs, per_round=3, settle=2, warm=5)
    for row in rows:
        for form in ("torch folded+cl", "ONNX Runtime fp32"):
            row[form] = 1000 * statistics.median(times[(row["model"], form)])
    machine = {"cpu": cpu_name(), "threads": threads, "torch": torch.__version__, "runs": runs}
    return {"machine": machine, "rows": rows}


def cpu_name() -> str:
    """The processor's model name and vector extensions (Linux /proc/cpuinfo), else what platform knows."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "")
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    ext = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile") if f in flags]
    return f"{name or platform.machine()} ({', '.join(ext) or 'no AVX2'})"


def table(result: dict) -> str:
    lines = [
        "| model | params | MACs @224 | ImageNet top-1 (published) | torch folded+cl (ms) | ONNX Runtime fp32 (ms) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        top1 = "—" if r["top1"] is None else f"{r['top1']:.1f}"
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['macs'] / 1e6:.1f}M | {top1} | "
            f"{r['torch folded+cl']:.2f} | {r['ONNX Runtime fp32']:.2f} |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Published top-1 against measured ONNX Runtime batch-1 latency, one line per family."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    families = {
        "GhostNet": "ghostnet_",
        "GhostNetV2": "ghostnetv2_",
        "GhostNetV3": "ghostnetv3_",
        "MobileNetV3": "mobilenet",
    }
    for label, prefix in families.items():
        rows = [r for r in result["rows"] if r["model"].startswith(prefix) and r["top1"] is not None]
        xs, ys = [r["ONNX Runtime fp32"] for r in rows], [r["top1"] for r in rows]
        ax.plot(xs, ys, "o-", label=label)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(r["model"].split("_")[-1], (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    m = result["machine"]
    ax.set(
        xlabel="batch-1 latency, ONNX Runtime fp32 (ms)",
        ylabel="ImageNet top-1 (%, published)",
        title=f"{m['cpu']}, {m['threads']} thread(s), 224x224",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--runs", type=positive_int, default=30, help="timed batch-1 calls per form")
    p.add_argument("--models", nargs="+", default=list(TOP1) + ["ghostnetv3_050"])
    p.add_argument("--output", help="also write the JSON here (must not exist)")
    p.add_argument("--plot", help="also draw the chart into this PNG (must not exist)")
    args = p.parse_args()
    try:
        for out in (args.output, args.plot):
            if out:
                check_output_path(out)
        result = measure(args.models, args.threads, args.runs)
    except ValueError as e:
        p.exit(2, f"family.py: error: {e}\n")
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
