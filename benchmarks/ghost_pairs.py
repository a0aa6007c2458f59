"""Ghost models against their baselines on the CPU: where the time goes, and the concat-free deploy form.

    python benchmarks/ghost_pairs.py profile --pair resnet56 --batch-size 1   # per-op-type time, PyTorch and ORT
    python benchmarks/ghost_pairs.py time --pair resnet56 --batch-size 1 32   # latency of every form, round-robin

Pairs: ``resnet56`` (ghost_resnet56 / resnet56, 32x32), ``vgg16`` (ghost_vgg16 / vgg16, 32x32), ``mobilenet``
(ghostnet_100 / torchvision mobilenet_v3_large, 224x224). Forms: ``fused`` (BN folded, NCHW), ``fused+cl``
(channels_last), ``ghost-deploy+cl`` (`ghost_deploy_form`, channels_last; Ghost models only), ``ort`` (ONNX
Runtime, BN-folded export) and ``ort ghost-deploy``. Weights are random, BN statistics measured (`as_trained`);
one thread unless ``--threads``. Timing only: the outputs are not checked here (tests/test_ghost_deploy.py does).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import torch
    from torch import nn

    from ghostnet import create_model
    from ghostnet.cli.common import positive_int
    from ghostnet.deploy.bench import as_trained
    from ghostnet.deploy.bench_timing import interleaved_times
    from ghostnet.deploy.export import export_model, fuse_bn, onnx_session
    from ghostnet.nn.ghost_deploy import ghost_deploy_form
except ModuleNotFoundError as e:  # run outside the project's environment: say how to run it
    sys.exit(f"{sys.argv[0]}: {e}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)")

PAIRS: dict[str, tuple[str, str, int]] = {  # pair -> (ours, baseline, input size)
    "resnet56": ("ghost_resnet56", "resnet56", 32),
    "vgg16": ("ghost_vgg16", "vgg16", 32),
    "mobilenet": ("ghostnet_100", "tv mobilenet_v3_large", 224),
}


def build(name: str, size: int) -> nn.Module:
    """A model by name (ours from the registry, ``tv NAME`` from torchvision) in eval mode with measured BN stats."""
    torch.manual_seed(0)
    if name.startswith("tv "):
        import torchvision.models as tvm

        model = getattr(tvm, name[3:])()
    else:
        model = create_model(name)
    return as_trained(model, min(size, 64))


def torch_forms(name: str, model: nn.Module) -> dict[str, nn.Module]:
    """The PyTorch forms of one model: fused (NCHW), fused+cl, and for a Ghost model ghost-deploy+cl."""
    fused = fuse_bn(model)
    forms = {"fused": fused, "fused+cl": fuse_bn(model).to(memory_format=torch.channels_last)}
    if name.startswith("ghost"):
        forms["ghost-deploy+cl"] = ghost_deploy_form(model).to(memory_format=torch.channels_last)
    return forms


def onnx_files(name: str, model: nn.Module, size: int, tmp: Path) -> dict[str, Path]:
    """The ONNX files of one model (BN folded; dynamic batch): ort, and for a Ghost model ort ghost-deploy."""
    out = {"ort": tmp / f"{name.replace(' ', '_')}.onnx"}
    export_model(fuse_bn(model), out["ort"], "onnx", (size, size), dynamic_batch=True)
    if name.startswith("ghost"):
        out["ort ghost-deploy"] = tmp / f"{name}_deploy.onnx"
        export_model(ghost_deploy_form(model), out["ort ghost-deploy"], "onnx", (size, size), dynamic_batch=True)
    return out


def _calls(pair: str, batch: int, threads: int, tmp: Path) -> dict[tuple[str, str], Callable[[], Any]]:
    """(model, form) -> a call of that form on one fixed batch."""
    calls: dict[tuple[str, str], Callable[[], Any]] = {}
    for name in PAIRS[pair][:2]:
        size = PAIRS[pair][2]
        model = build(name, size)
        x = torch.randn(batch, 3, size, size)
        for form, m in torch_forms(name, model).items():
            xf = x.contiguous(memory_format=torch.channels_last) if form.endswith("+cl") else x
            calls[(name, form)] = lambda m=m, xf=xf: m(xf)  # type: ignore[misc]
        for form, path in onnx_files(name, model, size, tmp).items():
            session, a = onnx_session(path, threads), x.numpy()
            calls[(name, form)] = lambda s=session, a=a: s.run(None, {"input": a})  # type: ignore[misc]
    return calls


def time_pair(args: argparse.Namespace) -> None:
    """Median latency of every form of both models, round-robin, and ours / baseline per form."""
    ours, base, size = PAIRS[args.pair]
    for batch in args.batch_size:
        with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
            calls = _calls(args.pair, batch, args.threads, Path(tmp))
            runs = args.runs if batch == 1 else max(5, args.runs // 5)
            times = interleaved_times(calls, runs, per_round=3 if batch == 1 else 1, warm=5)
        med = {k: 1000 * statistics.median(v) for k, v in times.items()}
        print(f"{args.pair} pair, {size}x{size}, batch {batch}, {args.threads} thread(s), {runs} timed calls each:")
        for (name, form), ms in med.items():
            print(f"  {name:<24} {form:<18} {ms:9.3f} ms")
        for (name, form), ms in med.items():  # against the baseline in the same runtime and layout
            base_form = {"ghost-deploy+cl": "fused+cl", "ort ghost-deploy": "ort"}.get(form, form)
            if name == ours and (base, base_form) in med:
                print(f"  {ours} {form:<18} / {base} {base_form:<9} {ms / med[(base, base_form)]:.2f}x")
        print(
            json.dumps({"pair": args.pair, "batch": batch, "median_ms": {f"{n} | {f}": m for (n, f), m in med.items()}})
        )


def _conv_kind(op: str, weight_shape: list[int] | None) -> str:
    """A conv op's name with ``depthwise`` or ``dense`` added (from its weight shape), any other op's name as it is."""
    is_conv = "conv" in op.lower()
    if not is_conv or not weight_shape or len(weight_shape) != 4:
        return op
    return f"{op} ({'depthwise' if weight_shape[1] == 1 else 'dense'})"


def _torch_profile(model: nn.Module, x: torch.Tensor, runs: int) -> dict[str, float]:
    """Self CPU time per aten op (convs split into depthwise and dense), microseconds per forward."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        for _ in range(3):
            model(x)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(runs):
                model(x)
    per_op: dict[str, float] = collections.Counter()
    for e in prof.key_averages(group_by_input_shape=True):
        shapes = e.input_shapes if isinstance(e.input_shapes, list) else []
        per_op[_conv_kind(e.key, shapes[1] if len(shapes) > 1 else None)] += e.self_cpu_time_total / runs
    return dict(per_op)


def _ort_profile(path: Path, x: torch.Tensor, threads: int, runs: int) -> dict[str, float]:
    """ONNX Runtime's own profiler: kernel time per op type (convs split), microseconds per run."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.enable_profiling = threads, 1, True
    opts.profile_file_prefix = str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    a = x.numpy()
    for _ in range(runs):
        sess.run(None, {"input": a})
    per_op: dict[str, float] = collections.Counter()
    for e in json.loads(Path(sess.end_profiling()).read_text()):
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            shapes = [next(iter(d.values())) for d in e["args"].get("input_type_shape", [])]
            per_op[_conv_kind(e["args"]["op_name"], shapes[1] if len(shapes) > 1 else None)] += e["dur"] / runs
    return dict(per_op)


def _print_ops(title: str, per_op: dict[str, float], top: int = 10) -> None:
    total = sum(per_op.values())
    print(f"  {title}: {total / 1000:.3f} ms of op time per forward")
    for op, us in sorted(per_op.items(), key=lambda kv: kv[1], reverse=True)[:top]:
        print(f"    {op:<36} {us:9.1f} us  {100 * us / total:5.1f}%")


def profile_pair(args: argparse.Namespace) -> None:
    """Per-op-type time of every form of both models (torch.profiler, ONNX Runtime's profiler)."""
    torch.set_num_threads(args.threads)
    size = PAIRS[args.pair][2]
    for batch in args.batch_size:
        x = torch.randn(batch, 3, size, size)
        runs = args.runs if batch == 1 else max(3, args.runs // 10)
        print(f"{args.pair} pair, batch {batch}, {args.threads} thread(s), mean over {runs} forwards:")
        for name in PAIRS[args.pair][:2]:
            model = build(name, size)
            for form, m in torch_forms(name, model).items():
                xf = x.contiguous(memory_format=torch.channels_last) if form.endswith("+cl") else x
                _print_ops(f"{name} {form}", _torch_profile(m, xf, runs))
            with tempfile.TemporaryDirectory() as tmp:
                for form, path in onnx_files(name, model, size, Path(tmp)).items():
                    _print_ops(f"{name} {form}", _ort_profile(path, x, args.threads, runs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["profile", "time"])
    ap.add_argument("--pair", choices=sorted(PAIRS), default="resnet56")
    ap.add_argument("--batch-size", type=positive_int, nargs="+", default=[1, 32])
    ap.add_argument("--threads", type=positive_int, default=1)
    ap.add_argument("--runs", type=positive_int, default=60, help="timed calls per form at batch 1 (a fifth above)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (profile_pair if args.what == "profile" else time_pair)(args)


if __name__ == "__main__":
    main()
