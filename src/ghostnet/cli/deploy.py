"""Commands that make models fast: export, quantize (`ghostnet bench` measures them: `cli.bench`)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import UsageError, positive_int

# ---------------------------------------------------------------- export


def _model_for_deploy(args: argparse.Namespace):
    """(model in eval mode, input size, in_chans) from --checkpoint and/or a model name."""
    from ..engine.evaluate import load_model
    from ..models import create_model, list_models, model_entry

    kwargs: dict[str, Any] = {}
    size: int | tuple[int, ...]
    if getattr(args, "features_only", False):
        kwargs = {"features_only": True, "out_indices": tuple(args.out_indices)}
    if args.checkpoint:
        model, prep, _ = load_model(args.checkpoint, args.model, **kwargs)
        size, in_chans = prep.image_size, prep.in_chans
    else:
        if args.model not in list_models():
            raise UsageError(f"unknown model {args.model!r}; known models: {', '.join(list_models())}")
        model = create_model(args.model, **kwargs)
        size, in_chans = model_entry(args.model).default_cfg.get("input_size", 224), 3
    if args.input_size:
        size = args.input_size[0] if args.input_size[0] == args.input_size[1] else tuple(args.input_size)
    hw = size if isinstance(size, tuple) else (size, size)
    return model.eval(), hw, in_chans


def _task_checkpoint(path: str | None) -> tuple[str | None, dict]:
    """("segmenter" | "detector", the checkpoint) if `path` holds a seg-train or detect-train model, else (None, {}):
    read once here, and handed on."""
    from ..models.checkpoint import read_checkpoint
    from ..models.detection import DETECTORS
    from ..models.segmentation import SEGMENTERS

    if not path:
        return None, {}
    ckpt = read_checkpoint(path)
    name = ckpt.get("model_name") if isinstance(ckpt, dict) else None
    kind = "segmenter" if name in SEGMENTERS else "detector" if name in DETECTORS else None
    return kind, ckpt if kind else {}


def _export_segmenter(args: argparse.Namespace, ckpt: dict) -> Any:
    """A seg-train checkpoint to ONNX (any batch, height and width; logits out), checked in ONNX Runtime."""
    from pathlib import Path

    from ..deploy.export import default_suffix
    from ..deploy.segment import export_segmenter
    from ..engine.segmentation import load_segmenter
    from ..nn.surgery import fuse_bn

    if args.format != "onnx":
        raise UsageError("a seg-train checkpoint exports to onnx (with any height and width)")
    from ..nn.rep import reparameterize

    model: Any = reparameterize(load_segmenter(ckpt)[0])  # a GhostNetV3 backbone in its folded inference form
    if args.fuse:
        model.backbone = fuse_bn(model.backbone.eval())
    hw = tuple(args.input_size) if args.input_size else (512, 512)
    output = Path(args.output or f"{Path(args.checkpoint).stem}{'-fused' if args.fuse else ''}{default_suffix('onnx')}")
    return export_segmenter(model, output, hw, args.opset, force=args.force)


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..deploy.export import default_suffix, export_model
    from ..deploy.runtimes import RUNTIMES
    from ..nn.surgery import fuse_bn

    kind, ckpt = _task_checkpoint(args.checkpoint)
    if args.detector_part and kind != "detector":
        raise UsageError("--detector-part needs --checkpoint of a detector trained with detect-train")
    if args.format in RUNTIMES:
        from .edge_export import cmd_export_runtime

        return cmd_export_runtime(args, kind, ckpt)
    if args.int8 or args.calibration_dir or args.calibration_images is not None:
        with_int8 = [name for name, r in RUNTIMES.items() if r.int8]
        raise UsageError(f"--int8 applies to {', '.join(with_int8)}; for onnx, use `ghostnet quantize`")
    if kind == "segmenter":
        r = _export_segmenter(args, ckpt)
    elif kind == "detector":
        from ..deploy.detection import export_detector
        from ..engine.detection import load_detector

        model: Any = load_detector(ckpt)[0]
        part = args.detector_part or "backbone"
        side = model.transform.min_size[0]
        hw = tuple(args.input_size) if args.input_size else (side, side)
        output = Path(args.output or f"{Path(args.checkpoint).stem}-{part}{default_suffix(args.format)}")
        if args.fuse and part == "backbone":
            model.backbone = fuse_bn(model.backbone.eval())
        elif args.fuse:
            raise ValueError("--fuse applies to --detector-part backbone (torchvision's detector keeps its own layers)")
        r = export_detector(model, output, part, args.format, hw, args.dynamic_batch, args.opset, force=args.force)
    else:
        model, hw, in_chans = _model_for_deploy(args)
        stem = args.model or Path(args.checkpoint).stem
        if args.features_only:  # not the full model's name: exporting both must not collide
            stem += "-features-" + "-".join(map(str, args.out_indices))
        output = Path(args.output or f"{stem}{'-fused' if args.fuse else ''}{default_suffix(args.format)}")
        if args.fuse:
            model = fuse_bn(model)
        r = export_model(model, output, args.format, hw, in_chans, args.dynamic_batch, args.opset, force=args.force)
    print(f"wrote {r.path} ({r.format}, {r.size_bytes / 2**20:.2f} MiB{f', opset {r.opset}' if r.opset else ''})")
    print(f"  inputs {r.input_names}  outputs {r.output_names}  input {r.describe_input()}")
    print(f"  checked with {', '.join(r.checks)}: max abs diff vs PyTorch {r.max_abs_diff:.2e}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from ..deploy.quantize import quantize_checkpoint

    keep = () if args.keep_fp32 == ["none"] else tuple(args.keep_fp32)
    r = quantize_checkpoint(
        args.checkpoint,
        args.output,
        args.calibration_images,
        args.data_dir,
        args.threads,
        keep_fp32=keep,
        calibration=args.calibration,
    )
    print(f"wrote {r.int8_path} (int8, {r.int8_mib:.2f} MiB) and {r.fp32_path} (fp32, {r.fp32_mib:.2f} MiB)")
    kept = f"; {' and '.join(r.kept_fp32)} kept in fp32" if r.kept_fp32 else ""
    print(
        f"  calibrated ({r.calibration}) on {r.calibration_images} {r.dataset} training images{kept}; measured on its test split, ONNX Runtime CPU:"
    )
    print(f"  top-1   fp32 {r.fp32_top1:.2f}%   int8 {r.int8_top1:.2f}%   drop {r.drop:+.2f} points")
    print(f"  latency fp32 {r.fp32_ms:.3f} ms  int8 {r.int8_ms:.3f} ms  (batch 1; {r.speedup:.2f}x)")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_export(sub)
    _add_quantize(sub)


def _add_export(sub: argparse._SubParsersAction) -> None:
    from ..deploy.export import FORMATS
    from ..deploy.runtimes import RUNTIMES

    p = sub.add_parser(
        "export",
        help="write ONNX / TorchScript / ExportedProgram, checked against PyTorch",
        description="Export a registered model (random weights) or a checkpoint; the file is validated (ONNX checker "
        "and ONNX Runtime, or reloading) and must match PyTorch to 1e-4. A detect-train checkpoint exports its backbone + FPN "
        "or, with --detector-part detector, the whole detector (one image of any size in, boxes/scores/labels out); a "
        "seg-train checkpoint exports to ONNX taking any height and width (logits out, parity checked at two sizes). "
        "openvino (IR), executorch (.pte, XNNPACK), tflite (LiteRT) and ncnn (.ncnn.param/.ncnn.bin, through "
        "pnnx) take batch 1, are checked in the runtime's own interpreter on real images (max abs diff and top-1 "
        "agreement), and except ncnn can be int8 (--int8).",
    )
    p.add_argument("model", nargs="?", help="a registered model (optional with --checkpoint of ours)")
    p.add_argument("--checkpoint", help="our checkpoint, or an official/timm state dict (with MODEL)")
    p.add_argument("--format", choices=[*FORMATS, *RUNTIMES], default="onnx")
    p.add_argument("--output", help="the file to write")
    p.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    p.add_argument("--input-size", type=positive_int, nargs=2, metavar=("H", "W"))
    p.add_argument("--features-only", action="store_true", help="export the multi-scale backbone")
    p.add_argument("--out-indices", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument(
        "--detector-part",
        choices=["backbone", "detector"],
        help="with a detect-train checkpoint: GhostNet + FPN (default, any format) or the whole detector (onnx)",
    )
    p.add_argument("--opset", type=positive_int, default=18)
    p.add_argument("--int8", action="store_true", help="openvino/executorch/tflite: int8, calibrated on real images")
    p.add_argument(
        "--calibration-dir",
        help="with --int8: a folder of images like the model's inputs (default: --checkpoint's training split)",
    )
    p.add_argument("--calibration-images", type=positive_int, help="with --int8: how many to use (default 256)")
    p.add_argument("--data-dir", help="with --int8 --checkpoint: where its dataset is, if it has moved")
    p.set_defaults(func=cmd_export)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="int8 post-training quantization (ONNX Runtime), accuracy and speed vs fp32",
        description="Export a trained checkpoint to ONNX (BN folded), quantize it to int8 with calibration on real "
        "training images of its dataset, and report top-1 on the test split and batch-1 latency, fp32 vs int8.",
    )
    p.add_argument("checkpoint", help="our checkpoint")
    p.add_argument("--output", required=True, help="the int8 .onnx to write (the fp32 one is written beside it)")
    p.add_argument("--calibration-images", type=positive_int, default=512)
    p.add_argument(
        "--calibration", choices=["minmax", "percentile", "entropy"], default="minmax", help="activation range choice"
    )
    p.add_argument(
        "--keep-fp32",
        nargs="+",
        choices=["stem", "classifier", "none"],
        default=["stem", "classifier"],
        help="layers left unquantized (default: the stem conv and the classifier; 'none' quantizes all)",
    )
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=positive_int, help="ONNX Runtime threads for the latency figure")
    p.set_defaults(func=cmd_quantize)
