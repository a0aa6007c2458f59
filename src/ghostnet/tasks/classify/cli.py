"""`ghostnet classify train|eval|predict|export|quantize`, and the paper's s/d ablation (`ghostnet ablate`,
a model-level command: `cmd_ablate`, `ablate_arguments`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...engine.config import list_recipes
from ..options import UsageError, positive_int
from ..spec import Mode
from .config import TrainConfig

if TYPE_CHECKING:
    from ..export import ExportSource


def cmd_ablate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ...engine.config import config_from_args
    from .ablate import run_ablation
    from .config import TrainConfig

    base = config_from_args(args, TrainConfig, args.config)
    sweep = args.sweep_dir or f"{base.output_dir}/ablate-{args.model}-{base.dataset}"
    run_ablation(args.model, args.ratios, args.dw_sizes, base, sweep, args.complexity_only)
    print((Path(sweep) / "results.md").read_text())
    plot = "" if args.complexity_only else " and acc_vs_macs.png"
    print(f"results.md, results.csv{plot} in {sweep}/")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..options import run_train_command
    from .config import TrainConfig
    from .task import train

    return run_train_command(args, TrainConfig, train)


def cmd_eval(args: argparse.Namespace) -> int:
    from ...engine.reporting import format_confusion
    from .evaluate import evaluate_checkpoint

    r = evaluate_checkpoint(
        args.checkpoint,
        args.model,
        args.dataset,
        args.data_dir,
        args.image_size,
        args.batch_size,
        args.ema,
        args.device,
        not args.no_progress,
        bad_images=args.bad_images,
    )
    if not r.pop("is_main"):
        return 0
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(
        f"{r['checkpoint']} on {r['dataset']} ({r['count']:,} images): top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}"
    )
    if r["skipped_images"]:
        print(f"skipped {r['skipped_images']} unreadable image(s) (first: {r['first_skipped']})")
    if "confusion" in r:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        print(format_confusion(r["confusion"], r["classes"]))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from ...engine.distributed import init_distributed
    from .evaluate import load_model
    from .predict import predict_images

    _, device = init_distributed(args.device)  # resolves "auto"; a CUDA device on a machine without one is one line
    model, prep, _ = load_model(args.checkpoint, args.model, use_ema=args.ema)
    results = predict_images(model.to(device), prep, args.images, args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["path"])
        for name, p in r["top"]:
            print(f"  {p * 100:6.2f}%  {name}")
    return 0


def _train_arguments(p: argparse.ArgumentParser) -> None:
    from ...engine.config import add_config_arguments
    from .config import TrainConfig

    p.add_argument("--config", help="a YAML file or a bundled recipe name")
    add_config_arguments(p, TrainConfig)


def ablate_arguments(p: argparse.ArgumentParser) -> None:
    from ...engine.config import add_config_arguments
    from .config import TrainConfig

    p.add_argument("--model", required=True, choices=["vgg16", "resnet56"], help="the baseline")
    p.add_argument("--ratios", type=positive_int, nargs="+", default=[2, 3, 4, 5], help="s values (at d=3)")
    p.add_argument("--dw-sizes", type=positive_int, nargs="+", default=[1, 3, 5, 7], help="d values (at s=2)")
    p.add_argument("--sweep-dir", help="default: OUTPUT_DIR/ablate-MODEL-DATASET")
    p.add_argument("--complexity-only", action="store_true", help="params and MACs only, no training")
    p.add_argument("--config", help="the shared recipe: a YAML file or a bundled recipe name (e.g. cifar)")
    add_config_arguments(p, TrainConfig, exclude=("model", "ratio", "dw_size", "name", "resume", "overwrite"))


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="our checkpoint, or an official/timm state dict (with --model)")
    p.add_argument("--model", help="model name, for bare state dicts (e.g. ghostnet_100)")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir")
    p.add_argument("--image-size", type=positive_int)
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument(
        "--bad-images",
        choices=["skip", "error"],
        default="skip",
        help="image folders: skip (leave unreadable images out and report the count) | error (refuse, naming the file)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="our checkpoint, or an official/timm state dict (with --model)")
    p.add_argument("--model", help="model name, for bare state dicts")
    p.add_argument("--topk", type=positive_int, default=5, help="how many classes to show per image")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--ema", action="store_true", help="use the EMA weights")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import run_export

    return run_export(args, _export_source(args))


def _export_source(args: argparse.Namespace) -> ExportSource:
    """A registered model (random or published weights) or a checkpoint, in its inference form (V3 folded), or
    its multi-scale backbone; its own dataset calibrates ``--int8`` when it is one of our checkpoints."""
    from ...data.images import Preprocess
    from ...models import create_model, list_models, model_entry
    from ...models.registry import IMAGE_TASKS
    from ...nn.rep import reparameterize
    from ..export import ExportSource
    from .evaluate import load_model

    if not args.model and not args.checkpoint:
        raise UsageError("give a registered MODEL, --checkpoint, or both (a bare state dict needs its MODEL)")
    kwargs: dict[str, Any] = (
        {"features_only": True, "out_indices": tuple(args.out_indices)} if args.features_only else {}
    )
    if args.checkpoint:
        model, prep, trained = load_model(args.checkpoint, args.model, **kwargs)
        stem = Path(args.checkpoint).stem
    else:
        if args.model not in list_models(task=IMAGE_TASKS):
            task = model_entry(args.model).task  # an unknown name: ValueError listing the known ones
            raise UsageError(f"{args.model} is a {task} model: export a trained one with `ghostnet {task} export`")
        model, stem, trained = create_model(args.model, **kwargs), args.model, {}
        prep = Preprocess(image_size=model_entry(args.model).default_cfg.get("input_size", 224))
    if args.features_only:  # not the full model's name: exporting both must not collide
        stem += "-features-" + "-".join(map(str, args.out_indices))
    hw = tuple(args.input_size) if args.input_size else (prep.image_size, prep.image_size)
    own = (lambda n: _own_data(args, n)) if trained.get("dataset") else None
    return ExportSource(reparameterize(model.eval()), hw, prep.in_chans, prep, stem, own_data=own)


def _own_data(args: argparse.Namespace, limit: int) -> tuple[Any, list[Any]]:
    """16 test images of the checkpoint's dataset to check an int8 export on, and `limit` training images
    (single images, as evaluation reads them) to calibrate it."""
    import torch

    from ...deploy.quantize import loader_images
    from ...deploy.runtime_export import single_images
    from .quantize import checkpoint_data

    data = checkpoint_data(args.checkpoint, args.data_dir)
    test = torch.cat(list(loader_images(data.test, 16)))
    return test, single_images(loader_images(data.calibration, limit), limit)


def _export_arguments(p: argparse.ArgumentParser) -> None:
    from ..export import add_export_arguments

    p.add_argument("model", nargs="?", help="a registered model (optional with --checkpoint of ours)")
    p.add_argument("--checkpoint", help="our checkpoint, or an official/timm state dict (with MODEL)")
    add_export_arguments(p)
    p.add_argument("--features-only", action="store_true", help="export the multi-scale backbone")
    p.add_argument("--out-indices", type=int, nargs="+", default=[2, 3, 4])


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_checkpoint

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


def _quantize_arguments(p: argparse.ArgumentParser) -> None:
    from ...deploy.quantize import CALIBRATIONS, KEEPABLE

    p.add_argument("checkpoint", help="our checkpoint")
    p.add_argument("--output", required=True, help="the int8 .onnx to write (the fp32 one is written beside it)")
    p.add_argument("--calibration-images", type=positive_int, default=512)
    p.add_argument("--calibration", choices=CALIBRATIONS, default="minmax", help="activation range choice")
    p.add_argument(
        "--keep-fp32",
        nargs="+",
        choices=[*KEEPABLE, "none"],
        default=list(KEEPABLE),
        help="layers left unquantized (default: the stem conv and the classifier; 'none' quantizes all)",
    )
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=positive_int, help="ONNX Runtime threads for the latency figure")


MODES = (
    Mode(
        "train",
        "train and evaluate a model on a dataset (also under torchrun for DDP)",
        "Train a registered model. Settings come from the defaults, then --config (a YAML file or a "
        f"bundled recipe: {', '.join(list_recipes(TrainConfig))}), then the options below. The resolved config, log.jsonl, "
        "checkpoints (last.pth, best.pth), summary.json and curves.png go to OUTPUT_DIR/NAME.",
        _train_arguments,
        cmd_train,
    ),
    Mode(
        "eval",
        "top-1/top-5 (and confusion matrix) of a checkpoint on a dataset",
        "Evaluate a checkpoint on a dataset's test split (by default the dataset it was trained on): "
        "top-1, top-5, loss, and a confusion matrix for up to 20 classes. Runs distributed under torchrun.",
        _eval_arguments,
        cmd_eval,
    ),
    Mode(
        "predict",
        "top-k classes for image files or folders",
        "Classify image files (any mode: 8- or 16-bit, palette, alpha, CMYK) or every image under "
        "folders with a checkpoint, preprocessed as the checkpoint was trained.",
        _predict_arguments,
        cmd_predict,
    ),
    Mode(
        "export",
        "write a classifier for ONNX Runtime, TorchScript, torch.export or an edge runtime, checked against PyTorch",
        "Export a registered model (random weights) or a checkpoint (its multi-scale backbone with --features-only). "
        "Write ONNX, TorchScript or ExportedProgram (validated, and matching PyTorch to 1e-4), or a model for OpenVINO, ExecuTorch, LiteRT or ncnn (batch 1, checked in the runtime's own interpreter on real images; int8 with --int8 except ncnn).",
        _export_arguments,
        cmd_export,
    ),
    Mode(
        "quantize",
        "int8 post-training quantization (ONNX Runtime), accuracy and speed vs fp32",
        "Export a trained checkpoint to ONNX (BN folded), quantize it to int8 with calibration on real "
        "training images of its dataset, and report top-1 on the test split and batch-1 latency, fp32 vs int8.",
        _quantize_arguments,
        cmd_quantize,
    ),
)
