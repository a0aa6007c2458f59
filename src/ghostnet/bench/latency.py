"""`ghostnet bench latency`: our model in every form (`forms.FORMS`) against its peers, timed round-robin in one
process under pinned threads, after warm-up, on one input size; ratios against one baseline of the same run, since
absolute times drift on a shared machine. The "floor" is the model's FLOPs over this machine's measured fp32
matrix-multiply rate. With a checkpoint, ours is built from it and each of its forms gets its top-1 on the first
test images of its dataset, one image a call (edge runtimes' files have a static batch-1 shape); peers have no
weights for that dataset. A form that fails does not end the run: it is listed under "failed" with its error."""

from __future__ import annotations

import functools
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..analysis.profile import profile_model
from ..nn.rep import reparameterize
from .forms import ReportFailure, Subject, Timed, build_forms, is_full, plan
from .models import Builders, as_trained, build_ours, concat_free_form, default_baseline, peer_builders
from .report import Failure, LatencyResult, Row, error_line
from .setup import BenchSetup, interleaved_times, machine_info, matmul_gflops, torch_threads

Say = Callable[[str], None]


def run_latency(setup: BenchSetup, say: Say | None = None) -> LatencyResult:
    """Time every form of ours and the peers at each batch size (batch 1: latency; others: images/s)."""
    say = say or (lambda s: None)
    baseline = setup.baseline or default_baseline(setup.model_name, setup.peers)
    if baseline:
        check_baseline(baseline, plan(setup, list(_builders(setup, None))))
    ours = trained_ours(setup) if setup.checkpoint else None
    gflops = matmul_gflops(setup.threads, setup.device)
    failed: list[Failure] = []

    def fail(model: str, form: str, e: Exception) -> None:
        failed.append(Failure(model, error_line(e), form=form))
        say(f"{model} / {form} failed: {failed[-1].error}")

    with torch_threads(setup.threads), tempfile.TemporaryDirectory(prefix="ghostnet-bench-") as tmp:
        entries = _all_forms(setup, Path(tmp), fail, ours)
        latency = _time_batch(entries, 1, setup, fail, say)
        throughput = {bs: _time_batch(entries, bs, setup, fail, say) for bs in setup.batch_sizes if bs != 1}
        top1 = _forms_top1(entries, ours, setup, fail, say) if ours else {}
    rows = [_row(e, latency, throughput, gflops, top1.get(id(e))) for e in entries]
    machine = machine_info(
        threads=setup.threads,
        device=torch.cuda.get_device_name() if setup.cuda else "cpu",
        matmul_gflops=round(gflops, 1),
        input_size=list(setup.hw),
        runs=setup.runs,
        runtimes=list(setup.runtimes),
    )
    base = set_ratios(rows, baseline, setup.model_name, say)
    return LatencyResult(machine, base, rows, failed, accuracy=_accuracy(setup, ours))


def check_baseline(baseline: str, planned: dict[str, set[str]]) -> None:
    """Refuse a baseline that this run will not measure, before any timing is spent."""
    model, sep, form = (part.strip() for part in baseline.partition(" / "))
    if not sep or model not in planned:
        raise ValueError(f"baseline must be 'MODEL / FORM' with MODEL one of {', '.join(planned)}; got {baseline!r}")
    if form not in planned[model]:
        raise ValueError(f"this run does not time {model} as {form!r}; its forms: {', '.join(sorted(planned[model]))}")


def _builders(setup: BenchSetup, ours: dict[str, Any] | None) -> Builders:
    """Model name -> what builds it: ours in its inference form (a GhostNetV3's branches folded; from the
    checkpoint if given), its concat-free form if asked for (from the same weights), then the peers."""
    once = functools.cache(
        (lambda: reparameterize(ours["model"]))
        if ours
        else (lambda: reparameterize(as_trained(build_ours(setup.model_name), setup.hw)))
    )
    builders: Builders = {setup.model_name: once}
    if setup.concat_free:
        builders[setup.ours[1]] = lambda: concat_free_form(once(), setup.ours[1])
    return builders | (peer_builders(setup.model_name) if setup.peers else {})


def _all_forms(setup: BenchSetup, tmp: Path, fail: ReportFailure, ours: dict[str, Any] | None) -> list[Timed]:
    """Every form to time: ours first, then each peer, each model's forms in `FORMS`' order."""
    entries: list[Timed] = []
    for name, build in _builders(setup, ours).items():
        try:
            model = build().eval().to(setup.device)
        except ValueError as e:  # ours' concat-free form, where no Ghost module can be rewritten
            fail(name, "every form", e)
            continue
        mine = name in setup.ours
        chans = setup.in_chans if mine else 3
        calibration = ours["calibration"] if ours and mine else None
        s = Subject(name, model, is_full(setup, name), chans, calibration)
        entries += build_forms(s, setup, tmp, fail, profile_model(model, setup.hw, chans).macs)
    return entries


def _time_batch(entries: list[Timed], bs: int, setup: BenchSetup, fail: ReportFailure, say: Say) -> dict[int, list]:
    """Every form's timings at batch `bs`, keyed by ``id(entry)``: at batch 1 `runs` timed calls, 3 a round after
    2 settling ones (after `warmup`); above, a fifth as many (at least 3), 1 a round after 1. A form that raises is
    reported and left out of this batch size, and out of `entries` (the table) if it fails at batch 1."""
    total, per_round, settle, warm = (setup.runs, 3, 2, setup.warmup) if bs == 1 else (max(3, setup.runs // 5), 1, 1, 2)
    inputs = {c: torch.randn(bs, c, *setup.hw, device=setup.device) for c in {e.in_chans for e in entries}}
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
    with torch.inference_mode():  # warm-up calls (at least one) make a runtime's file for this batch size
        return interleaved_times(calls, total, per_round, settle, max(1, warm), setup.device, dropped)


def _row(e: Timed, latency: dict, throughput: dict[int, dict], gflops: float, top1: float | None) -> Row:
    """One form's row: median and p90 latency, images/s at each other batch size it ran at, the floor."""
    lat = latency[id(e)]
    return Row(
        e.model,
        e.form,
        e.macs,
        1000 * statistics.median(lat),
        1000 * float(np.percentile(lat, 90)),
        {str(bs): bs / statistics.median(t[id(e)]) for bs, t in throughput.items() if id(e) in t},
        1000 * 2 * e.macs / (gflops * 1e9),
        runtime=e.runtime,
        top1=top1,
    )


def set_ratios(rows: list[Row], baseline: str, model_name: str, say: Say) -> str:
    """Set each row's latency ratio to the baseline row's (by default timm's model eager if timed, else ours eager;
    without PyTorch forms, that model's first form) and return the baseline's name; with no such row, no ratios."""
    model = next((r.model for r in rows if r.model.startswith("timm ")), model_name)
    first = next((r.form for r in rows if r.model == model), "eager")
    base = baseline or f"{model} / {'eager' if any(r.form == 'eager' for r in rows) else first}"
    ref = next((r for r in rows if f"{r.model} / {r.form}" == base), None)
    if ref is None:  # it failed, or this configuration does not make that form: keep the timings, drop the ratios
        say(f"baseline {base} was not measured: no ratios")
    for r in rows:
        r.ratio = None if ref is None else r.latency_ms / ref.latency_ms
    return base


def trained_ours(setup: BenchSetup, calibration_images: int = 128) -> dict[str, Any]:
    """Our model from `setup`'s checkpoint, `calibration_images` of its training images (preprocessed as for
    evaluation) and its first `eval_images` test images with their labels."""
    from ..deploy.quantize import loader_images

    if setup.trained_data is None:
        raise ValueError("scoring a checkpoint's forms needs its data: pass BenchSetup(trained_data=...)")
    d = setup.trained_data(setup.checkpoint, setup.data_dir or None)
    xs, ys, left = [], [], setup.eval_images
    for x, y in d.test.batches():
        xs.append(x[:left])
        ys.append(y[:left])
        left -= len(xs[-1])
        if left <= 0:
            break
    return {
        "model": d.model,
        "calibration": torch.cat(list(loader_images(d.calibration, calibration_images))).float(),
        "images": torch.cat(xs).float(),
        "labels": torch.cat(ys),
        "dataset": d.data.name,
        "test_total": len(d.data.test),
    }


def _accuracy(setup: BenchSetup, ours: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the top-1 column was measured on (None without a checkpoint)."""
    if ours is None:
        return None
    return {
        "checkpoint": setup.checkpoint,
        "dataset": ours["dataset"],
        "images": len(ours["images"]),
        "test_images": ours["test_total"],
        "batch": 1,
        "calibration_images": len(ours["calibration"]),
    }


def _top_class(out: Any) -> np.ndarray:
    """The argmax over classes of a form's output: a tensor, an array, or a list of them (the first: logits)."""
    out = out[0] if isinstance(out, (list, tuple)) else out
    return np.asarray(out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else out).argmax(1)


@torch.inference_mode()
def _forms_top1(entries: list[Timed], ours: dict[str, Any], setup: BenchSetup, fail: ReportFailure, say: Say) -> dict:
    """Top-1 (%) of each form of ours among `entries` (keyed by ``id(entry)``), one test image a call. A form that
    fails there is reported (as ``FORM (top-1)``) and gets no figure."""
    images, labels = ours["images"], ours["labels"]
    say(f"top-1 of each form of {setup.model_name} on {len(images)} {ours['dataset']} test images, batch 1")
    top1: dict[int, float] = {}
    for e in (e for e in entries if e.model in setup.ours):
        x = images if e.numpy_input else images.to(setup.device)
        try:
            hits = [_top_class(e.fn(x[i : i + 1].numpy() if e.numpy_input else x[i : i + 1]))[0] for i in range(len(x))]
        except Exception as err:  # noqa: BLE001 - one broken form must not lose the others' figures
            fail(e.model, f"{e.form} (top-1)", err)
            continue
        top1[id(e)] = 100.0 * float(np.mean(np.asarray(hits) == labels.numpy()))
    return top1
