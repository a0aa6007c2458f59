"""`ghostnet bench --runtimes`: which runtimes a run times, and the forms of one model in each CPU runtime.

``torch`` gives the PyTorch forms (`bench_forms.torch_forms`), ``ort`` ONNX Runtime's (`bench_forms.onnx_forms`),
and each edge runtime of `runtimes.RUNTIMES` (OpenVINO, ExecuTorch, LiteRT, ncnn) two forms, ``<label>-fp32`` and
``<label>-int8`` (ncnn only the first: it has no int8 from Python), for our model and every peer. An edge
runtime's file has a static input shape, so each form is converted and loaded once per input shape, on its first
call at that shape (a warm-up call, never a timed one), and the loaded runner is kept for the rest of the run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn.surgery import fuse_bn
from .bench_forms import ReportFailure, TimedForm, onnx_forms
from .runtimes import RUNTIMES, convert_quietly, require

__all__ = [
    "RUNTIME_NAMES",
    "DEFAULT_RUNTIMES",
    "RuntimeForms",
    "resolve_runtimes",
    "edge_form_names",
    "edge_forms",
    "cpu_runtime_entries",
    "photo_calibration",
]

RUNTIME_NAMES = ("torch", "ort", *RUNTIMES)
DEFAULT_RUNTIMES = ("torch", "ort")


def resolve_runtimes(runtimes: str | Iterable[str] | None, onnx: bool = True) -> tuple[str, ...]:
    """The runtimes a run times, in the order given, from a comma-separated string or a list (default
    ``torch,ort``; without `onnx`, ``ort`` is left out). Refuses an unknown name, or an edge runtime that is not
    installed (naming the extra that installs it), before any work is done."""
    if runtimes is None:
        names = list(DEFAULT_RUNTIMES)
    else:
        parts = runtimes.split(",") if isinstance(runtimes, str) else list(runtimes)
        names = list(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not names:
        raise ValueError(f"runtimes: name at least one of {', '.join(RUNTIME_NAMES)}")
    if unknown := [n for n in names if n not in RUNTIME_NAMES]:
        raise ValueError(f"unknown runtime {', '.join(map(repr, unknown))}; choose from {', '.join(RUNTIME_NAMES)}")
    for name in names:
        if name in RUNTIMES:
            try:
                require(name)
            except ImportError as e:  # the runtime's packages are there but our module for it is not
                raise ValueError(f"runtime {name} cannot be used: {(str(e).splitlines() or [''])[0]}") from e
    return tuple(n for n in names if onnx or n != "ort")


def edge_form_names(runtimes: Iterable[str], int8: bool) -> set[str]:
    """The form names the edge runtimes among `runtimes` give each model (ours and peers alike)."""
    return {f"{RUNTIMES[r].label}-{k}" for r in runtimes if r in RUNTIMES for k in _kinds(r, int8)}


def _kinds(runtime: str, int8: bool) -> tuple[str, ...]:
    """The precisions edge runtime `runtime` is timed in: fp32, and int8 when asked for and the runtime has it."""
    return ("fp32", "int8") if int8 and RUNTIMES[runtime].int8 else ("fp32",)


@dataclass
class RuntimeForms:
    """What the CPU runtimes' forms of one model need: the runtimes, where their files go, threads, whether to
    make int8 forms, and whether ours comes from a trained checkpoint (then its ONNX Runtime int8 form is
    calibrated on the checkpoint's training images too, not on random inputs as `ghostnet bench` does without)."""

    runtimes: tuple[str, ...]
    tmp: Path
    size: tuple[int, int]  # (H, W)
    threads: int
    int8: bool
    fail: ReportFailure
    checkpoint: bool = False


def cpu_runtime_entries(
    name: str,
    model: nn.Module,
    ours: bool,
    macs: int,
    in_chans: int,
    calibration: torch.Tensor | None,
    rf: RuntimeForms,
) -> list[TimedForm]:
    """`model`'s forms in ONNX Runtime and each edge runtime of ``rf.runtimes``, ready to time (numpy input).

    Ours is converted in its inference form, BN folded (as the ONNX Runtime form is); peers as they are. Every
    edge int8 form is calibrated on `calibration` ((N, C, H, W) images, preprocessed as the model's input); ours'
    ONNX Runtime int8 form too when ``rf.checkpoint``, else on random inputs."""
    entries: list[TimedForm] = []
    if "ort" in rf.runtimes:
        real = None
        if ours and rf.checkpoint and calibration is not None:
            real = [calibration[i : i + 1].numpy() for i in range(len(calibration))]
        forms = onnx_forms(
            name,
            model,
            ours,
            rf.tmp,
            size=rf.size,
            threads=rf.threads,
            int8=rf.int8,
            fail=rf.fail,
            in_chans=in_chans,
            calibration=real,
        )
        entries += [TimedForm(name, f, fn, macs, True, in_chans, "ort") for f, fn in forms.items()]
    deploy = model.cpu()
    if ours:
        try:
            deploy = fuse_bn(deploy)
        except ValueError as e:  # every edge form of ours would be an unfolded model: say so, do not time it
            rf.fail(name, "edge runtimes", e)
            return entries
    for runtime in (r for r in rf.runtimes if r in RUNTIMES):
        forms = edge_forms(name, deploy, runtime, rf, calibration)
        entries += [TimedForm(name, f, fn, macs, True, in_chans, runtime) for f, fn in forms.items()]
    return entries


def edge_forms(
    name: str, model: nn.Module, runtime: str, rf: RuntimeForms, calibration: torch.Tensor | None
) -> dict[str, Callable[[np.ndarray], Any]]:
    """`model` in edge runtime `runtime`: ``<label>-fp32``, and ``<label>-int8`` calibrated on `calibration` if
    ``rf.int8`` and the runtime has int8; each a callable on an NCHW array that converts and loads the model at
    that array's shape on its first call there (files under ``rf.tmp``). A conversion that fails raises from that
    call, so the timing loop records it under "failed" and goes on."""
    spec = RUNTIMES[runtime]
    module = require(runtime)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name)

    def maker(kind: str) -> Callable[[tuple[int, ...]], Callable[[np.ndarray], Any]]:
        def make(shape: tuple[int, ...]) -> Callable[[np.ndarray], Any]:
            path = rf.tmp / f"{stem}-{spec.label}-{kind}-b{shape[0]}{spec.suffix}"
            example = torch.zeros(shape)
            calib = list(calibration.split(1)) if kind == "int8" and calibration is not None else None
            convert_quietly(module, model, example, path, calib)
            return module.load(path, rf.threads)

        return make

    kinds = _kinds(runtime, rf.int8 and calibration is not None)
    return {f"{spec.label}-{kind}": _per_shape(maker(kind)) for kind in kinds}


def _per_shape(make: Callable[[tuple[int, ...]], Callable[[np.ndarray], Any]]) -> Callable[[np.ndarray], Any]:
    """A callable on arrays that asks `make` for a runner the first time it sees a shape, then reuses it.

    Both run outside torch's inference mode, which the timing loop is in: conversions export and calibrate
    PyTorch graphs, and ExecuTorch's runtime aborts the process when it resizes its thread pool inside it."""
    runners: dict[tuple[int, ...], Callable[[np.ndarray], Any]] = {}

    def run(a: np.ndarray) -> Any:
        key = tuple(a.shape)
        with torch.inference_mode(False):
            if key not in runners:
                runners[key] = make(key)
            return runners[key](np.ascontiguousarray(a, dtype=np.float32))

    return run


def photo_calibration(size: tuple[int, int], count: int = 16, seed: int = 0) -> torch.Tensor:
    """`count` crops of scikit-learn's two bundled photographs at (H, W), ImageNet-normalised: (N, 3, H, W).

    Real images give int8 activation ranges like a deployed model's; random noise gives a valid timing but
    meaningless accuracy."""
    from ..data import IMAGENET_MEAN, IMAGENET_STD
    from ..data.synth import random_background, sample_backgrounds

    photos, rng = sample_backgrounds(), np.random.default_rng(seed)
    h, w = size
    crops = [random_background(photos, max(h, w), rng)[:h, :w] for _ in range(count)]  # (H, W, 3) in [0, 1]
    x = torch.from_numpy(np.stack(crops).astype(np.float32)).permute(0, 3, 1, 2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
