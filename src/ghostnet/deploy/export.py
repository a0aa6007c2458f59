"""The inference form of a model and its exports: BN folding, ONNX / ONNX Runtime, TorchScript, ExportedProgram.

fused = fuse_bn(model.eval())               # every BatchNorm folded into the conv before it
export_model(fused, "m.onnx", "onnx", input_size=(224, 224), dynamic_batch=True)   # validated in ORT
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ..models.files import CheckpointWriteError, interrupted, space_note, write_failure_reason
from ..nn.surgery import fuse_bn

__all__ = [
    "default_suffix",
    "written_whole",
    "fuse_bn",
    "prepare_inference",
    "export_model",
    "ExportReport",
    "ExportWriteError",
    "FORMATS",
    "onnx_session",
    "max_abs_diff",
    "check_parity",
    "check_output_path",
    "export_write_failure",
]

FORMATS = ("onnx", "torchscript", "exported-program")
_SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}


def default_suffix(fmt: str) -> str:
    return _SUFFIX[fmt]


def prepare_inference(
    model: nn.Module, fuse: bool = True, channels_last: bool = False, compile: bool = False
) -> nn.Module:
    """The fast inference form: eval, BN folded, optionally NHWC memory format and ``torch.compile``."""
    model = model.eval()
    if fuse:
        model = fuse_bn(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if compile:
        model = cast(nn.Module, torch.compile(model))  # an OptimizedModule, which torch types as a callable
    return model


class ExportWriteError(CheckpointWriteError):
    """An export could not be written (disk full, I/O error); the partial file was removed."""


@dataclass
class ExportReport:
    """What `export_model` wrote and how it checked it."""

    path: str
    format: str
    size_bytes: int
    input_names: list[str]
    output_names: list[str]
    max_abs_diff: float  # against the PyTorch model, on the check input (and a second batch size if dynamic)
    opset: int | None = None
    dynamic_batch: bool = False
    checks: list[str] = field(default_factory=list)
    input_shape: list[int | str] = field(default_factory=list)  # the input the file takes; a name for a free dim

    def describe_input(self) -> str:
        """The input shape as a user reads it, e.g. ``1x3x224x224`` or ``batch x 3x224x224 (any batch)``."""
        if not self.input_shape:
            return "?"
        dims = "x".join(str(d) for d in self.input_shape)
        free = [d for d in self.input_shape if isinstance(d, str)]
        return f"{dims} (any {' and '.join(free)})" if free else f"{dims} (fixed)"


def max_abs_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between two outputs (tensors/arrays or lists of them)."""
    if isinstance(a, (list, tuple)):
        return max(max_abs_diff(x, y) for x, y in zip(a, b, strict=True))
    a = torch.as_tensor(a).float()
    b = torch.as_tensor(b).float()
    if a.shape != b.shape:
        return float("inf")
    return float((a - b).abs().max())


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session (threads pinned when given)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """`path` as a Path, if its folder exists and it does not (or `force`: an export then replaces it whole)."""
    path = Path(path)
    if path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to replace it, or choose another --output")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    return path


def remove_partial(tmp: Path) -> None:
    """Delete a temporary export (and ONNX's external-data file beside it), if left behind."""
    for p in (tmp, tmp.with_name(tmp.name + ".data")):
        if p.exists():
            p.unlink()


def onnx_opset(proto: Any, default: int) -> int:
    """The default-domain opset an ONNX model declares."""
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default)


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    fmt: str = "onnx",
    input_size: tuple[int, int] = (224, 224),
    in_chans: int = 3,
    dynamic_batch: bool = False,
    opset: int = 18,
    tolerance: float = 1e-4,
    force: bool = False,
) -> ExportReport:
    """Export `model` (in eval mode) to `path` and check the file against PyTorch.

    Args:
        model: the model (fused or not).
        path: the output file; its folder must exist, and the file must not unless `force`.
        fmt: ``onnx``, ``torchscript`` or ``exported-program``.
        input_size: (H, W) of the example input.
        dynamic_batch: allow any batch size (checked with two batch sizes); without it the file takes batch 1.
        opset: ONNX opset.
        tolerance: largest allowed difference of the outputs: absolute, or relative to the largest output
            where that exceeds 1 (untrained weights can give logits of 1e6).

    Raises:
        ValueError: unknown format, unwritable path, or the exported file disagrees with PyTorch.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path = check_output_path(path, force)
    model = model.eval()
    # A fixed export takes one image (what a deployed model is called with); a dynamic one is traced at 2
    # (a size-1 dimension would be specialised) and checked at 2 and 3.
    x = torch.randn(2 if dynamic_batch else 1, in_chans, *input_size)
    batches = [x, torch.randn(3, in_chans, *input_size)] if dynamic_batch else [x]
    with torch.no_grad():
        refs = [model(b) for b in batches]
    multi = isinstance(refs[0], (list, tuple))
    single = "embedding" if getattr(model, "embedding_size", None) else "logits"  # face models give embeddings
    output_names = [f"features_{i}" for i in range(len(refs[0]))] if multi else [single]
    tmp = path.with_name(f".{path.stem}.tmp{_SUFFIX[fmt]}")  # torch.export insists on .pt2
    with written_whole(tmp, path, model):
        if fmt == "onnx":
            report = _export_onnx(model, x, tmp, output_names, dynamic_batch, opset, batches)
        elif fmt == "torchscript":
            report = _export_torchscript(model, tmp, output_names, batches, refs)
        else:
            report = _export_program(model, tmp, output_names, dynamic_batch, batches, refs)
        check_parity(report.max_abs_diff, tolerance, refs)
    report.path, report.size_bytes, report.dynamic_batch = str(path), path.stat().st_size, dynamic_batch
    report.input_shape = ["batch" if dynamic_batch else 1, in_chans, *input_size]
    return report


@contextmanager
def written_whole(tmp: Path, path: Path, model: nn.Module) -> Iterator[None]:
    """The block writes and checks `tmp`; then it becomes `path`. A failure removes it (and ONNX's data file
    beside it); a full disk or Ctrl-C is turned into one line (`export_write_failure`)."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException as e:
        remove_partial(tmp)
        failure = export_write_failure(e, path, model)
        if failure is None:
            raise
        raise failure from None
    finally:
        remove_partial(tmp)


def export_write_failure(e: BaseException, path: Path, model: nn.Module) -> BaseException | None:
    """The one-line error for an export that could not be written or was interrupted; None for other errors."""
    if interrupted(e):
        return KeyboardInterrupt(f"while writing {path}; nothing was written")
    reason = write_failure_reason(e)
    if reason is None:
        return None
    weights = lambda: sum(t.numel() * t.element_size() for t in model.state_dict().values())  # noqa: E731
    return ExportWriteError(
        f"could not write {path}: {reason}; {space_note(path.parent, weights)}; the partial file was removed"
    )


def _export_torchscript(
    model: nn.Module, tmp: Path, output_names: list[str], batches: list[torch.Tensor], refs: list[Any]
) -> ExportReport:
    """Trace `model` on the first of `batches` to TorchScript at `tmp`, load it back and compare it with `refs`."""
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices; tracing still works
        traced = torch.jit.trace(model, batches[0], check_trace=False)
        traced.save(str(tmp))
        loaded = torch.jit.load(str(tmp))
        outs = [loaded(b) for b in batches]
    diff = max(max_abs_diff(r, o) for r, o in zip(refs, outs))
    return ExportReport(str(tmp), "torchscript", 0, ["input"], output_names, diff, checks=["torch.jit.load"])


def _export_program(
    model: nn.Module,
    tmp: Path,
    output_names: list[str],
    dynamic_batch: bool,
    batches: list[torch.Tensor],
    refs: list[Any],
) -> ExportReport:
    """`model` through `torch.export` (batch dimension dynamic if asked) saved at `tmp`, loaded back and compared
    with `refs`."""
    dims = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    ep = torch.export.export(model, (batches[0],), dynamic_shapes=dims)
    torch.export.save(ep, str(tmp))
    loaded = torch.export.load(str(tmp)).module()
    with torch.no_grad():
        outs = [loaded(b) for b in batches]
    diff = max(max_abs_diff(r, o) for r, o in zip(refs, outs))
    return ExportReport(str(tmp), "exported-program", 0, ["input"], output_names, diff, checks=["torch.export.load"])


def _export_onnx(model, x, tmp: Path, output_names, dynamic_batch: bool, opset: int, batches) -> ExportReport:
    import warnings

    import onnx

    dynamic_axes = {"input": {0: "batch"}, **{n: {0: "batch"} for n in output_names}} if dynamic_batch else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter's notice
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape tests in forward (the DFC gate's) are fixed
        torch.onnx.export(
            model,
            (x,),
            str(tmp),
            input_names=["input"],
            output_names=output_names,
            opset_version=opset,
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    proto = onnx.load(str(tmp))
    onnx.checker.check_model(proto)
    sess = onnx_session(tmp)
    with torch.no_grad():
        refs = [model(b) for b in batches]
    diff = 0.0
    for b, ref in zip(batches, refs):
        outs = sess.run(None, {"input": b.numpy()})
        diff = max(diff, max_abs_diff(ref if isinstance(ref, (list, tuple)) else [ref], outs))
    return ExportReport(
        str(tmp),
        "onnx",
        0,
        [i.name for i in proto.graph.input],
        [o.name for o in proto.graph.output],
        diff,
        opset=onnx_opset(proto, opset),
        checks=["onnx.checker", "onnxruntime"],
    )


def check_parity(diff: float, tolerance: float, refs: list[Any]) -> None:
    """Refuse an export whose outputs differ from PyTorch's by more than `tolerance` (relative past |1|)."""
    allowed = tolerance * max(1.0, _largest_output(refs))  # relative where outputs are large (random weights)
    if not diff <= allowed:
        raise ValueError(f"the exported model disagrees with PyTorch: max abs diff {diff:.2e} > {allowed:.2g}")


def _largest_output(refs: list[Any]) -> float:
    """The largest absolute value among the reference outputs (tensors or lists of them)."""
    flat = [t for r in refs for t in (r if isinstance(r, (list, tuple)) else [r])]
    return max(float(t.detach().abs().max()) for t in flat)
