"""The one list of forms `ghostnet bench` times (`FORMS`): each says whether it applies to a model in a run and
builds its timed callable. The run's plan (which forms each model gets, for the baseline check) and the callables
come from the same list.

PyTorch forms: ``eager``; BN folded + channels_last (``fused+cl``, or ``cl`` where a BN cannot be folded: only
known once folding has been tried, hence ``{cl}`` in the names), with `bf16` under bf16 autocast, on CUDA replayed
from a CUDA graph; ``compiled``. Every other runtime (`RUNTIMES`: ONNX Runtime and the edge runtimes of
`deploy.runtimes`) gives ``<label>-fp32`` and ``<label>-int8``: a file converted on the first call at an input
shape (a warm-up call, never a timed one) and loaded once. Ours and a Ghost pair's baseline ("full" models) get
every form; on a CPU the peers get eager, ORT fp32 and the edge runtimes' forms; on CUDA the PyTorch deploy forms.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..deploy.runtimes import RUNTIMES as EDGE
from ..deploy.runtimes import convert_quietly, require
from ..nn.surgery import fuse_bn
from .models import is_ghost_pair
from .setup import BenchSetup

ReportFailure = Callable[[str, str, Exception], None]  # (model, form, error): a form that could not be made or run


@dataclass
class Subject:
    """One model of a run, built once: what its forms are made from. `calibration`: (N, C, H, W) images for its
    int8 forms (None: photographs at the run's size)."""

    name: str
    model: nn.Module  # eval mode, on the run's device
    full: bool  # every deploy form (ours, a Ghost pair's baseline)
    in_chans: int = 3
    calibration: torch.Tensor | None = None

    @functools.cached_property
    def lean(self) -> tuple[nn.Module, str]:
        """The deploy model (BN folded, channels_last) and its form's name: ``fused+cl``, or ``cl`` unfolded."""
        try:
            return fuse_bn(self.model).to(memory_format=torch.channels_last), "fused+cl"
        except ValueError:  # a BN that no conv feeds directly (timm's BatchNormAct2d, say): time it unfolded
            return copy.deepcopy(self.model).to(memory_format=torch.channels_last), "cl"

    @functools.cached_property
    def exported(self) -> nn.Module:
        """What the other runtimes convert: a full model BN folded (as `ghostnet export --fuse`), a peer as it is."""
        return fuse_bn(self.model.cpu()) if self.full else self.model.cpu()

    def fp32(self, x: torch.Tensor) -> Any:
        return self.lean[0](x.contiguous(memory_format=torch.channels_last))


Make = Callable[[Subject, BenchSetup, Path], Callable[[Any], Any]]


@dataclass(frozen=True)
class Form:
    """One form: its name (``{cl}``: ``fused+cl`` or ``cl``), the runtime that runs it, whether it applies to a
    (full or peer) model in a run, and how it makes its callable (on a tensor, or an array for other runtimes)."""

    name: str
    runtime: str
    applies: Callable[[BenchSetup, bool], bool]
    make: Make
    numpy_input: bool = False

    def active(self, setup: BenchSetup, full: bool) -> bool:
        return self.runtime in setup.runtimes and self.applies(setup, full)

    def label(self, subject: Subject) -> str:
        return self.name.replace("{cl}", subject.lean[1]) if "{cl}" in self.name else self.name


@dataclass
class Timed:
    """One model in one form, ready to time."""

    model: str
    form: str
    fn: Callable[[Any], Any]
    macs: int
    numpy_input: bool = False
    in_chans: int = 3
    runtime: str = "torch"


class OnnxRuntime:
    """ONNX Runtime with an edge runtime's calls (`deploy.runtimes`): a file with a dynamic batch, int8 as
    `ghostnet quantize` makes it."""

    @staticmethod
    def convert(model: nn.Module, example: torch.Tensor, path: Path, calibration: list | None) -> None:
        from ..deploy.export import export_model
        from ..deploy.quantize import quantize_onnx

        fp32 = path if calibration is None else path.with_suffix(".fp32.onnx")
        export_model(model, fp32, "onnx", (example.shape[2], example.shape[3]), example.shape[1], dynamic_batch=True)
        if calibration is not None:
            quantize_onnx(fp32, path, [c.numpy() for c in calibration])

    @staticmethod
    def load(path: Path, threads: int) -> Callable[[np.ndarray], Any]:
        from ..deploy.export import onnx_session

        session = onnx_session(path, threads)
        return lambda a: session.run(None, {"input": a})


@dataclass(frozen=True)
class Runtime:
    """A runtime other than PyTorch, as the bench sees it: its forms' label, which models get an int8 form
    (``all``, ``full`` or none), its file suffix, whether that file takes any batch, and whether int8 is calibrated
    on photographs (else on random inputs, as `ghostnet bench` always did for ONNX Runtime) without a checkpoint."""

    name: str
    label: str
    int8: str
    suffix: str
    dynamic_batch: bool = False
    photos: bool = True

    def calibration(self, s: Subject, size: tuple[int, int]) -> list[torch.Tensor]:
        """(1, C, H, W) images that `s`'s int8 form in this runtime is calibrated on."""
        if s.calibration is not None:
            return list(s.calibration.split(1))
        if self.photos:
            return list(photo_calibration(size).split(1))
        return [
            torch.from_numpy(np.random.default_rng(i).standard_normal((1, s.in_chans, *size))).float() for i in range(4)
        ]

    def module(self) -> Any:
        """What converts and loads its files (`deploy.runtimes`' interface); an edge runtime imported here."""
        return OnnxRuntime if self.name == "ort" else require(self.name)


RUNTIMES = {
    "ort": Runtime("ort", "ort", "full", ".onnx", dynamic_batch=True, photos=False),
    **{n: Runtime(n, r.label, "all" if r.int8 else "", r.suffix) for n, r in EDGE.items()},
}
RUNTIME_NAMES = ("torch", *RUNTIMES)


def require_runtime(name: str) -> None:
    """Refuse an edge runtime that is not installed (naming the extra) in one line; torch and ort pass."""
    try:
        if name in EDGE:
            RUNTIMES[name].module()
    except ImportError as e:  # missing packages, or our module for the runtime
        raise ValueError(f"runtime {name} cannot be used: {(str(e).splitlines() or [''])[0]}") from e


def _runtime_form(rt: Runtime, kind: str) -> Form:
    """`rt`'s fp32 or int8 form (int8 calibrated on the subject's calibration images)."""

    def applies(setup: BenchSetup, full: bool) -> bool:
        return not setup.cuda and (kind == "fp32" or setup.int8 and rt.int8 in ("all", "full" if full else "all"))

    def make(s: Subject, setup: BenchSetup, tmp: Path) -> Callable[[Any], Any]:
        module = rt.module()
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", s.name)
        calibration = rt.calibration(s, setup.hw) if kind == "int8" else None

        def convert(shape: tuple[int, ...]) -> Callable[[np.ndarray], Any]:
            path = tmp / f"{stem}-{rt.label}-{kind}-b{shape[0]}{rt.suffix}"
            convert_quietly(module, s.exported, torch.zeros(shape), path, calibration)
            return module.load(path, setup.threads)

        return _per_shape(convert, rt.dynamic_batch)

    return Form(f"{rt.label}-{kind}", rt.name, applies, make, numpy_input=True)


def _per_shape(make: Callable[[tuple[int, ...]], Callable[[np.ndarray], Any]], any_batch: bool) -> Callable:
    """A callable on arrays that asks `make` for a runner the first time it sees a shape (any batch: only the
    first time), then reuses it. Both run outside torch's inference mode, which the timing loop is in:
    conversions export PyTorch graphs, and ExecuTorch aborts when it resizes its thread pool inside it."""
    runners: dict[tuple[int, ...], Callable[[np.ndarray], Any]] = {}

    def run(a: np.ndarray) -> Any:
        key = tuple(a.shape[1:] if any_batch else a.shape)
        with torch.inference_mode(False):
            if key not in runners:
                runners[key] = make(tuple(a.shape))
            return runners[key](np.ascontiguousarray(a, dtype=np.float32))

    return run


def _with_bf16(fn: Callable[[torch.Tensor], Any], setup: BenchSetup) -> Callable[[torch.Tensor], Any]:
    """`fn` under bf16 autocast (no weight-cast cache, so the form can also be captured in a CUDA graph)."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast("cuda" if setup.cuda else "cpu", dtype=torch.bfloat16, cache_enabled=False):
            return fn(x)

    return run


def _cuda_graphed(fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
    """`fn` captured once per input shape into a CUDA graph and replayed: one launch instead of one per kernel.
    The input is copied into the graph's static buffer and the graph's own output is returned, as a server does."""
    graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = {}

    def run(x: torch.Tensor) -> Any:
        if (key := tuple(x.shape)) not in graphs:
            static_x, side = x.clone(), torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
                for _ in range(3):
                    fn(static_x)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = fn(static_x)
            graphs[key] = (graph, static_x, static_y)
        graph, static_x, static_y = graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_y

    return run


def _compiled(s: Subject, setup: BenchSetup, tmp: Path) -> Callable[[Any], Any]:
    """The deploy model through `torch.compile` (on CUDA "reduce-overhead": kernels replayed from CUDA graphs)."""
    compiled = torch.compile(s.lean[0], mode="reduce-overhead" if setup.cuda else None)
    run = lambda x: compiled(x.contiguous(memory_format=torch.channels_last))  # noqa: E731
    return _with_bf16(run, setup) if setup.bf16 else run


def _deploy(setup: BenchSetup, full: bool) -> bool:
    return full or setup.cuda


FORMS: list[Form] = [
    Form("eager", "torch", lambda st, full: True, lambda s, st, tmp: s.model),
    Form("{cl}", "torch", _deploy, lambda s, st, tmp: s.fp32),
    Form(
        "{cl} bf16", "torch", lambda st, f: _deploy(st, f) and bool(st.bf16), lambda s, st, tmp: _with_bf16(s.fp32, st)
    ),
    Form("{cl} graph", "torch", lambda st, f: st.cuda and not st.bf16, lambda s, st, tmp: _cuda_graphed(s.fp32)),
    Form(
        "{cl} bf16 graph",
        "torch",
        lambda st, f: st.cuda and bool(st.bf16),
        lambda s, st, tmp: _cuda_graphed(_with_bf16(s.fp32, st)),
    ),
    Form("compiled", "torch", lambda st, f: _deploy(st, f) and st.compile and not st.bf16, _compiled),
    Form("compiled bf16", "torch", lambda st, f: _deploy(st, f) and st.compile and bool(st.bf16), _compiled),
    *[_runtime_form(rt, kind) for rt in RUNTIMES.values() for kind in ("fp32", "int8")],
]


def is_full(setup: BenchSetup, model: str) -> bool:
    """Whether `model` gets every deploy form: ours, or the baseline of a Ghost pair."""
    return model in setup.ours or is_ghost_pair(setup.model_name)


def plan(setup: BenchSetup, models: list[str]) -> dict[str, set[str]]:
    """Model -> the form names this run will time for it (both ``fused+cl`` and ``cl`` names are listed, since
    which one a model gets is known only once its BN folding has been tried)."""
    return {
        m: {f.name.replace("{cl}", b) for f in FORMS if f.active(setup, is_full(setup, m)) for b in ("fused+cl", "cl")}
        for m in models
    }


def build_forms(s: Subject, setup: BenchSetup, tmp: Path, fail: ReportFailure, macs: int) -> list[Timed]:
    """`s`'s active forms, ready to time (other runtimes' files go under `tmp`); one that cannot be made is
    reported to `fail` and left out."""
    timed = []
    for form in (f for f in FORMS if f.active(setup, s.full)):
        try:
            fn = form.make(s, setup, tmp)
            timed.append(Timed(s.name, form.label(s), fn, macs, form.numpy_input, s.in_chans, form.runtime))
        except Exception as e:  # noqa: BLE001 - a compiler missing must not end the run
            fail(s.name, form.name, e)
    return timed


@functools.lru_cache(maxsize=4)
def photo_calibration(size: tuple[int, int], count: int = 16, seed: int = 0) -> torch.Tensor:
    """`count` crops of scikit-learn's two bundled photographs at (H, W), ImageNet-normalised: (N, 3, H, W). Real
    images give int8 activation ranges like a deployed model's; random noise gives meaningless accuracy."""
    from ..data import IMAGENET_MEAN, IMAGENET_STD
    from ..data.synth import random_background, sample_backgrounds

    photos, rng = sample_backgrounds(), np.random.default_rng(seed)
    h, w = size
    crops = [random_background(photos, max(h, w), rng)[:h, :w] for _ in range(count)]  # (H, W, 3) in [0, 1]
    x = torch.from_numpy(np.stack(crops).astype(np.float32)).permute(0, 3, 1, 2)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
