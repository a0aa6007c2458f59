"""`ghostnet export --format openvino|executorch|tflite|ncnn`: a model for an edge runtime, checked in that runtime.

What to export (a registered model, a classification checkpoint, its multi-scale backbone, or a seg-train
checkpoint's logits), which real images check it (for --int8 from a checkpoint its test split, else crops of two
photographs) and, with --int8, which images calibrate it (--calibration-dir, else the checkpoint's training
split) are settled here, all before any conversion starts; `deploy.runtime_export` does the rest.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import UsageError

__all__ = ["cmd_export_runtime"]


@dataclass
class _Source:
    """The model to export with what it takes: input (H, W), channels, and its preprocessing."""

    model: nn.Module
    hw: tuple[int, int]
    in_chans: int
    prep: Any  # data.Preprocess
    stem: str


def cmd_export_runtime(args: argparse.Namespace, kind: str | None, ckpt: dict) -> int:
    from ..deploy.runtime_export import check_runtime_output, export_to_runtime
    from ..deploy.runtimes import RUNTIMES, require

    require(args.format)  # an extra that is not installed is named before anything is loaded
    _check_options(args, kind)
    source = _segmenter(args, ckpt) if kind == "segmenter" else _classifier(args)
    suffix = f"{'-fused' if args.fuse else ''}{'-int8' if args.int8 else ''}{RUNTIMES[args.format].suffix}"
    output = check_runtime_output(args.output or f"{source.stem}{suffix}", args.format, args.force)
    images, calibration = _real_images(args, source)
    model = source.model
    if args.fuse:
        from ..nn.surgery import fuse_bn

        model = fuse_bn(model.eval())
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


def _check_options(args: argparse.Namespace, kind: str | None) -> None:
    """Refuse option combinations an edge-runtime export cannot honour, before any work."""
    from ..deploy.runtimes import RUNTIMES

    if args.dynamic_batch:
        raise UsageError(f"--dynamic-batch: a {args.format} export takes a fixed batch of 1")
    if args.int8 and not RUNTIMES[args.format].int8:
        raise UsageError(f"--int8: {RUNTIMES[args.format].no_int8}")
    if kind == "detector":
        raise UsageError(
            f"a detect-train checkpoint exports to onnx, torchscript or exported-program; for {args.format}, "
            "export the backbone: MODEL --features-only"
        )
    if not args.int8 and (args.calibration_dir or args.calibration_images is not None):
        raise UsageError("--calibration-dir and --calibration-images go with --int8")
    if args.int8 and not args.calibration_dir and not (args.checkpoint and kind is None):
        raise UsageError(
            "--int8 needs calibration images: --calibration-dir DIR (images like the ones the model will see), "
            "or --checkpoint of a model trained with `ghostnet train` (its training split is used)"
        )


def _classifier(args: argparse.Namespace) -> _Source:
    """A registered model or a classification checkpoint (V3 folded), or its multi-scale backbone."""
    from ..data.images import Preprocess
    from ..engine.evaluate import load_model
    from ..models import create_model, list_models, model_entry
    from ..nn.rep import reparameterize

    kwargs: dict[str, Any] = (
        {"features_only": True, "out_indices": tuple(args.out_indices)} if args.features_only else {}
    )
    if args.checkpoint:
        model, prep, _ = load_model(args.checkpoint, args.model, **kwargs)
        stem = Path(args.checkpoint).stem
    else:
        if args.model not in list_models():
            raise UsageError(f"unknown model {args.model!r}; known models: {', '.join(list_models())}")
        model, stem = create_model(args.model, **kwargs), args.model
        prep = Preprocess(image_size=model_entry(args.model).default_cfg.get("input_size", 224))
    if args.features_only:
        stem += "-features-" + "-".join(map(str, args.out_indices))
    hw = tuple(args.input_size) if args.input_size else (prep.image_size, prep.image_size)
    return _Source(reparameterize(model.eval()), hw, prep.in_chans, prep, stem)


def _segmenter(args: argparse.Namespace, ckpt: dict) -> _Source:
    """A seg-train checkpoint as a module returning its logits (V3 backbone folded), at --input-size or 512x512."""
    from ..data.images import Preprocess
    from ..deploy.segment import SegmentationLogits
    from ..engine.segmentation import load_segmenter
    from ..nn.rep import reparameterize

    model, info, _ = load_segmenter(ckpt)
    hw = tuple(args.input_size) if args.input_size else (512, 512)
    prep = Preprocess(
        image_size=hw[0],
        mean=tuple(info.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(info.get("std", (0.229, 0.224, 0.225))),
    )
    return _Source(SegmentationLogits(reparameterize(model.eval())), hw, 3, prep, Path(args.checkpoint).stem)


def _real_images(args: argparse.Namespace, source: _Source) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """(images to check the export on, int8 calibration images or None). With --int8 and no --calibration-dir,
    both come from the checkpoint's dataset: 16 test images and the training split; otherwise the check images are
    crops of two photographs, normalised as the model expects."""
    from ..deploy.runtime_export import sample_photos, single_images

    limit = args.calibration_images or 256
    if args.int8 and not args.calibration_dir:
        from ..deploy.quantize import checkpoint_data, loader_images

        data = checkpoint_data(args.checkpoint, args.data_dir)
        test = torch.cat(list(loader_images(data.test, 16)))
        return test, single_images(loader_images(data.calibration, limit), limit)
    photos = sample_photos(8, source.hw, source.in_chans, mean=source.prep.mean, std=source.prep.std)
    return photos, single_images([_folder_images(args.calibration_dir, source, limit)]) if args.int8 else None


def _folder_images(folder: str, source: _Source, limit: int) -> torch.Tensor:
    """Up to `limit` images under `folder`, preprocessed as the model expects, at its (square) input size."""
    import dataclasses

    from ..data.images import collect_images, open_image

    if source.hw[0] != source.hw[1]:
        raise UsageError(f"--calibration-dir needs a square --input-size, got {source.hw[0]}x{source.hw[1]}")
    prep = dataclasses.replace(source.prep, image_size=source.hw[0])
    tf = prep.transform()
    return torch.stack([tf(open_image(f, prep.image_mode)) for f in collect_images([folder])[:limit]])
