"""Every task's ``export`` mode: the task says what to export (`ExportSource`), this module writes and checks it.

ONNX, TorchScript and ExportedProgram go through `deploy.export.export_model` (or the task's own writer: a
segmenter's any-size ONNX, a detector's parts); OpenVINO, ExecuTorch, LiteRT and ncnn through
`deploy.runtime_export.export_to_runtime`, checked in the runtime's interpreter on real images: crops of two
photographs, or with ``--int8`` from a checkpoint, its own test split, its training split calibrating. Every
option is checked before any conversion starts.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.images import Preprocess
from .options import UsageError, positive_int

__all__ = ["ExportSource", "add_export_arguments", "run_export"]

OwnData = Callable[[int], tuple[torch.Tensor, list[torch.Tensor]]]
Writer = Callable[[nn.Module, Path, argparse.Namespace], Any]


@dataclass
class ExportSource:
    """What a task hands the export mode.

    Attributes:
        model: the model in its inference form (eval mode, re-parameterised).
        hw, in_chans, prep: its input size and channels, and its preprocessing (for the check images).
        stem: the output file's default stem.
        own_data: for ``--int8`` without ``--calibration-dir``: (16 check images, up to N calibration images) from
            the checkpoint's own dataset; None when the task has none to offer.
        write: the task's own writer for the PyTorch-side formats (model, output, args) -> report; None:
            `deploy.export.export_model`.
        fuse: how ``--fuse`` folds BatchNorm (default: `nn.surgery.fuse_bn` on the whole model).
        runtimes: why the edge runtimes cannot take it, or None when they can.
    """

    model: nn.Module
    hw: tuple[int, int]
    in_chans: int
    prep: Preprocess
    stem: str
    own_data: OwnData | None = None
    write: Writer | None = None
    fuse: Callable[[nn.Module], nn.Module] | None = None
    runtimes: str | None = None


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """The options every task's export mode takes (a task adds its own, e.g. ``--features-only``)."""
    from ..deploy.export import FORMATS
    from ..deploy.runtimes import RUNTIMES

    p.add_argument("--format", choices=[*FORMATS, *RUNTIMES], default="onnx")
    p.add_argument("--output", help="the file to write")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size (onnx, torchscript, exported-program)")
    p.add_argument("--input-size", type=positive_int, nargs=2, metavar=("H", "W"))
    p.add_argument("--opset", type=positive_int, default=18)
    p.add_argument("--int8", action="store_true", help="openvino/executorch/tflite: int8, calibrated on real images")
    p.add_argument(
        "--calibration-dir",
        help="with --int8: a folder of images like the model's inputs (default: --checkpoint's training split)",
    )
    p.add_argument("--calibration-images", type=positive_int, help="with --int8: how many to use (default 256)")
    p.add_argument("--data-dir", help="with --int8 --checkpoint: where its dataset is, if it has moved")


def run_export(args: argparse.Namespace, source: ExportSource) -> int:
    """Write `source` in ``args.format``, checked, and print what was written."""
    from ..deploy.runtimes import RUNTIMES

    if args.format in RUNTIMES:
        return _to_runtime(args, source)
    if args.int8 or args.calibration_dir or args.calibration_images is not None:
        with_int8 = [name for name, r in RUNTIMES.items() if r.int8]
        raise UsageError(f"--int8 applies to {', '.join(with_int8)}; for onnx, use `ghostnet classify quantize`")
    from ..deploy.export import default_suffix, export_model

    output = Path(args.output or f"{source.stem}{'-fused' if args.fuse else ''}{default_suffix(args.format)}")
    model = _fused(source) if args.fuse else source.model
    if source.write is not None:
        r = source.write(model, output, args)
    else:
        fmt, hw, chans = args.format, source.hw, source.in_chans
        r = export_model(model, output, fmt, hw, chans, args.dynamic_batch, args.opset, force=args.force)
    print(f"wrote {r.path} ({r.format}, {r.size_bytes / 2**20:.2f} MiB{f', opset {r.opset}' if r.opset else ''})")
    print(f"  inputs {r.input_names}  outputs {r.output_names}  input {r.describe_input()}")
    print(f"  checked with {', '.join(r.checks)}: max abs diff vs PyTorch {r.max_abs_diff:.2e}")
    return 0


def _fused(source: ExportSource) -> nn.Module:
    from ..nn.surgery import fuse_bn

    return source.fuse(source.model) if source.fuse is not None else fuse_bn(source.model.eval())


def _to_runtime(args: argparse.Namespace, source: ExportSource) -> int:
    from ..deploy.runtime_export import check_runtime_output, export_to_runtime
    from ..deploy.runtimes import RUNTIMES, require

    require(args.format)  # an extra that is not installed is named before anything is converted
    _check_runtime_options(args, source)
    suffix = f"{'-fused' if args.fuse else ''}{'-int8' if args.int8 else ''}{RUNTIMES[args.format].suffix}"
    output = check_runtime_output(args.output or f"{source.stem}{suffix}", args.format, args.force)
    images, calibration = _real_images(args, source)
    model = _fused(source) if args.fuse else source.model
    r = export_to_runtime(
        model, output, args.format, source.hw, source.in_chans, images=images, calibration=calibration, force=args.force
    )
    extra = f" + {', '.join(Path(f).name for f in r.files[1:])}" if len(r.files) > 1 else ""
    print(f"wrote {r.path}{extra} ({r.runtime}, {r.precision}, {r.size_bytes / 2**20:.2f} MiB, input {r.input_shape})")
    calibrated = f"; calibrated on {r.calibration_images} images" if r.calibration_images else ""
    print(
        f"  checked with {r.runtime}'s interpreter on {r.images} real images: max abs diff vs PyTorch "
        f"{r.max_abs_diff:.2e}, top-1 agreement {100 * r.top1_agreement:.1f}%{calibrated}"
    )
    for note in r.notes:
        print(f"  {note}")
    return 0


def _check_runtime_options(args: argparse.Namespace, source: ExportSource) -> None:
    """Refuse option combinations an edge-runtime export cannot honour, before any work."""
    from ..deploy.runtimes import RUNTIMES

    if source.runtimes is not None:
        raise UsageError(source.runtimes)
    if args.dynamic_batch:
        raise UsageError(f"--dynamic-batch: a {args.format} export takes a fixed batch of 1")
    if args.int8 and not RUNTIMES[args.format].int8:
        raise UsageError(f"--int8: {RUNTIMES[args.format].no_int8}")
    if not args.int8 and (args.calibration_dir or args.calibration_images is not None):
        raise UsageError("--calibration-dir and --calibration-images go with --int8")
    if args.int8 and not args.calibration_dir and source.own_data is None:
        raise UsageError(
            "--int8 needs calibration images: --calibration-dir DIR (images like the ones the model will see), "
            "or --checkpoint of a model trained with `ghostnet classify train` (its training split is used)"
        )


def _real_images(args: argparse.Namespace, source: ExportSource) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """(images to check the export on, int8 calibration images or None). With --int8 and no --calibration-dir,
    both come from the checkpoint's own dataset; otherwise the check images are crops of two photographs,
    normalised as the model expects."""
    from ..deploy.runtime_export import sample_photos, single_images

    limit = args.calibration_images or 256
    if args.int8 and not args.calibration_dir and source.own_data is not None:
        return source.own_data(limit)
    photos = sample_photos(8, source.hw, source.in_chans, mean=source.prep.mean, std=source.prep.std)
    return photos, single_images([_folder_images(args.calibration_dir, source, limit)]) if args.int8 else None


def _folder_images(folder: str, source: ExportSource, limit: int) -> torch.Tensor:
    """Up to `limit` images under `folder`, preprocessed as the model expects, at its (square) input size."""
    from ..data.images import collect_images, open_image

    if source.hw[0] != source.hw[1]:
        raise UsageError(f"--calibration-dir needs a square --input-size, got {source.hw[0]}x{source.hw[1]}")
    prep = dataclasses.replace(source.prep, image_size=source.hw[0])
    tf = prep.transform()
    return torch.stack([tf(open_image(f, prep.image_mode)) for f in collect_images([folder])[:limit]])
