"""The edge runtimes a model is exported to and timed in: OpenVINO, ExecuTorch (XNNPACK) and LiteRT.

Each runtime is one module here, installed through its own extra, with the same three calls:

    convert(model, example, path, calibration)  # write the runtime's file at `path`; int8 when `calibration`
                                                # (a list of NCHW float batches of real images) is given
    load(path, threads) -> run                  # the runtime's own interpreter: run(NCHW float32 array) -> [arrays]
    files(path) -> [Path, ...]                  # every file the export consists of (OpenVINO's .xml has a .bin)

`require(name)` imports one of them, or says in one line which extra to install.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from types import ModuleType

__all__ = ["RUNTIMES", "Runtime", "MissingRuntimeError", "require", "installed"]


@dataclass(frozen=True)
class Runtime:
    """One edge runtime: its name (the ``--format`` / ``--runtimes`` value), the extra that installs it, the
    import names it needs, the suffix of its file, and the short label of its forms in `ghostnet bench`."""

    name: str
    extra: str
    imports: tuple[str, ...]
    suffix: str
    label: str


RUNTIMES: dict[str, Runtime] = {
    r.name: r
    for r in (
        Runtime("openvino", "openvino", ("openvino", "nncf"), ".xml", "ov"),
        Runtime("executorch", "executorch", ("executorch",), ".pte", "et"),
        Runtime("tflite", "litert", ("litert_torch", "ai_edge_litert"), ".tflite", "tflite"),
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
    return importlib.import_module(f"{__name__}.{name}")
