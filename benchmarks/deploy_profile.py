"""Where batch-1 time goes in our deploy forms, and the variants tried against the CPU targets.

    python benchmarks/deploy_profile.py torch-ops --threads 1      # which conv kernels the folded eager model runs
    python benchmarks/deploy_profile.py ort-ops --threads 1        # ONNX Runtime time by op type, fp32 and int8
    python benchmarks/deploy_profile.py ort-ops --always-slice     # the same with the Ghost modules' no-op slice put back
    python benchmarks/deploy_profile.py int8-variants --threads 1  # int8 with the depthwise convs left in fp32
    python benchmarks/deploy_profile.py eager-variants --threads 1 # inductor freezing, 1x1 convs as matrix products

Everything is ghostnet_100 at 224x224 (--input-size) with random weights (timing only); comparisons are timed round-robin by
`ghostnet bench`'s harness.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from ghostnet import create_model
    from ghostnet.deploy.bench import interleaved_times
    from ghostnet.deploy.export import export_model, fuse_bn, onnx_session
    from ghostnet.deploy.quantize import quantize_onnx
    from ghostnet.nn import GhostModule
    from ghostnet.tasks.options import positive_int
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")

SIZE = 224


def _random_images(n: int) -> list[np.ndarray]:
    return [np.random.default_rng(i).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32) for i in range(n)]


def _report(times: dict[str, list[float]], batch: int) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"  batch {batch:>2}  {k:<34} {1000 * v:9.2f} ms   {batch / v:8.1f} img/s")


def _profile(model: nn.Module, x: torch.Tensor, calls: int = 10):
    with torch.inference_mode():
        for _ in range(5):
            model(x)
        with torch.profiler.profile() as prof:
            for _ in range(calls):
                model(x)
    return prof.key_averages()


def torch_ops(args: argparse.Namespace) -> None:
    """torch profiler over 10 batch-1 calls: aten ops of ours and timm's eager models, then where the BN-folded
    channels_last model spends its time."""
    import timm

    x = torch.randn(1, 3, SIZE, SIZE)
    for name, model in (("ours", create_model("ghostnet_100")), ("timm", timm.create_model("ghostnet_100"))):
        events = _profile(model.eval(), x)
        print(
            f"{name} eager: {sum(e.count for e in events if e.key.startswith('aten::')) // 10} aten op calls a forward"
        )
    model = fuse_bn(create_model("ghostnet_100").eval()).to(memory_format=torch.channels_last)
    events = _profile(model, x.contiguous(memory_format=torch.channels_last))
    total = sum(e.self_cpu_time_total for e in events)
    print(f"BN folded + channels_last, batch 1, {args.threads} thread(s); per forward:")
    for e in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]:
        print(f"  {e.key:<32} {e.count // 10:4d} calls   {100 * e.self_cpu_time_total / total:5.1f}% of self CPU time")


def _ort_profile(path: Path, threads: int, runs: int = 30) -> dict[str, float]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.enable_profiling = threads, True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = _random_images(1)[0]
    for _ in range(runs):
        sess.run(None, {"input": x})
    per_op: dict[str, float] = collections.Counter()
    for e in json.loads(Path(sess.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / runs / 1000
    return dict(per_op)


def ort_ops(args: argparse.Namespace) -> None:
    """ONNX Runtime's own profiler: time per op type at batch 1, fp32 and int8 (random calibration)."""
    if args.always_slice:  # the official code and timm keep the first n maps even when that is all of them
        whole = GhostModule.forward
        GhostModule.forward = lambda self, x: whole(self, x)[:, : self.out_channels]  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_model(fuse_bn(create_model("ghostnet_100").eval()), fp32, "onnx", (SIZE, SIZE), dynamic_batch=True)
        int8 = Path(tmp) / "int8.onnx"
        quantize_onnx(fp32, int8, _random_images(4))
        for name, path in (("fp32", fp32), ("int8", int8)):
            per_op = _ort_profile(path, args.threads)
            print(
                f"{name}{' (slices kept)' if args.always_slice else ''}: {sum(per_op.values()):.2f} ms a batch-1 run "
                f"in kernels, {args.threads} thread(s)"
            )
            for op, ms in sorted(per_op.items(), key=lambda kv: -kv[1])[:8]:
                print(f"  {op:<26} {ms:6.2f} ms")


def int8_variants(args: argparse.Namespace) -> None:
    """int8 everywhere (as `ghostnet classify quantize`) against int8 with the depthwise convs left fp32, and fp32."""

    def depthwise(node) -> bool:
        return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_model(fuse_bn(create_model("ghostnet_100").eval()), fp32, "onnx", (SIZE, SIZE), dynamic_batch=True)
        quantize_onnx(fp32, Path(tmp) / "all.onnx", _random_images(4))
        quantize_onnx(fp32, Path(tmp) / "dw.onnx", _random_images(4), also_fp32=depthwise)
        sessions = {
            k: onnx_session(Path(tmp) / f"{f}.onnx", args.threads)
            for k, f in (("fp32", "fp32"), ("int8 everywhere", "all"), ("int8, depthwise convs fp32", "dw"))
        }
        for batch, total, per_round, settle in ((1, 30, 3, 2), (32, 4, 1, 1)):
            x = np.random.default_rng(0).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
            calls = {k: (lambda s=s, x=x: s.run(None, {"input": x})) for k, s in sessions.items()}
            _report(interleaved_times(calls, total, per_round, settle, warm=2), batch)


class _PointwiseAsMatmul(nn.Module):
    """A stride-1 1x1 conv as one matrix product on the channels-last buffer (no copies)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1).clone(), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.permute(0, 2, 3, 1), self.weight, self.bias).permute(0, 3, 1, 2)


def _pointwise_as_matmul(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if (
            isinstance(child, nn.Conv2d)
            and child.kernel_size == (1, 1)
            and child.stride == (1, 1)
            and child.groups == 1
        ):
            setattr(module, name, _PointwiseAsMatmul(child))
        else:
            _pointwise_as_matmul(child)
    return module


def eager_variants(args: argparse.Namespace) -> None:
    """timm's eager model against ours folded, compiled, compiled with inductor's freezing, and with its 1x1
    convs as matrix products."""
    import timm
    import torch._inductor.config as inductor  # noqa: PLC2701 - the switch for inductor's freezing pass

    timm_model = timm.create_model("ghostnet_100").eval()
    fused = fuse_bn(create_model("ghostnet_100").eval()).to(memory_format=torch.channels_last)
    matmul = _pointwise_as_matmul(copy.deepcopy(fused))
    compiled = torch.compile(fused)
    frozen = torch.compile(copy.deepcopy(fused))
    cl = lambda x: x.contiguous(memory_format=torch.channels_last)  # noqa: E731
    with torch.inference_mode():
        x = torch.randn(1, 3, SIZE, SIZE)
        compiled(cl(x))  # compile each before the timing, freezing only for the second
        inductor.freezing = True
        frozen(cl(x))
        inductor.freezing = False
        print(f"max |folded - 1x1-as-matmul| = {(fused(cl(x)) - matmul(cl(x))).abs().max():.2e}")
        for batch, total, per_round, settle in ((1, 30, 3, 2), (32, 3, 1, 1)):
            x = torch.randn(batch, 3, SIZE, SIZE)
            xc = cl(x)
            calls = {
                "timm eager": lambda x=x: timm_model(x),
                "ours folded + channels_last": lambda xc=xc: fused(xc),
                "ours compiled": lambda xc=xc: compiled(xc),
                "ours compiled, freezing": lambda xc=xc: frozen(xc),
                "ours folded, 1x1 convs as matmul": lambda xc=xc: matmul(xc),
            }
            _report(interleaved_times(calls, total, per_round, settle, warm=2), batch)


def main() -> None:
    global SIZE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["torch-ops", "ort-ops", "int8-variants", "eager-variants"])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--always-slice", action="store_true", help="ort-ops: put the Ghost modules' no-op slice back")
    ap.add_argument(
        "--input-size", type=positive_int, default=SIZE, help="square input (224; smaller only to check the script)"
    )
    args = ap.parse_args()
    if args.input_size < 32:
        ap.error("--input-size must be at least 32 (GhostNet downsamples 32x)")
    SIZE = args.input_size
    torch.set_num_threads(args.threads)
    {"torch-ops": torch_ops, "ort-ops": ort_ops, "int8-variants": int8_variants, "eager-variants": eager_variants}[
        args.what
    ](args)


if __name__ == "__main__":
    main()
