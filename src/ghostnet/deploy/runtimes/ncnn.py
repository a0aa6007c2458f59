"""ncnn: a model as an ncnn graph (``.ncnn.param``) and its weights (``.ncnn.bin``), converted by pnnx.

How it converts: ``torch.jit.trace`` at `example`'s shape gives the TorchScript pnnx reads; the ``pnnx``
executable (shipped in the ``pnnx`` wheel) turns it into ncnn's pair in a scratch folder, and the pair is moved to
`path`. The names are pnnx's own, and keep an OpenVINO IR's ``.bin`` of the same stem apart. The input layer
records the traced shape, which `load` holds every input to. `load` runs the pair in ncnn's own CPU kernels
through its Python bindings.

Traps it handles:

- pnnx stores weights as fp16 by default (``fp16=1``): errors near 1e-3 on logits of order 1. It is run with
  ``fp16=0``.
- ncnn computes in fp16 by default where the CPU can (``use_fp16_storage``, ``use_fp16_arithmetic``,
  ``use_fp16_packed``; bf16 storage is off by default): another 1e-3. `load` turns all four off, so the file runs
  as written.
- ncnn has no batch axis: the file takes one (C, H, W) image, and `load`'s runner takes an (N, C, H, W) array
  and runs its images one after another, as ncnn applications do.
- A Mat made from a numpy array borrows its memory, and a layer working in place on the input blob (``x + 1``
  as an output) crashed the process; `load` hands ncnn its own copy of each image.
- pnnx turns a list of outputs (a detection backbone's feature maps) into an expression ncnn has no layer for;
  the model's list is given to it as a tuple, which becomes one output blob per map.
- ``torch.jit.trace`` keeps only the branch the example took through data-dependent control flow; torch.export
  captures the model first and refuses such a model, naming the line.
- An op pnnx has no ncnn layer for stays in the graph under a ``pnnx.``/``torch.``-style name, and ncnn would
  refuse the file only when loading it; `convert` checks every layer type against ncnn's registry and names
  the ones it lacks.
- int8 needs ncnn's ``ncnn2table`` and ``ncnn2int8`` tools, which no wheel ships: this runtime is fp32 only
  (`RUNTIMES["ncnn"].no_int8` says why) and `convert` refuses calibration images.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import RUNTIMES, export_failure

__all__ = ["convert", "load", "files", "notes"]

_MAGIC = "7767517"  # the first line of every ncnn .param text file
# ncnn's options that would run an fp32 file in fp16 or bf16
_REDUCED_PRECISION = ("use_fp16_storage", "use_fp16_arithmetic", "use_fp16_packed", "use_bf16_storage")


def convert(model: nn.Module, example: torch.Tensor, path: Path, calibration: list[torch.Tensor] | None) -> None:
    """Write `model` as an ncnn graph at `path` (``NAME.ncnn.param``, its ``NAME.ncnn.bin`` beside it), fp32,
    taking one image of `example`'s (C, H, W).

    Raises:
        ValueError: calibration images (ncnn int8 is not available from Python), data-dependent control flow,
            a failed pnnx conversion, or layers ncnn does not have, each named.
    """
    if calibration is not None:
        raise ValueError(RUNTIMES["ncnn"].no_int8)
    image = example[:1].contiguous()
    with tempfile.TemporaryDirectory(prefix=".pnnx.", dir=path.parent) as tmp:
        scratch = Path(tmp)
        _trace(_TupleOut(model), image).save(str(scratch / "model.pt"))
        _run_pnnx(scratch, image.shape)
        graph = (scratch / "model.ncnn.param").read_text()
        _check_layers(graph)
        path.write_text(_with_input_shape(graph, tuple(image.shape[1:])))
        shutil.move(scratch / "model.ncnn.bin", path.with_suffix(".bin"))


class _TupleOut(nn.Module):
    """`model` with a list of outputs given as a tuple: pnnx makes a list into an expression ncnn cannot run."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        y = self.model(x)
        return tuple(y) if isinstance(y, list) else y


def _trace(model: nn.Module, image: torch.Tensor) -> torch.jit.ScriptModule:
    """`model` traced on `image`, after torch.export has captured it: a trace silently keeps only the branch the
    example took through data-dependent control flow, which torch.export refuses. Branches on shapes (warned
    about by the tracer) are constants here, as the file takes this one shape."""
    try:
        torch.export.export(model, (image,))
    except Exception as e:  # torch.export raises several unrelated types (Unsupported, UserError, ...)
        raise ValueError(f"ncnn cannot convert this model: {export_failure(str(e))}") from e
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.trace's deprecation: pnnx reads nothing else
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(model, image, check_trace=False)


def _run_pnnx(scratch: Path, shape: torch.Size) -> None:
    """pnnx on ``model.pt`` in `scratch`, every file it writes kept there; its log is shown only if it fails."""
    import pnnx

    dims = ",".join(str(d) for d in shape)
    command = [pnnx.EXEC_PATH, "model.pt", f"inputshape=[{dims}]f32", "fp16=0", "device=cpu", "optlevel=2"]
    done = subprocess.run(command, cwd=scratch, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (scratch / "model.ncnn.param").is_file():
        log = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        raise ValueError(f"ncnn cannot convert this model: pnnx failed: {log[-1] if log else done.returncode}")


def _read_graph(text: str) -> list[tuple[str, str, list[str], list[str]]]:
    """The layers of an ncnn ``.param`` text: (type, name, input blobs, output blobs) in file order."""
    layers = []
    for line in text.splitlines()[2:]:  # the magic number, then the layer and blob counts
        parts = line.split()
        if len(parts) < 4:
            continue
        kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
        layers.append((kind, name, parts[4 : 4 + n_in], parts[4 + n_in : 4 + n_in + n_out]))
    return layers


def _check_layers(text: str) -> None:
    """Refuse a graph with layer types ncnn has no implementation of, naming them with their counts."""
    import ncnn

    unknown = Counter(kind for kind, *_ in _read_graph(text) if ncnn.layer_to_index(kind) < 0)
    if unknown:
        ops = ", ".join(f"{kind} (x{n})" for kind, n in sorted(unknown.items()))
        raise ValueError(f"ncnn cannot convert this model: no ncnn layer for {ops}")


def _with_input_shape(text: str, chw: tuple[int, ...]) -> str:
    """`text` with the shape of its input recorded on the Input layer (ncnn's ``0=w 1=h 2=c``)."""
    if len(chw) != 3:
        raise ValueError(f"ncnn exports here take (N, C, H, W) images; got an input of shape (N, {chw})")
    c, h, w = chw
    params = f"0={w} 1={h} 2={c}"
    return re.sub(r"^(Input\s+\S+\s+0 1 \S+).*$", rf"\1 {params}", text, count=1, flags=re.M)


def _io_shape(text: str) -> tuple[str, tuple[int, ...], list[str]]:
    """The input blob, its (C, H, W) as recorded by `convert`, and the output blobs (``out0``, ``out1``...)."""
    layers = _read_graph(text)
    inputs = [line for line in layers if line[0] == "Input"]
    if len(inputs) != 1:
        raise ValueError(f"an ncnn graph with one input was expected; this one has {len(inputs)}")
    found = re.search(r"^Input\s+\S+\s+0 1 \S+((?:\s+\d=-?\d+)*)\s*$", text, flags=re.M)
    params = dict(p.split("=") for p in found[1].split()) if found else {}
    dims = tuple(int(params[k]) for k in ("2", "1", "0") if k in params)
    produced = {blob for *_, outs in layers for blob in outs}
    outputs = sorted((b for b in produced if re.fullmatch(r"out\d+", b)), key=lambda b: int(b[3:]))
    return inputs[0][3][0], dims, outputs


def load(path: Path, threads: int | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """ncnn's CPU kernels on the pair at `path`, in fp32, with `threads` threads (default ncnn's choice): a
    function from an (N, C, H, W) float32 array to the list of outputs, each with its batch axis restored."""
    import ncnn

    text = path.read_text()
    if not text.startswith(_MAGIC):
        raise ValueError(f"{path.name} is not an ncnn .param file (it does not start with {_MAGIC})")
    blob_in, chw, blobs_out = _io_shape(text)
    net = ncnn.Net()
    for option in _REDUCED_PRECISION:
        setattr(net.opt, option, False)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1; got {threads}")
        net.opt.num_threads = threads
    if net.load_param(str(path)) != 0 or net.load_model(str(path.with_suffix(".bin"))) != 0:
        raise ValueError(f"ncnn could not load {path.name} and its .bin")

    def one(image: np.ndarray) -> list[np.ndarray]:
        extractor = net.create_extractor()
        extractor.input(blob_in, ncnn.Mat(image).clone())  # ncnn-owned: in-place layers write into their input
        outs = []
        for blob in blobs_out:
            status, mat = extractor.extract(blob)
            if status != 0:
                raise RuntimeError(f"ncnn failed to compute {blob} of {path.name}")
            outs.append(np.array(mat, dtype=np.float32))
        return outs

    def run(x: np.ndarray) -> list[np.ndarray]:
        if chw and tuple(x.shape[1:]) != chw:
            raise ValueError(f"{path.name} takes inputs of shape (N, {', '.join(map(str, chw))}); got {x.shape}")
        per_image = [one(np.ascontiguousarray(image, dtype=np.float32)) for image in x]
        return [np.stack(outs) for outs in zip(*per_image)]

    return run


def files(path: Path) -> list[Path]:
    """The graph (`path`, ``NAME.ncnn.param``) and its weights (``NAME.ncnn.bin``)."""
    return [path, path.with_suffix(".bin")]


def notes(path: Path) -> list[str]:
    """The input shape, the precision it runs in, and its layer types with counts."""
    text = path.read_text()
    _, chw, _ = _io_shape(text)
    kinds = Counter(kind for kind, *_ in _read_graph(text) if kind not in ("Input", "Split"))
    common = ", ".join(f"{kind} (x{n})" for kind, n in kinds.most_common(6))
    return [
        f"input {'x'.join(map(str, chw))} per image (ncnn has no batch axis: a batch runs image by image)",
        "weights fp32, run with fp16/bf16 storage and arithmetic off",
        f"{sum(kinds.values())} layers: {common}{', ...' if len(kinds) > 6 else ''}",
    ]
