"""Commands that train and use trained models: train, eval, predict, ablate."""

from __future__ import annotations

import argparse
import json

from .common import positive_int


def cmd_ablate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..engine.ablate import run_ablation
    from ..engine.config import config_from_args

    base = config_from_args(args, args.config)
    sweep = args.sweep_dir or f"{base.output_dir}/ablate-{args.model}-{base.dataset}"
    run_ablation(args.model, args.ratios, args.dw_sizes, base, sweep, args.complexity_only)
    print((Path(sweep) / "results.md").read_text())
    plot = "" if args.complexity_only else " and acc_vs_macs.png"
    print(f"results.md, results.csv{plot} in {sweep}/")
    return 0


# ---------------------------------------------------------------- train / eval / predict


def run_train_command(args: argparse.Namespace, config_cls: type, train_fn) -> int:
    """Resolve the config (recipe/YAML + options) and train."""
    from ..engine.config import config_from_args

    train_fn(config_from_args(args, args.config, config_cls))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ..engine.classification import train
    from ..engine.config import TrainConfig

    return run_train_command(args, TrainConfig, train)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..engine.evaluate import evaluate_checkpoint
    from ..engine.reporting import format_confusion

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
    from ..deploy.predict import predict_images
    from ..engine.distributed import init_distributed
    from ..engine.evaluate import load_model

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


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_ablate(sub)
    _add_eval(sub)
    _add_predict(sub)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ..engine.config import add_config_arguments, list_recipes

    p = sub.add_parser(
        "train",
        help="train and evaluate a model on a dataset (also under torchrun for DDP)",
        description="Train a registered model. Settings come from the defaults, then --config (a YAML file or a "
        f"bundled recipe: {', '.join(list_recipes())}), then the options below. The resolved config, log.jsonl, "
        "checkpoints (last.pth, best.pth), summary.json and curves.png go to OUTPUT_DIR/NAME.",
    )
    p.add_argument("--config", help="a YAML file or a bundled recipe name")
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    from ..engine.config import add_config_arguments

    p = sub.add_parser(
        "ablate",
        help="the paper's s/d ablation: train each Ghost variant with one recipe and seed",
        description="Train the baseline and its Ghost versions for each s (at d=3) and each d (at s=2) with one "
        "shared recipe and seed; write results.md, results.csv and acc_vs_macs.png. Running it again skips finished "
        "variants and resumes an interrupted one.",
    )
    p.add_argument("--model", required=True, choices=["vgg16", "resnet56"], help="the baseline")
    p.add_argument("--ratios", type=positive_int, nargs="+", default=[2, 3, 4, 5], help="s values (at d=3)")
    p.add_argument("--dw-sizes", type=positive_int, nargs="+", default=[1, 3, 5, 7], help="d values (at s=2)")
    p.add_argument("--sweep-dir", help="default: OUTPUT_DIR/ablate-MODEL-DATASET")
    p.add_argument("--complexity-only", action="store_true", help="params and MACs only, no training")
    p.add_argument("--config", help="the shared recipe: a YAML file or a bundled recipe name (e.g. cifar)")
    add_config_arguments(p, exclude=("model", "ratio", "dw_size", "name", "resume", "overwrite"))
    p.set_defaults(func=cmd_ablate)


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/top-5 (and confusion matrix) of a checkpoint on a dataset",
        description="Evaluate a checkpoint on a dataset's test split (by default the dataset it was trained on): "
        "top-1, top-5, loss, and a confusion matrix for up to 20 classes. Runs distributed under torchrun.",
    )
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
    p.set_defaults(func=cmd_eval)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes for image files or folders",
        description="Classify image files (any mode: 8- or 16-bit, palette, alpha, CMYK) or every image under "
        "folders with a checkpoint, preprocessed as the checkpoint was trained.",
    )
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="our checkpoint, or an official/timm state dict (with --model)")
    p.add_argument("--model", help="model name, for bare state dicts")
    p.add_argument("--topk", type=positive_int, default=5, help="how many classes to show per image")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--ema", action="store_true", help="use the EMA weights")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_predict)
