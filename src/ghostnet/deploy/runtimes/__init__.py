"""The edge runtimes a model is exported to and timed in: OpenVINO, ExecuTorch (XNNPACK), LiteRT and ncnn.

Each runtime is one module here, installed through its own extra, with the same four calls:

    convert(model, example, path, calibration)  # write the runtime's file at `path`; int8 when `calibration`
                                                # (a list of (1, C, H, W) real images, preprocessed) is given
    load(path, threads) -> run                  # the runtime's own interpreter: run(NCHW float32 array) -> [arrays]
    files(path) -> [Path, ...]                  # every file the export consists of (OpenVINO's .xml has a .bin)
    notes(path) -> [str, ...]                   # what the written file holds: precision, delegation, layers

A runtime with a `Runtime.no_int8` reason (ncnn: its quantization tools are not on PyPI) refuses calibration.

`require(name)` imports one of them, or says in one line which extra to install; `convert_quietly` is how
callers convert: the converters print progress bars and notes, which go to stderr, never into a command's own
output on stdout (`ghostnet bench --json`). `export_failure` reads a torch.export refusal into one line for the
runtimes that capture models with it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

__all__ = [
    "RUNTIMES",
    "Runtime",
    "MissingRuntimeError",
    "require",
    "installed",
    "stacked",
    "convert_quietly",
    "nearest_sources",
    "export_failure",
]


@dataclass(frozen=True)
class Runtime:
    """One edge runtime: its name (the ``--format`` / ``--runtimes`` value), the extra that installs it, the
    import names it needs, the suffix of its file, the short label of its forms in `ghostnet bench`, the module
    here that speaks to it, and why it cannot write int8 files (empty when it can)."""

    name: str
    extra: str
    imports: tuple[str, ...]
    suffix: str
    label: str
    module: str
    no_int8: str = ""

    @property
    def int8(self) -> bool:
        """Whether this runtime writes int8 files."""
        return not self.no_int8


_NCNN_NO_INT8 = (
    "ncnn's int8 needs its ncnn2table and ncnn2int8 tools, which no Python package ships; export float32 and "
    "quantize the .param/.bin with those tools from an ncnn build"
)

RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("openvino", "openvino", ("openvino", "nncf"), ".xml", "ov", "openvino"),
        Runtime("executorch", "executorch", ("executorch",), ".pte", "et", "executorch"),
        Runtime("tflite", "litert", ("litert_torch", "ai_edge_litert"), ".tflite", "tflite", "litert"),
        Runtime("ncnn", "ncnn", ("ncnn", "pnnx"), ".ncnn.param", "ncnn", "ncnn", no_int8=_NCNN_NO_INT8),
    )
}


class MissingRuntimeError(ValueError):
    """A runtime whose Python packages are not installed."""


def installed(name: str) -> bool:
    """Whether every package runtime `name` needs can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in RUNTIMES[name].imports)


def require(name: str) -> ModuleType:
    """The module of runtime `name` (see this package's docstring); refuses an unknown name or a runtime that is
    not installed, naming the extra that installs it."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    spec = RUNTIMES[name]
    if not installed(name):
        missing = [m for m in spec.imports if importlib.util.find_spec(m) is None]
        raise MissingRuntimeError(
            f"{name} needs {', '.join(missing)}, which is not installed: pip install 'ghostnet-pytorch[{spec.extra}]'"
        )
    return importlib.import_module(f"{__name__}.{spec.module}")


def stacked(images: list[torch.Tensor], batch: int) -> Iterator[torch.Tensor]:
    """The (1, C, H, W) `images` stacked `batch` at a time, for a file whose input has a static batch; the last
    batch is filled from the start again, so every image is seen at least once."""
    for start in range(0, len(images), batch):
        yield torch.cat([images[(start + k) % len(images)] for k in range(batch)])


def convert_quietly(
    backend: ModuleType, model: torch.nn.Module, example: torch.Tensor, path: Path, calibration: list | None
) -> None:
    """`backend.convert(model, example, path, calibration)`, with whatever it prints (NNCF's progress bars, the
    quantizers' notes) sent to stderr, and every tensor made contiguous first: torch.export records a
    channels-last example's memory layout, and an ExecuTorch program exported from one reads the plain NCHW
    arrays it is given as channels-last, silently."""
    example = example.contiguous()
    calibration = None if calibration is None else [c.contiguous() for c in calibration]
    with contextlib.redirect_stdout(sys.stderr), torch.no_grad():
        backend.convert(model, example, path, calibration)


def nearest_sources(
    shape: tuple[int, ...], op: Callable, args: tuple, kwargs: dict | None = None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The source row of each output row and the source column of each output column of nearest upsampling
    `op(x, *args, **kwargs)` on an (N, C, H, W) input: PyTorch's own operator applied to index ramps. Both
    ExecuTorch and LiteRT rewrite nearest upsampling from these, so the copy is exactly PyTorch's."""
    h, w = shape[-2:]
    ramp_h = torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w)
    ramp_w = torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w)
    rows = op(ramp_h.contiguous(), *args, **(kwargs or {}))[0, 0, :, 0]
    cols = op(ramp_w.contiguous(), *args, **(kwargs or {}))[0, 0, 0, :]
    return tuple(int(i) for i in rows), tuple(int(j) for j in cols)


def export_failure(message: str) -> str:
    """One line from a torch.export error: data-dependent control flow with its source line, or the error's
    first line."""
    site = re.search(r'File "([^"]+)", line (\d+), in \w+\n\s+(.+)', message)
    where = f" at {Path(site[1]).name}:{site[2]}: {site[3].strip()}" if site else ""
    if "data-dependent" in message:
        return f"data-dependent control flow{where} (torch.export cannot capture it)"
    first = message.strip().splitlines()[0] if message.strip() else "torch.export failed"
    return f"{first[:200]}{where} (torch.export)"
