"""The `ghostnet` command line: argparse subcommands, each a thin wrapper over a library function."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

__all__ = ["main", "build_parser"]


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _model_kwargs(args: argparse.Namespace) -> dict:
    kwargs: dict = {}
    if getattr(args, "width", None) is not None:
        if args.model != "ghostnet":
            raise UsageError(f"--width applies to the 'ghostnet' model; {args.model!r} has a fixed width")
        kwargs["width"] = args.width
    for name in ("num_classes", "in_chans"):
        if getattr(args, name, None) is not None:
            kwargs[name] = getattr(args, name)
    return kwargs


# ---------------------------------------------------------------- list


def cmd_list(args: argparse.Namespace) -> int:
    from .models import list_models, model_entry

    for name in list_models(args.pattern):
        entry = model_entry(name)
        weights = "  [ImageNet weights]" if entry.url else ""
        print(f"{name:<24} {entry.description}{weights}")
    return 0


# ---------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> int:
    from .profile import format_ghost_module, format_profile, profile_ghost_module, profile_model

    size = tuple(args.input_size) if args.input_size else None
    if args.model == "ghost_module":
        if args.in_chans is None or args.out_chans is None:
            raise UsageError("profile ghost_module needs --in-chans and --out-chans")
        try:
            r = profile_ghost_module(
                args.in_chans,
                args.out_chans,
                args.kernel_size,
                args.ratio,
                args.dw_size,
                args.stride,
                size or (56, 56),
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        print(json.dumps(r, indent=2) if args.json else format_ghost_module(r))
        return 0

    from .models import create_model

    kwargs = _model_kwargs(args)
    if args.features_only:
        kwargs["features_only"] = True
    try:
        model = create_model(args.model, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None
    p = profile_model(model, size or (224, 224), name=args.model + (f" (width {args.width})" if args.width else ""))
    if args.json:
        d = p.to_dict()
        if not args.per_layer:
            d.pop("layers")
        print(json.dumps(d, indent=2))
    else:
        print(format_profile(p, per_layer=args.per_layer))
    return 0


# ---------------------------------------------------------------- ghostify


def _build_any_model(name: str):
    """A model of our registry, or of torchvision's (random weights), by name."""
    from .models import list_models, create_model

    if name in list_models():
        return create_model(name)
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise UsageError(f"unknown model {name!r}: not in our registry (`ghostnet list`) nor torchvision's") from None


def cmd_ghostify(args: argparse.Namespace) -> int:
    from .ghostify import ghostify

    model = _build_any_model(args.model)
    try:
        report = ghostify(model, args.ratio, args.dw_size, skip=args.skip, keep_first=not args.replace_first,
                          input_size=tuple(args.input_size))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.json:
        from dataclasses import asdict

        rows = [asdict(r) for r in report.layers]
        print(json.dumps({"model": args.model, "ratio": args.ratio, "dw_size": args.dw_size, "message": report.message,
                          "before": report.before, "after": report.after, "layers": rows}, indent=2))
    else:
        print(report.format())
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .ablate import run_ablation
    from .config import config_from_args

    try:
        base = config_from_args(args, args.config)
        sweep = args.sweep_dir or f"{base.output_dir}/ablate-{args.model}-{base.dataset}"
        run_ablation(args.model, args.ratios, args.dw_sizes, base, sweep, args.complexity_only)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print((Path(sweep) / "results.md").read_text())
    plot = "" if args.complexity_only else " and acc_vs_macs.png"
    print(f"results.md, results.csv{plot} in {sweep}/")
    return 0


# ---------------------------------------------------------------- visualize


def cmd_visualize(args: argparse.Namespace) -> int:
    from . import visualize as viz
    from .data import load_dataset

    if args.figure == "dataset":
        data = load_dataset(args.dataset, args.data_dir, False, None)
        if not data.in_memory:
            raise UsageError("the dataset preview works on in-memory datasets (digits, mnist, fashion_mnist, cifar10/100)")
        path = viz.plot_dataset_preview(
            data.train.images, data.train.labels, data.classes, args.output or f"{args.dataset}_preview.png", title=data.name
        )
        print(f"wrote {path}")
        return 0

    import torch
    from PIL import Image, UnidentifiedImageError

    from .inference import Preprocess, load_model
    from .models import list_models, model_entry

    if args.checkpoint:
        model, prep, _ = load_model(args.checkpoint, args.model)
    else:
        if not args.model:
            raise UsageError("give --model (and optionally --checkpoint)")
        model = _build_any_model(args.model)
        size = model_entry(args.model).default_cfg.get("input_size", 224) if args.model in list_models() else 224
        prep = Preprocess(image_size=args.image_size or size, center_crop=size >= 128)
    if args.image_size:
        prep.image_size = args.image_size
    if args.ghostify:
        from .ghostify import ghostify

        model = ghostify(model, args.ratio, args.dw_size).model
    try:
        with Image.open(args.image) as im:
            x = prep.transform()(im).unsqueeze(0)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise UsageError(f"cannot read image {args.image}: {e}") from None
    out = args.output or f"{args.figure}_maps.png"
    try:
        with torch.no_grad():
            if args.figure == "ghost":
                info = viz.plot_ghost_maps(model, x, args.layer, out)
                print(f"wrote {out}: {info['rows']} intrinsic maps of {info['layer']} with their ghosts "
                      f"(mean correlation ghost-to-source {info['mean_correlation']:.2f})")
            else:
                info = viz.plot_redundant_pairs(model, x, args.layer, out)
                pairs = ", ".join(f"{i}&{j} ({s:.2f})" for i, j, s in info["pairs"][:3])
                print(f"wrote {out}: {info['maps']} maps of {info['layer']}; most similar pairs: {pairs}")
    except ValueError as e:
        raise UsageError(str(e)) from None
    return 0


# ---------------------------------------------------------------- export


def _model_for_deploy(args: argparse.Namespace):
    """(model in eval mode, input size, in_chans) from --checkpoint and/or a model name."""
    from .inference import load_model
    from .models import create_model, list_models, model_entry

    kwargs = {}
    if getattr(args, "features_only", False):
        kwargs = {"features_only": True, "out_indices": tuple(args.out_indices)}
    if args.checkpoint:
        model, prep, _ = load_model(args.checkpoint, args.model, **kwargs)
        size, in_chans = prep.image_size, prep.in_chans
    else:
        if args.model not in list_models():
            raise UsageError(f"unknown model {args.model!r}; known models: {', '.join(list_models())}")
        try:
            model = create_model(args.model, **kwargs)
        except ValueError as e:
            raise UsageError(str(e)) from None
        size, in_chans = model_entry(args.model).default_cfg.get("input_size", 224), 3
    if args.input_size:
        size = args.input_size[0] if args.input_size[0] == args.input_size[1] else tuple(args.input_size)
    hw = size if isinstance(size, tuple) else (size, size)
    return model.eval(), hw, in_chans


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .deploy import default_suffix, export_model, fuse_bn

    model, hw, in_chans = _model_for_deploy(args)
    output = Path(args.output or f"{args.model or Path(args.checkpoint).stem}{'-fused' if args.fuse else ''}{default_suffix(args.format)}")
    try:
        if args.fuse:
            model = fuse_bn(model)
        r = export_model(model, output, args.format, hw, in_chans, args.dynamic_batch, args.opset)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {r.path} ({r.format}, {r.size_bytes / 2**20:.2f} MiB{f', opset {r.opset}' if r.opset else ''})")
    print(f"  inputs {r.input_names}  outputs {r.output_names}  {'dynamic' if r.dynamic_batch else 'fixed'} batch, input {in_chans}x{hw[0]}x{hw[1]}")
    print(f"  checked with {', '.join(r.checks)}: max abs diff vs PyTorch {r.max_abs_diff:.2e}")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from .quantize import quantize_checkpoint

    try:
        r = quantize_checkpoint(args.checkpoint, args.output, args.calibration_images, args.data_dir, args.threads)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"wrote {r.int8_path} (int8, {r.int8_mib:.2f} MiB) and {r.fp32_path} (fp32, {r.fp32_mib:.2f} MiB)")
    print(f"  calibrated on {r.calibration_images} {r.dataset} training images; measured on its test split, ONNX Runtime CPU:")
    print(f"  top-1   fp32 {r.fp32_top1:.2f}%   int8 {r.int8_top1:.2f}%   drop {r.drop:+.2f} points")
    print(f"  latency fp32 {r.fp32_ms:.3f} ms  int8 {r.int8_ms:.3f} ms  (batch 1; {r.speedup:.2f}x)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import format_bench, run_bench

    quick = args.quick
    try:
        result = run_bench(
            args.model, args.input_size or (64 if quick else 224), tuple(args.batch_sizes or ([1, 4] if quick else [1, 32])),
            args.threads, args.runs or (3 if quick else 50), 1 if quick else 10, args.device,
            compile=args.compile, onnx=not args.no_onnx, int8=not args.no_int8, peers=not args.no_peers,
            baseline=args.baseline, progress=None if args.json else (lambda s: print(f"  timing {s}", file=sys.stderr)),
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        from .bench import plot_bench

        plot_bench(result, args.plot)
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0


# ---------------------------------------------------------------- train / eval / predict


def cmd_train(args: argparse.Namespace) -> int:
    from .config import config_from_args
    from .train import TrainingDiverged, train

    try:
        cfg = config_from_args(args, args.config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    try:
        train(cfg)
    except TrainingDiverged as e:
        print(f"ghostnet train: {e}", file=sys.stderr)
        return 1
    except ValueError as e:  # bad settings found once the data and model are known
        raise UsageError(str(e)) from None
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_checkpoint
    from .reporting import format_confusion

    r = evaluate_checkpoint(
        args.checkpoint, args.model, args.dataset, args.data_dir, args.image_size, args.batch_size, args.ema, args.device, not args.no_progress
    )
    if not r.pop("is_main"):
        return 0
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"{r['checkpoint']} on {r['dataset']} ({r['count']:,} images): top-1 {r['top1']:.2f}%  top-5 {r['top5']:.2f}%  loss {r['loss']:.4f}")
    if "confusion" in r:
        print("\nconfusion matrix (rows: true class, columns: predicted)")
        print(format_confusion(r["confusion"], r["classes"]))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import load_model, predict_images

    model, prep, _ = load_model(args.checkpoint, args.model, use_ema=args.ema)
    results = predict_images(model, prep, args.images, args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for r in results:
        print(r["path"])
        for name, p in r["top"]:
            print(f"  {p * 100:6.2f}%  {name}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghostnet",
        description="GhostNet: build, train, analyse, compress and deploy GhostNet models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ghostnet_*'")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "profile",
        help="params, MACs and activation memory of a model (or of one Ghost module)",
        description="Count parameters, MACs (the paper's FLOPs) and activation memory by running the model. "
        "MODEL 'ghost_module' profiles a single Ghost module against the plain conv it replaces.",
    )
    p.add_argument("model", help="a registered model name (see `ghostnet list`), or 'ghost_module'")
    p.add_argument("--width", type=_positive_float, help="width multiplier (with MODEL 'ghostnet')")
    p.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"), help="default 224 224 (56 56 for ghost_module)")
    p.add_argument("--num-classes", type=_positive_int)
    p.add_argument("--in-chans", type=_positive_int, help="input channels (ghost_module: c)")
    p.add_argument("--out-chans", type=_positive_int, help="ghost_module: output channels n")
    p.add_argument("--kernel-size", type=_positive_int, default=1, help="ghost_module: primary kernel k")
    p.add_argument("--ratio", type=_positive_int, default=2, help="ghost_module: ratio s")
    p.add_argument("--dw-size", type=_positive_int, default=3, help="ghost_module: cheap kernel d")
    p.add_argument("--stride", type=_positive_int, default=1, help="ghost_module: stride")
    p.add_argument("--features-only", action="store_true", help="profile the multi-scale backbone (no head)")
    p.add_argument("--per-layer", action="store_true", help="one row per layer")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser(
        "ghostify",
        help="turn a CNN's convolutions into Ghost modules and report the saving",
        description="Replace every Conv2d of a model (ours or torchvision's, e.g. resnet50) with a Ghost module of the "
        "same channels, kernel, stride, padding and dilation; grouped/depthwise convs and the first conv are kept.",
    )
    p.add_argument("model", help="a registered model or a torchvision model name (resnet50, vgg16_bn, ...)")
    p.add_argument("--ratio", type=_positive_int, default=2, help="s")
    p.add_argument("--dw-size", type=_positive_int, default=3, help="d")
    p.add_argument("--skip", nargs="+", default=[], metavar="NAME", help="layer names or patterns to keep (e.g. 'layer4.*')")
    p.add_argument("--replace-first", action="store_true", help="also replace the first conv")
    p.add_argument("--input-size", type=_positive_int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ghostify)

    from .config import add_config_arguments, list_recipes

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

    p = sub.add_parser(
        "ablate",
        help="the paper's s/d ablation: train each Ghost variant with one recipe and seed",
        description="Train the baseline and its Ghost versions for each s (at d=3) and each d (at s=2) with one "
        "shared recipe and seed; write results.md, results.csv and acc_vs_macs.png. Running it again skips finished "
        "variants and resumes an interrupted one.",
    )
    p.add_argument("--model", required=True, choices=["vgg16", "resnet56"], help="the baseline")
    p.add_argument("--ratios", type=_positive_int, nargs="+", default=[2, 3, 4, 5], help="s values (at d=3)")
    p.add_argument("--dw-sizes", type=_positive_int, nargs="+", default=[1, 3, 5, 7], help="d values (at s=2)")
    p.add_argument("--sweep-dir", help="default: OUTPUT_DIR/ablate-MODEL-DATASET")
    p.add_argument("--complexity-only", action="store_true", help="params and MACs only, no training")
    p.add_argument("--config", help="the shared recipe: a YAML file or a bundled recipe name (e.g. cifar)")
    add_config_arguments(p, exclude=("model", "ratio", "dw_size", "name", "resume", "overwrite"))
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "visualize",
        help="feature-map figures (paper Fig. 1 and 6) and a dataset preview, as PNG",
        description="ghost: a Ghost module's intrinsic maps beside the ghost maps made from them (Fig. 6). "
        "redundancy: the most similar pairs of an ordinary layer's output maps and their similarity matrix (Fig. 1). "
        "dataset: a grid of images per class.",
    )
    p.add_argument("figure", choices=["ghost", "redundancy", "dataset"])
    p.add_argument("image", nargs="?", help="the input image (ghost, redundancy)")
    p.add_argument("--model", help="a registered or torchvision model name")
    p.add_argument("--checkpoint", help="weights: our checkpoint, or a state dict (with --model)")
    p.add_argument("--ghostify", action="store_true", help="turn the model's convs into Ghost modules first")
    p.add_argument("--ratio", type=_positive_int, default=2)
    p.add_argument("--dw-size", type=_positive_int, default=3)
    p.add_argument("--layer", help="the layer to show (default: the first suitable one)")
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--dataset", default="digits", help="for the dataset preview")
    p.add_argument("--data-dir")
    p.add_argument("--output", help="the PNG to write")
    p.set_defaults(func=cmd_visualize)

    from .deploy import FORMATS

    p = sub.add_parser(
        "export",
        help="write ONNX / TorchScript / ExportedProgram, checked against PyTorch",
        description="Export a registered model (random weights) or a checkpoint; the file is validated (ONNX checker "
        "and ONNX Runtime, or reloading) and must match PyTorch to 1e-4.",
    )
    p.add_argument("model", nargs="?", help="a registered model (optional with --checkpoint of ours)")
    p.add_argument("--checkpoint", help="our checkpoint, or an official/timm state dict (with MODEL)")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--output", help="the file to write (must not exist)")
    p.add_argument("--fuse", action="store_true", help="fold BatchNorm into the convs first")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size")
    p.add_argument("--input-size", type=_positive_int, nargs=2, metavar=("H", "W"))
    p.add_argument("--features-only", action="store_true", help="export the multi-scale backbone")
    p.add_argument("--out-indices", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--opset", type=_positive_int, default=18)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "quantize",
        help="int8 post-training quantization (ONNX Runtime), accuracy and speed vs fp32",
        description="Export a trained checkpoint to ONNX (BN folded), quantize it to int8 with calibration on real "
        "training images of its dataset, and report top-1 on the test split and batch-1 latency, fp32 vs int8.",
    )
    p.add_argument("checkpoint", help="our checkpoint")
    p.add_argument("--output", required=True, help="the int8 .onnx to write (the fp32 one is written beside it)")
    p.add_argument("--calibration-images", type=_positive_int, default=512)
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=_positive_int, help="ONNX Runtime threads for the latency figure")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser(
        "bench",
        help="latency/throughput of our model in each deploy form against peers, in one run",
        description="Times our model eager, BN-folded + channels_last, torch.compile'd, in ONNX Runtime fp32 and int8, "
        "and timm's ghostnet_100 (if installed) and torchvision's mobilenet_v3_large, mobilenet_v2 and resnet18, eager "
        "and in ONNX Runtime, with pinned threads and warm-up; ratios against one baseline of the same run.",
    )
    p.add_argument("--model", default="ghostnet_100")
    p.add_argument("--input-size", type=_positive_int)
    p.add_argument("--batch-sizes", type=_positive_int, nargs="+", help="default 1 32 (1 gives latency)")
    p.add_argument("--threads", type=_positive_int, help="default: all cores")
    p.add_argument("--runs", type=_positive_int, help="timed runs at batch 1 (default 50)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="include torch.compile (slow to compile on CPU)")
    p.add_argument("--no-onnx", action="store_true")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--baseline", help="'MODEL / FORM' to take ratios against (default: timm ghostnet_100 / eager)")
    p.add_argument("--quick", action="store_true", help="a few runs at 64x64: checks the harness, not the machine")
    p.add_argument("--json", action="store_true")
    p.add_argument("--output", help="also write the JSON here")
    p.add_argument("--plot", help="also draw latency vs MACs into this PNG")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="top-1/top-5 (and confusion matrix) of a checkpoint on a dataset")
    p.add_argument("checkpoint", help="our checkpoint, or an official/timm state dict (with --model)")
    p.add_argument("--model", help="model name, for bare state dicts (e.g. ghostnet_100)")
    p.add_argument("--dataset", help="default: the dataset the checkpoint was trained on")
    p.add_argument("--data-dir")
    p.add_argument("--image-size", type=_positive_int)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--ema", action="store_true", help="evaluate the EMA weights")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="top-k classes for image files or folders")
    p.add_argument("images", nargs="+", help="image files and/or folders")
    p.add_argument("--checkpoint", required=True, help="our checkpoint, or an official/timm state dict (with --model)")
    p.add_argument("--model", help="model name, for bare state dicts")
    p.add_argument("--topk", type=_positive_int, default=5)
    p.add_argument("--ema", action="store_true", help="use the EMA weights")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predict)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from .checkpoint import CheckpointError
    from .data import DatasetError
    from .train import RunDirError

    try:
        return func(args)
    except (UsageError, CheckpointError, DatasetError, RunDirError) as e:
        parser.exit(2, f"ghostnet {args.command}: error: {e}\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
