"""int8 post-training quantization: ONNX Runtime's static quantizer against torch.ao's (FX graph mode, x86
backend), same calibration, same layers kept in fp32, measured in one run.

Accuracy: a trained checkpoint of ours, calibrated on its own training images and scored on its test split.
Speed: ghostnet_100 at 224x224 (random weights, random calibration: right for timing only), batch-1 median
latency and batch-32 throughput, fp32 and int8 in each runtime, interleaved.

    python benchmarks/int8_backends.py --checkpoint runs/fmnist-cpu-8ep/best.pth --threads 1
"""

from __future__ import annotations

import argparse
import collections
import copy
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

try:
    import torch

    from ghostnet import create_model
    from ghostnet.bench import interleaved_times
    from ghostnet.deploy.export import export_model, fuse_bn, onnx_session
    from ghostnet.deploy.quantize import evaluate_onnx, loader_images, quantize_onnx
    from ghostnet.tasks.classify.quantize import checkpoint_data
    from ghostnet.tasks.options import positive_int
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")


def torch_ao_int8(model: torch.nn.Module, batches, example: torch.Tensor) -> torch.nn.Module:
    """torch.ao FX-mode static int8 (x86 backend: per-channel weights, fbgemm/oneDNN kernels), stem and
    classifier kept fp32 as `ghostnet classify quantize` keeps them."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    qmap = get_default_qconfig_mapping("x86").set_module_name("conv_stem", None).set_module_name("classifier", None)
    with warnings.catch_warnings():  # FX-mode quantization is deprecated in favour of torchao's PT2E flow
        warnings.simplefilter("ignore")
        prepared = prepare_fx(copy.deepcopy(model).eval(), qmap, (example,))
        with torch.no_grad():
            for x in batches:
                prepared(x)
        return convert_fx(prepared)


def op_times(model: torch.fx.GraphModule, x: torch.Tensor, repeats: int) -> tuple[dict[str, float], dict[str, int]]:
    """Each kind of node's share of the forward's wall time, and its calls per forward: the graph is run node by
    node, timed around each (torch's profiler would also probe for a GPU, which logs an error on a CPU machine)."""
    seconds: dict[str, float] = collections.defaultdict(float)
    calls: dict[str, int] = collections.defaultdict(int)

    class Timed(torch.fx.Interpreter):
        def run_node(self, n: torch.fx.Node):
            if n.op not in ("call_module", "call_function", "call_method"):
                return super().run_node(n)
            target = self.fetch_attr(n.target) if n.op == "call_module" else n.target
            if n.op == "call_module":  # torch.ao's quantized modules keep the float classes' names
                kind = ("quantized " if ".quantized" in type(target).__module__ else "") + type(target).__name__
            else:
                kind = getattr(target, "__name__", str(target))
            start = time.perf_counter()
            out = super().run_node(n)
            seconds[kind] += time.perf_counter() - start
            calls[kind] += 1
            return out

    with torch.inference_mode():
        for _ in range(repeats):
            Timed(model).run(x)
    total = sum(seconds.values())
    return {k: v / total for k, v in seconds.items()}, {k: v // repeats for k, v in calls.items()}


def torch_top1(model: torch.nn.Module, loader) -> float:
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader.batches():
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / max(1, total)


def timings(fns: dict[str, tuple[Callable, bool]], batch: int, size: int, runs: int) -> dict[str, float]:
    """Median seconds per call of each function (numpy input if its flag is set), timed round-robin by the
    same harness as `ghostnet bench`."""
    x = torch.randn(batch, 3, size, size)
    args = {False: x, True: x.numpy()}
    calls = {name: (lambda fn=fn, numpy=numpy: fn(args[numpy])) for name, (fn, numpy) in fns.items()}
    with torch.inference_mode():
        times = (
            interleaved_times(calls, runs, per_round=3, settle=2, warm=3)
            if batch == 1
            else interleaved_times(calls, runs, per_round=1, settle=1, warm=1)
        )
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="a trained checkpoint of ours, for the accuracy rows (left out without it)")
    ap.add_argument("--data-dir")
    ap.add_argument("--calibration-images", type=positive_int, default=512)
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument(
        "--runs", type=positive_int, default=30, help="timed calls per form at batch 1 (a fifth of it at batch 32)"
    )
    ap.add_argument("--input-size", type=positive_int, default=224)
    args = ap.parse_args()
    if args.input_size < 32:
        ap.error("--input-size must be at least 32 (GhostNet downsamples 32x)")
    try:
        run(args)
    except ValueError as e:  # a missing or corrupt checkpoint, a dataset not found: one line, exit 2
        ap.exit(2, f"{ap.prog}: error: {e}\n")


def run(args: argparse.Namespace) -> None:
    # torch.ao's quantized cat requantizes when its inputs' scales differ (the two Ghost halves); it warns each call
    warnings.filterwarnings("ignore", message="All inputs of this cat operator")
    torch.set_num_threads(args.threads)
    print(f"{platform.processor() or platform.machine()}, {args.threads} thread(s), torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.checkpoint:
            d = checkpoint_data(args.checkpoint, args.data_dir)
            calib = list(loader_images(d.calibration, args.calibration_images))
            hw = (d.data.image_size, d.data.image_size)
            export_model(fuse_bn(d.model), tmp / "acc.onnx", "onnx", hw, d.in_chans, dynamic_batch=True)
            quantize_onnx(tmp / "acc.onnx", tmp / "acc.int8.onnx", calib)
            q_ort = onnx_session(tmp / "acc.int8.onnx", args.threads)
            q_ao = torch_ao_int8(d.model, calib, calib[0][:1])
            fp32 = torch_top1(d.model, d.test)
            print(f"\naccuracy, {d.data.name} test split, calibrated on {sum(len(b) for b in calib)} training images:")
            print(f"  fp32 (PyTorch)          {fp32:6.2f}%")
            ort32 = onnx_session(tmp / "acc.onnx", args.threads)
            for name, top1 in (
                ("fp32 ONNX Runtime", evaluate_onnx(ort32, d.test)),
                ("int8 ONNX Runtime", evaluate_onnx(q_ort, d.test)),
                ("int8 torch.ao x86", torch_top1(q_ao, d.test)),
            ):
                print(f"  {name:<23} {top1:6.2f}%   drop {fp32 - top1:5.2f}")

        size = args.input_size
        model = create_model("ghostnet_100").eval()
        calib = [torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(4)]
        export_model(fuse_bn(model), tmp / "speed.onnx", "onnx", (size, size), dynamic_batch=True)
        ort32 = onnx_session(tmp / "speed.onnx", args.threads)
        quantize_onnx(tmp / "speed.onnx", tmp / "speed.int8.onnx", calib)
        ort8 = onnx_session(tmp / "speed.int8.onnx", args.threads)
        ao8 = torch_ao_int8(model, calib, calib[0])
        fused = fuse_bn(model).to(memory_format=torch.channels_last)
        fns = {
            "PyTorch fp32 (BN folded, channels_last)": (
                lambda x: fused(x.contiguous(memory_format=torch.channels_last)),
                False,
            ),
            "torch.ao int8 (x86)": (ao8, False),
            "ONNX Runtime fp32": (lambda a: ort32.run(None, {"input": a}), True),
            "ONNX Runtime int8": (lambda a: ort8.run(None, {"input": a}), True),
        }
        lat = timings(fns, 1, size, args.runs)
        tput = timings(fns, 32, size, max(3, args.runs // 5))
        print(f"\nspeed, ghostnet_100 at {size}x{size}:")
        print(f"  {'form':<40} {'batch-1 ms':>10} {'img/s @32':>10}")
        for k in fns:
            print(f"  {k:<40} {1000 * lat[k]:>10.2f} {32 / tput[k]:>10.1f}")

        shares, calls = op_times(ao8, torch.randn(1, 3, size, size), repeats=5)
        print("\nwhere the torch.ao model spends its batch-1 time (its graph run node by node, wall time):")
        for kind, share in sorted(shares.items(), key=lambda kv: kv[1], reverse=True)[:4]:
            print(f"  {kind:<32} {100 * share:5.1f}%   {calls[kind]:4d} calls a forward")


if __name__ == "__main__":
    main()
