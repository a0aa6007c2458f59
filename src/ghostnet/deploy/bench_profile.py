"""`ghostnet bench --profile`: where each form's time goes, per op type, for our model and its peers.

PyTorch forms are measured with torch.profiler (self CPU time per aten op), ONNX Runtime with its own profiler
(kernel time per node, summed by op type); convolutions are split into ``(dense)`` and ``(depthwise)`` by their
weight's shape. With `train_step` the training step (forward, cross-entropy, backward, SGD) is profiled instead.
Op time leaves out what runs between ops (Python, the runtime's dispatch), so it can be well below wall time:
the timing runs (`run_bench`, `run_train_bench`) give the wall time, this gives its split.
"""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..nn.surgery import fuse_bn
from .bench_forms import (
    as_trained,
    build_ours,
    concat_free_form,
    concat_free_name,
    error_line,
    peer_builders,
    torch_forms,
)
from .bench_report import cpu_label, machine_info
from .bench_timing import torch_threads
from .bench_train import training_step
from .export import export_model

__all__ = ["op_kind", "torch_op_times", "ort_op_times", "run_profile", "format_profile"]


def op_kind(op: str, weight_shape: list[int] | None) -> str:
    """A conv op's name with ``(depthwise)`` or ``(dense)`` added (from its 4-d weight shape); any other op's as is."""
    if "conv" not in op.lower() or not weight_shape or len(weight_shape) != 4:
        return op
    return f"{op} ({'depthwise' if weight_shape[1] == 1 else 'dense'})"


def torch_op_times(call: Callable[[], Any], runs: int) -> dict[str, float]:
    """Self CPU time per aten op kind over `runs` calls of `call` (after 3 untimed ones), ms per call.

    Two passes: the times come from one without shapes recorded, since recording them slowed a Ghost model's
    training step 2.6x (and a plain ResNet's not at all); a second pass with shapes only says which share of each
    conv op's time went to depthwise and which to dense convs."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        call()
    passes = []
    for record in (False, True):
        with profile(activities=[ProfilerActivity.CPU], record_shapes=record) as prof:
            for _ in range(runs):
                call()
        passes.append(prof.key_averages(group_by_input_shape=record))
    split: dict[str, dict[str, float]] = collections.defaultdict(dict)  # op -> kind -> time
    for e in passes[1]:
        shapes = e.input_shapes if isinstance(e.input_shapes, list) else []
        at = 2 if e.key == "aten::convolution_backward" else 1  # (grad, input, weight, ...) or (input, weight, ...)
        kind = op_kind(e.key, shapes[at] if len(shapes) > at else None)
        split[e.key][kind] = split[e.key].get(kind, 0.0) + e.self_cpu_time_total
    per_op: collections.Counter[str] = collections.Counter()
    for e in passes[0]:
        kinds = split.get(e.key) or {e.key: 1.0}
        total = sum(kinds.values()) or 1.0
        for kind, share in kinds.items():
            per_op[kind] += e.self_cpu_time_total * share / total / runs / 1000
    return dict(per_op)


def ort_op_times(path: Path, x: torch.Tensor, threads: int, runs: int) -> dict[str, float]:
    """ONNX Runtime's kernel time per op type of the model at `path` on `x` (after 3 untimed runs), ms per run."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling, opts.profile_file_prefix = True, str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    a = x.numpy()
    for _ in range(3 + runs):
        sess.run(None, {"input": a})
    per_op: collections.Counter[str] = collections.Counter()
    events = json.loads(Path(sess.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    for e in kernels[len(kernels) * 3 // (3 + runs) :]:  # every run has the same nodes: the 3 untimed runs' first
        shapes = [next(iter(d.values())) for d in e["args"].get("input_type_shape", [])]
        per_op[op_kind(e["args"]["op_name"], shapes[1] if len(shapes) > 1 else None)] += e["dur"] / runs / 1000
    return dict(per_op)


def _models(model_name: str, size: tuple[int, int], peers: bool, concat_free: bool, train: bool) -> dict[str, Any]:
    """Name -> builder of each model to profile: ours (BN statistics measured, for inference), its concat-free
    form, the peers (as trained, for `train`)."""
    ours = build_ours(model_name) if train else as_trained(build_ours(model_name), size)
    models: dict[str, Callable[[], nn.Module]] = {model_name: lambda: ours}
    if concat_free and not train:
        models[concat_free_name(model_name)] = lambda: concat_free_form(ours, concat_free_name(model_name))
    if peers:
        for name, build in peer_builders(model_name, inference=not train).items():
            models[name] = build if train else (lambda build=build: as_trained(build(), size))  # type: ignore[misc]
    return models


def _profile_one(
    model: nn.Module,
    x: torch.Tensor,
    train: bool,
    channels_last: bool,
    threads: int,
    runs: int,
    onnx: Path,
    runtimes: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    """Form -> op times of one model on `x`: its training step, or eager and fused+cl (``torch`` in `runtimes`)
    and ONNX Runtime, BN folded and exported to `onnx` (``ort``)."""
    cl = torch.channels_last if channels_last else torch.contiguous_format
    if train:
        step = training_step(model.to(memory_format=cl), x.to(memory_format=cl))
        return {f"train step{'+cl' if channels_last else ''}": torch_op_times(step, runs)}
    out: dict[str, dict[str, float]] = {}
    with torch.inference_mode():
        for form, fn in torch_forms(model, "cpu").items() if "torch" in runtimes else ():
            out[form] = torch_op_times(lambda fn=fn: fn(x), runs)  # type: ignore[misc]
    if "ort" not in runtimes:
        return out
    try:
        deploy = fuse_bn(model)
    except ValueError:
        deploy = model
    export_model(deploy, onnx, "onnx", (x.shape[2], x.shape[3]), dynamic_batch=True)
    out["ort-fp32"] = ort_op_times(onnx, x, threads, runs)
    return out


def run_profile(
    model_name: str = "ghostnet_100",
    input_size: tuple[int, int] = (224, 224),
    batch_sizes: tuple[int, ...] = (1,),
    *,
    threads: int = 1,
    runs: int = 20,
    peers: bool = True,
    concat_free: bool = False,
    runtimes: tuple[str, ...] = ("torch", "ort"),
    train_step: bool = False,
    channels_last: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Op time per op type of each form of ours and its peers (`peer_builders`) at each batch size: ``{"machine",
    "profiles": [{"model", "form", "batch", "op_ms", "ops": {op: ms per call}}], "failed"}``.

    `runs` calls are profiled at batch 1, a tenth as many (at least 3) above. Inference forms: ``eager``,
    ``fused+cl`` (or ``cl``) and ``ort-fp32``, every model alike; with `concat_free`, ours' concat-free deploy
    form too; `runtimes` picks among ``torch`` and ``ort``. With `train_step`: the training step (PyTorch),
    channels_last if `channels_last`. A model that cannot be profiled is listed under "failed" and the run goes on.
    """
    if unknown := set(runtimes) - {"torch", "ort"}:
        raise ValueError(f"profiles cover the runtimes torch and ort, not {', '.join(sorted(unknown))}")
    say = progress or (lambda s: None)
    profiles: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []  # model, batch, error
    with torch_threads(threads), tempfile.TemporaryDirectory(prefix="ghostnet-profile-") as tmp:
        for name, build in _models(model_name, input_size, peers, concat_free, train_step).items():
            for batch in batch_sizes:
                say(f"profiling {name} at batch {batch}")
                n = runs if batch == 1 else max(3, runs // 10)
                torch.manual_seed(0)
                x = torch.randn(batch, 3, *input_size)
                try:
                    onnx = Path(tmp) / f"{len(profiles)}-{len(failed)}.onnx"  # a new name for each model and batch
                    forms = _profile_one(build(), x, train_step, channels_last, threads, n, onnx, runtimes)
                except Exception as e:  # noqa: BLE001 - one model that cannot be profiled must not end the run
                    failed.append({"model": name, "batch": batch, "error": error_line(e)})
                    continue
                for form, ops in forms.items():
                    profiles.append(
                        {"model": name, "form": form, "batch": batch, "op_ms": sum(ops.values()), "ops": ops}
                    )
    machine = machine_info() | {"threads": threads, "input_size": list(input_size), "runs": runs}
    return {"machine": machine, "profiles": profiles, "failed": failed}


def format_profile(result: dict[str, Any], top: int = 8) -> str:
    """Each profile's op time and its `top` op kinds (ms per call and share of the op time)."""
    m = result["machine"]
    h, w = m["input_size"]
    lines = [f"op time per call: {cpu_label(m)}, {m['threads']} threads, torch {m['torch']}, input {h}x{w}"]
    for p in result["profiles"]:
        lines.append(f"{p['model']} / {p['form']} @ batch {p['batch']}: {p['op_ms']:.3f} ms of op time")
        for op, ms in sorted(p["ops"].items(), key=lambda kv: kv[1], reverse=True)[:top]:
            lines.append(f"    {op:<44} {ms:9.3f} ms {100 * ms / p['op_ms']:5.1f}%")
    lines += [f"failed: {f['model']} at batch {f['batch']}: {f['error']}" for f in result["failed"]]
    return "\n".join(lines)
