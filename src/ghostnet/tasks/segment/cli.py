"""Segmentation commands: seg-train, seg-eval, segment."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import UsageError, positive_int
from ..spec import Mode

if TYPE_CHECKING:
    pass


def cmd_seg_train(args: argparse.Namespace) -> int:
    from ..options import run_train_command
    from .config import SegmentConfig
    from .task import train_segmenter

    return run_train_command(args, SegmentConfig, train_segmenter)


def format_class_iou(per_class: dict) -> str:
    """Per-class IoU as a table (classes with no pixel in the truth or the predictions are marked)."""
    width = max(5, *(len(n) for n in per_class))
    lines = [f"{'class':<{width}}  {'IoU':>6}"]
    for name, v in per_class.items():
        lines.append(f"{name:<{width}}  {'absent':>6}" if v is None else f"{name:<{width}}  {v:6.2f}")
    return "\n".join(lines)


def cmd_seg_eval(args: argparse.Namespace) -> int:
    from ...engine.reporting import format_confusion
    from .task import evaluate_checkpoint

    r = evaluate_checkpoint(
        args.checkpoint,
        args.dataset,
        args.data_dir,
        args.split,
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
        f"{r['checkpoint']} on {r['images']:,} whole images ({r['pixels']:,} labelled pixels): mIoU {r['miou']:.2f}  "
        f"pixel acc. {r['pixel_acc']:.2f}  mean acc. {r['mean_acc']:.2f}\n"
    )
    print(format_class_iou(r["per_class_iou"]))
    if args.confusion:
        print("\nconfusion matrix (pixels; rows: true class, columns: predicted)")
        print(format_confusion(r["confusion"], list(r["per_class_iou"])))
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from ...data.images import collect_images
    from ...engine.distributed import init_distributed
    from .predict import segment_images
    from .task import load_segmenter

    _, device = init_distributed(args.device)
    model, data, _ = load_segmenter(args.checkpoint, device)
    files = collect_images(args.images)
    out = None if args.no_draw else args.output_dir
    results = segment_images(model, data["classes"], files, out, args.overwrite, args.alpha)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        where = f" -> {r['output']}" if "output" in r else ""
        shares = ", ".join(f"{k} {v:.1f}%" for k, v in r["classes"].items())
        print(f"{r['path']}{where}\n  {shares}")
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ...engine.config import add_config_arguments
    from .config import SegmentConfig

    p.add_argument("--config", help="a YAML file of settings")
    add_config_arguments(p, SegmentConfig)


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="a checkpoint written by seg-train")
    p.add_argument("--dataset", choices=["voc", "cityscapes", "folder"], help="default: the training run's")
    p.add_argument("--data-dir", help="default: the training run's")
    p.add_argument("--split", help="default: the training run's val split")
    p.add_argument("--batch-size", type=positive_int, default=1)
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--confusion", action="store_true", help="also print the confusion matrix")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by seg-train")
    p.add_argument("--output-dir", default="segmentations", help="where the overlays go (IMAGE_STEM.png)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--no-draw", action="store_true", help="only print the class shares")
    p.add_argument("--overwrite", action="store_true", help="replace overlays already in OUTPUT_DIR")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from ...data.images import Preprocess
    from ...nn.rep import reparameterize
    from ...nn.surgery import SegmentationLogits
    from ..export import ExportSource, run_export
    from .task import load_segmenter

    model, info, _ = load_segmenter(args.checkpoint)
    hw = tuple(args.input_size) if args.input_size else (512, 512)
    mean, std = tuple(info.get("mean", (0.485, 0.456, 0.406))), tuple(info.get("std", (0.229, 0.224, 0.225)))
    logits = SegmentationLogits(reparameterize(model.eval()))  # a GhostNetV3 backbone in its folded form
    source = ExportSource(
        logits,
        hw,
        3,
        Preprocess(image_size=hw[0], mean=mean, std=std),
        Path(args.checkpoint).stem,
        write=_write,
        fuse=_fuse_backbone,
    )
    return run_export(args, source)


def _write(model: Any, output: Path, args: argparse.Namespace) -> Any:
    from .predict import export_segmenter

    if args.format != "onnx":
        raise UsageError("a segmenter exports to onnx (with any height and width) or to an edge runtime")
    hw = tuple(args.input_size) if args.input_size else (512, 512)
    return export_segmenter(model.segmenter, output, hw, args.opset, force=args.force)


def _fuse_backbone(logits: Any) -> Any:
    from ...nn.surgery import fuse_bn

    logits.segmenter.backbone = fuse_bn(logits.segmenter.backbone.eval())
    return logits


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from ..export import add_export_arguments

    p.add_argument("--checkpoint", required=True, help="a checkpoint written by `ghostnet segment train`")
    add_export_arguments(p)


MODES = (
    Mode(
        "train",
        "train LR-ASPP / DeepLabV3 on GhostNet on VOC, Cityscapes or image/mask folders (also under torchrun)",
        "Train a segmenter with the classification engine's run folders, checkpoints, resume, logs and "
        "DDP. Data: --dataset voc (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/), cityscapes "
        "(leftImg8bit/, gtFine/) or folder (classes.txt, {train,val}/images, {train,val}/masks). Full-image mIoU on "
        "the val split picks best.pth.",
        _train_arguments,
        cmd_seg_train,
    ),
    Mode(
        "eval",
        "mIoU, per-class IoU, pixel accuracy and confusion matrix of a trained segmenter",
        "Evaluate a seg-train checkpoint on whole images at their original resolution (by default the "
        "validation split it was trained with); 255 in a mask is ignored.",
        _eval_arguments,
        cmd_seg_eval,
    ),
    Mode(
        "predict",
        "segment images and write colour overlays",
        "Run a seg-train checkpoint on image files or folders at their own size; print each image's class "
        "shares and write IMAGE_STEM.png (the image under its class colours) into --output-dir.",
        _predict_arguments,
        cmd_segment,
    ),
    Mode(
        "export",
        "write a trained segmenter for ONNX Runtime (any height and width) or an edge runtime, checked",
        "Export a `ghostnet segment train` checkpoint: to ONNX taking any batch, height and width (logits out, parity "
        "checked at two sizes), or to OpenVINO, ExecuTorch, LiteRT or ncnn at --input-size (default 512x512), checked "
        "in the runtime's own interpreter on real images.",
        _export_arguments,
        cmd_export,
    ),
)
