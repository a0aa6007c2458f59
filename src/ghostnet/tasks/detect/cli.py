"""Detection commands: detect-train, detect-eval, detect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...data.images import Preprocess
from ..options import UsageError, positive_int
from ..spec import Mode

if TYPE_CHECKING:
    pass


def cmd_detect_train(args: argparse.Namespace) -> int:
    from ..options import run_train_command
    from .config import DetectConfig
    from .task import train_detector

    return run_train_command(args, DetectConfig, train_detector)


def format_class_ap(per_class: dict) -> str:
    """Per-class AP and AP@0.5 as a table (classes without any box in the split are marked)."""
    width = max(5, *(len(n) for n in per_class))
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP@0.5':>6}"]
    for name, v in per_class.items():
        lines.append(
            f"{name:<{width}}  {'no boxes in this split':>14}"
            if v is None
            else f"{name:<{width}}  {v['ap']:6.2f}  {v['ap50']:6.2f}"
        )
    return "\n".join(lines)


def cmd_detect_eval(args: argparse.Namespace) -> int:
    from .task import evaluate_checkpoint

    r = evaluate_checkpoint(
        args.checkpoint,
        args.data_dir,
        args.images,
        args.annotations,
        args.batch_size,
        args.device,
        args.num_workers,
        not args.no_progress,
    )
    if not r.pop("is_main"):
        return 0
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(r["report"])
    print(
        f"{r['checkpoint']} on {r['annotations']} ({r['images']:,} images, {r['detections']:,} detections): "
        f"mAP {r['map']:.2f}  mAP@0.5 {r['map50']:.2f}  mAP@0.75 {r['map75']:.2f}\n"
    )
    print(format_class_ap(r["per_class"]))
    return 0


def cmd_detect(args: argparse.Namespace) -> int:
    from ...data.images import collect_images
    from .predict import detect_images
    from .task import load_detector

    if not 0 <= args.score_threshold <= 1:
        raise UsageError(f"--score-threshold must be in [0, 1], got {args.score_threshold}")
    from ...engine.distributed import init_distributed

    _, device = init_distributed(args.device)  # resolves "auto"; a missing CUDA is a ValueError
    model, data, _ = load_detector(args.checkpoint, device)
    files = collect_images(args.images)
    results = detect_images(
        model, data["classes"], files, None if args.no_draw else args.output_dir, args.score_threshold, args.overwrite
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        where = f" -> {r['output']}" if "output" in r else ""
        print(f"{r['path']}: {len(r['detections'])} object(s){where}")
        for det in r["detections"]:
            x0, y0, x1, y1 = det["box_xyxy"]
            print(f"  {det['score'] * 100:6.2f}%  {det['label']:<16} [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}]")
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ...engine.config import add_config_arguments
    from .config import DetectConfig

    p.add_argument("--config", help="a YAML file of settings")
    add_config_arguments(p, DetectConfig)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by detect-train")
    p.add_argument(
        "--data-dir", help="a COCO-layout folder (its val split); default: the split the detector was validated on"
    )
    p.add_argument("--images", help="images folder (with --annotations)")
    p.add_argument("--annotations", help="a COCO instances JSON")
    p.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by detect-train")
    p.add_argument("--output-dir", default="detections", help="where the drawn images go (IMAGE_STEM.png)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="keep detections scoring at least this")
    p.add_argument("--no-draw", action="store_true", help="only print the detections")
    p.add_argument("--overwrite", action="store_true", help="replace drawn images already in OUTPUT_DIR")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import ExportSource, run_export
    from .task import load_detector

    model: Any = load_detector(args.checkpoint)[0]
    part = args.detector_part
    side = model.transform.min_size[0]
    hw = tuple(args.input_size) if args.input_size else (side, side)
    if args.fuse and part != "backbone":
        raise UsageError("--fuse applies to --detector-part backbone (torchvision's detector keeps its own layers)")
    source = ExportSource(
        model,
        hw,
        3,
        Preprocess(image_size=hw[0]),
        f"{Path(args.checkpoint).stem}-{part}",
        write=lambda m, out, a: _write(m, out, a, hw),
        fuse=_fuse_backbone,
        runtimes=f"a detector exports to onnx, torchscript or exported-program; for {args.format}, export its "
        "backbone: `ghostnet classify export MODEL --features-only`",
    )
    return run_export(args, source)


def _write(model: Any, output: Path, args: argparse.Namespace, hw: tuple[int, int]) -> Any:
    from .export import export_detector

    part, fmt = args.detector_part, args.format
    return export_detector(model, output, part, fmt, hw, args.dynamic_batch, args.opset, force=args.force)


def _fuse_backbone(model: Any) -> Any:
    from ...nn.surgery import fuse_bn

    model.backbone = fuse_bn(model.backbone.eval())
    return model


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from ..export import add_export_arguments

    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `ghostnet detect train`")
    add_export_arguments(p)
    p.add_argument(
        "--detector-part",
        choices=["backbone", "detector"],
        default="backbone",
        help="GhostNet + FPN (any format) or the whole detector (onnx: one image of any size in, boxes/scores/labels out)",
    )


MODES = (
    Mode(
        "train",
        "train RetinaNet / Faster R-CNN on GhostNet + FPN on COCO-format data (also under torchrun)",
        "Train a detector with the classification engine's checkpoints, resume, logs and DDP. Data: --data-dir "
        "in COCO's layout (annotations/instances_train*.json + train*/, annotations/instances_val*.json + val*/) or explicit "
        "--train-images/--train-annotations/--val-images/--val-annotations. COCO mAP on the val split picks best.pth.",
        _train_arguments,
        cmd_detect_train,
    ),
    Mode(
        "eval",
        "COCO mAP, mAP@0.5 and per-class AP of a trained detector",
        "Evaluate a detect-train checkpoint with pycocotools on a COCO-format split (by default the "
        "validation split it was trained with): mAP@[.5:.95], mAP@0.5, mAP@0.75 and AP per class.",
        _eval_arguments,
        cmd_detect_eval,
    ),
    Mode(
        "predict",
        "detect objects in images and draw the labelled boxes",
        "Run a detect-train checkpoint on image files or folders; print the detections and write "
        "each image with its labelled boxes into --output-dir (never replacing a file without --overwrite).",
        _predict_arguments,
        cmd_detect,
    ),
    Mode(
        "export",
        "write a trained detector's backbone + FPN, or the whole detector, checked against PyTorch",
        "Export a `ghostnet detect train` checkpoint: its GhostNet + FPN backbone (onnx, torchscript, "
        "exported-program) or, with --detector-part detector, the whole detector to ONNX (one image of any size in, "
        "boxes/scores/labels out). The file is validated and must match PyTorch.",
        _export_arguments,
        cmd_export,
    ),
)
