"""`ghostnet bench profile`: where each form's time goes, per op type, for our model and its peers.

PyTorch forms (`forms.FORMS`: eager, fused+cl) are measured with torch.profiler (self CPU time per aten op), ONNX
Runtime's (ort-fp32, ort-int8 with `int8`: random calibration) with its own profiler (kernel time per node, summed by op type);
convolutions are split into ``(dense)`` and ``(depthwise)`` by their weight's shape, and each kind's calls per call
are counted. With `train_step` the training step is profiled instead. Op time leaves out what runs between ops (Python,
the runtime's dispatch), so it can be well below wall time: the latency and train modes give the wall time.
"""

from __future__ import annotations

import collections
import json
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .forms import FORMS, RUNTIMES, OnnxRuntime, Subject
from .models import as_trained, build_ours, concat_free_form, peer_builders
from .report import Failure, Profile, ProfileResult, error_line
from .setup import BenchSetup, machine_info, torch_threads
from .train import train_model, training_step

OpTimes = tuple[dict[str, float], dict[str, int]]  # op kind -> ms per call, and -> its calls per call


def op_kind(op: str, weight_shape: list[int] | None) -> str:
    """A conv op's name with ``(depthwise)`` or ``(dense)`` added (from its 4-d weight shape); any other op's as is."""
    if "conv" not in op.lower() or not weight_shape or len(weight_shape) != 4:
        return op
    return f"{op} ({'depthwise' if weight_shape[1] == 1 else 'dense'})"


def torch_op_times(call: Callable[[], Any], runs: int) -> OpTimes:
    """Self CPU time per aten op kind over `runs` calls of `call` (after 3 untimed ones), ms per call, and aten op
    calls per call of each kind. Two passes: the times come from one without shapes recorded (recording them slowed a Ghost
    model's training step 2.6x, a plain ResNet's not at all); the second says which share of each conv op's time
    went to depthwise and which to dense convs."""
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
    calls: collections.Counter[str] = collections.Counter()
    for e in passes[1]:
        shapes = e.input_shapes if isinstance(e.input_shapes, list) else []
        at = 2 if e.key == "aten::convolution_backward" else 1  # (grad, input, weight, ...) or (input, weight, ...)
        kind = op_kind(e.key, shapes[at] if len(shapes) > at else None)
        split[e.key][kind] = split[e.key].get(kind, 0.0) + e.self_cpu_time_total
        calls[kind] += e.count // runs if e.key.startswith("aten::") else 0
    per_op: collections.Counter[str] = collections.Counter()
    for e in passes[0]:
        kinds = split.get(e.key) or {e.key: 1.0}
        total = sum(kinds.values()) or 1.0
        for kind, share in kinds.items():
            per_op[kind] += e.self_cpu_time_total * share / total / runs / 1000
    return dict(per_op), {k: n for k, n in calls.items() if n}


def ort_op_times(path: Path, x: torch.Tensor, threads: int, runs: int) -> OpTimes:
    """ONNX Runtime's kernel time per op type of the model at `path` on `x` (after 3 untimed runs), ms per run,
    and kernel calls per run of each kind."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_profiling, opts.profile_file_prefix = True, str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for _ in range(3 + runs):
        sess.run(None, {"input": x.numpy()})
    events = json.loads(Path(sess.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    kernels = kernels[len(kernels) * 3 // (3 + runs) :]  # every run has the same nodes: the 3 untimed runs' first
    per_op: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for e in kernels:
        shapes = [next(iter(d.values())) for d in e["args"].get("input_type_shape", [])]
        kind = op_kind(e["args"]["op_name"], shapes[1] if len(shapes) > 1 else None)
        per_op[kind] += e["dur"] / runs / 1000
        calls[kind] += 1
    return dict(per_op), {k: n // runs for k, n in calls.items()}


def _profile_forms(s: Subject, x: torch.Tensor, setup: BenchSetup, tmp: Path) -> dict[str, OpTimes]:
    """Form -> op times of one model on `x`: its training step, or each of its active torch and ort forms (the
    ONNX file BN folded where its BNs fold)."""
    if setup.train_step:
        layout = torch.channels_last if setup.channels_last else torch.contiguous_format
        step = training_step(s.model.to(memory_format=layout), x.to(memory_format=layout))
        return {f"train step{'+cl' if setup.channels_last else ''}": torch_op_times(step, setup.runs)}
    out: dict[str, OpTimes] = {}
    for form in (f for f in FORMS if f.active(setup, True)):
        if form.runtime == "torch":
            fn = form.make(s, setup, tmp)
            with torch.inference_mode():
                out[form.label(s)] = torch_op_times(lambda fn=fn: fn(x), setup.runs)  # type: ignore[misc]
            continue
        try:
            deploy = s.exported
        except ValueError:  # a BN that no conv feeds directly: exported unfolded
            deploy = s.model
        path = tmp / f"{len(list(tmp.iterdir()))}-{form.name}.onnx"  # a new name for each model, batch and form
        calibration = RUNTIMES["ort"].calibration(s, setup.hw) if form.name.endswith("int8") else None
        OnnxRuntime.convert(deploy, x, path, calibration)
        out[form.name] = ort_op_times(path, x, setup.threads, setup.runs)
    return out


def _models(setup: BenchSetup) -> dict[str, Callable[[], torch.nn.Module]]:
    """Name -> builder of each model to profile: ours (BN statistics measured, for inference), its concat-free
    form, the peers (as trained, for the training step)."""
    if setup.train_step:
        names = [setup.model_name, *(peer_builders(setup.model_name, inference=False) if setup.peers else [])]
        return {n: lambda n=n: train_model(setup, n) for n in names}  # type: ignore[misc]
    ours = as_trained(build_ours(setup.model_name), setup.hw)
    models = {setup.model_name: lambda: ours}
    if setup.concat_free:
        models[setup.ours[1]] = lambda: concat_free_form(ours, setup.ours[1])
    for name, build in (peer_builders(setup.model_name) if setup.peers else {}).items():
        models[name] = lambda build=build: as_trained(build(), setup.hw)  # type: ignore[misc]
    return models


def run_profile(setup: BenchSetup, say: Callable[[str], None] | None = None) -> ProfileResult:
    """Op time per op kind of each form of ours and its peers at each batch size: `runs` profiled calls at batch
    1, a tenth as many (at least 3) above. A model that cannot be profiled is listed under "failed"."""
    say = say or (lambda s: None)
    profiles: list[Profile] = []
    failed: list[Failure] = []
    with torch_threads(setup.threads), tempfile.TemporaryDirectory(prefix="ghostnet-profile-") as tmp:
        for name, build in _models(setup).items():
            for batch in setup.batch_sizes:
                say(f"profiling {name} at batch {batch}")
                torch.manual_seed(0)
                x = torch.randn(batch, 3, *setup.hw)
                at_batch = setup if batch == 1 else replace(setup, runs=max(3, setup.runs // 10))
                try:
                    forms = _profile_forms(Subject(name, build(), True), x, at_batch, Path(tmp))
                except Exception as e:  # noqa: BLE001 - one model that cannot be profiled must not end the run
                    failed.append(Failure(name, error_line(e), batch=batch))
                    continue
                for form, (ops, calls) in forms.items():
                    profiles.append(Profile(name, form, batch, sum(ops.values()), ops, calls))
    machine = machine_info(threads=setup.threads, input_size=list(setup.hw), runs=setup.runs)
    return ProfileResult(machine, profiles, failed)
