"""Commands about models: list, profile, ghostify, visualize."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from ..models.registry import TASK_NAMES
from ..tasks.options import UsageError, positive_float, positive_int


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


# Figures typed into a builder's docstring; `list` shows the measured ones (analysis/model_table.json) instead.
_TYPED_FIGURES = re.compile(
    r"(?::\s*)?\d+(?:\.\d+)?[KMG] params, \d+(?:\.\d+)?[KMG] MACs(?: at \d+)?"
    r"|\(folded: [\d.]+[KMG], [\d.]+[KMG]\)|folded: [\d.]+[KMG], [\d.]+[KMG];\s*"
)


def describe(description: str) -> str:
    """A builder's one-line description without the figures typed into it."""
    text = _TYPED_FIGURES.sub("", description)
    return re.sub(r"\s+([.,;])", r"\1", re.sub(r"\s{2,}", " ", text)).strip()


def _count(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.2f}M"


def cmd_list(args: argparse.Namespace) -> int:
    from ..analysis.model_table import load_table
    from ..models import list_models, model_entry
    from ..models.hub import models_with_weights

    published = models_with_weights()  # name -> its sources, preferred (what pretrained=True loads) first
    table = load_table()  # measured by the profiler at each model's defaults (scripts/model_table.py)
    print(f"{'model':<24} {'task':<8} {'params':>7} {'MACs':>8} {'at':>4}  description")
    for name in list_models(args.pattern, task=args.task):
        row = table.get(name, {})
        weights = f"  [ImageNet weights] {', '.join(published[name])}" if name in published else ""
        figures = f"{_count(row.get('params')):>7} {_count(row.get('macs')):>8} {row.get('input_size', '?'):>4}"
        print(f"{name:<24} {model_entry(name).task:<8} {figures}  {describe(model_entry(name).description)}{weights}")
    return 0


# ---------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> int:
    from ..analysis.profile import format_ghost_module, format_profile, profile_ghost_module, profile_model

    size = tuple(args.input_size) if args.input_size else None
    if args.model == "ghost_module":
        if args.in_chans is None or args.out_chans is None:
            raise UsageError("profile ghost_module needs --in-chans and --out-chans")
        r = profile_ghost_module(
            args.in_chans,
            args.out_chans,
            args.kernel_size,
            args.ratio,
            args.dw_size,
            args.stride,
            size or (56, 56),
        )
        print(json.dumps(r, indent=2) if args.json else format_ghost_module(r))
        return 0

    from ..models import create_model, model_entry

    kwargs = _model_kwargs(args)
    if args.features_only:
        kwargs["features_only"] = True
    model = create_model(args.model, **kwargs)
    if size is None:  # the size the model is made for (112 for the face models, 32 for the CIFAR ones, else 224)
        side = model_entry(args.model).default_cfg.get("input_size", 224)
        size = (side, side)
    p = profile_model(model, size, name=args.model + (f" (width {args.width})" if args.width else ""))
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
    from ..models import create_model, list_models

    if name in list_models():
        return create_model(name)
    import torchvision

    try:
        return torchvision.models.get_model(name, weights=None)
    except ValueError:
        raise UsageError(f"unknown model {name!r}: not in our registry (`ghostnet list`) nor torchvision's") from None


def cmd_ghostify(args: argparse.Namespace) -> int:
    from ..analysis.profile import profile_model
    from ..nn.ghostify import ghostify_report

    model = _build_any_model(args.model)
    report = ghostify_report(
        model, args.ratio, args.dw_size, skip=args.skip, keep_first=not args.replace_first, version=args.ghost_version
    )
    size = tuple(args.input_size)
    for when, net in (("before", model), ("after", report.model)):
        p = profile_model(net, size)
        setattr(report, when, {"params": p.params, "macs": p.macs, "input_size": list(size)})
    if args.json:
        from dataclasses import asdict

        rows = [asdict(r) for r in report.layers]
        print(
            json.dumps(
                {
                    "model": args.model,
                    "ratio": args.ratio,
                    "dw_size": args.dw_size,
                    "message": report.message,
                    "before": report.before,
                    "after": report.after,
                    "layers": rows,
                },
                indent=2,
            )
        )
    else:
        print(report.format())
    return 0


# ---------------------------------------------------------------- visualize


def _figure_path(args: argparse.Namespace, name: str) -> Path:
    """--output, else figures/NAME (not the current folder); an existing file is replaced only with --overwrite."""
    path = Path(args.output) if args.output else Path("figures") / name
    if path.exists() and not args.overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it, or another --output")
    return path


def cmd_visualize(args: argparse.Namespace) -> int:
    if args.figure == "dataset":
        return _visualize_dataset(args)
    if not args.image:
        raise UsageError(f"the {args.figure} figure needs an input IMAGE")
    out = _figure_path(args, f"{args.figure}-{Path(args.image).stem}.png")
    model, x = _model_and_image(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    return _visualize_maps(args.figure, model, x, args.layer, str(out))


def _visualize_dataset(args: argparse.Namespace) -> int:
    from ..analysis import visualize as viz
    from ..data import load_dataset

    out = _figure_path(args, f"{args.dataset}-preview.png")
    data = load_dataset(args.dataset, args.data_dir, False, None)
    if not data.in_memory:
        raise UsageError("the dataset preview works on in-memory datasets (digits, mnist, fashion_mnist, cifar10/100)")
    out.parent.mkdir(parents=True, exist_ok=True)
    path = viz.plot_dataset_preview(
        data.train.images,
        data.train.labels,
        data.classes,
        str(out),
        title=data.name,
    )
    print(f"wrote {path}")
    return 0


def _model_and_image(args: argparse.Namespace):
    """The model to look into (a checkpoint's, or a registry/torchvision one) and the image as its input batch."""
    from PIL import Image, UnidentifiedImageError

    from ..data.images import Preprocess
    from ..models import list_models, model_entry
    from ..nn.ghostify import ghostify
    from ..tasks.classify.evaluate import load_model

    if args.checkpoint:
        model, prep, _ = load_model(args.checkpoint, args.model)
    else:
        if not args.model:
            raise UsageError("give --model (and optionally --checkpoint)")
        model = _build_any_model(args.model)
        print(
            f"note: no --checkpoint, so {args.model} has random weights: its maps show the architecture, not learning"
        )
        size = model_entry(args.model).default_cfg.get("input_size", 224) if args.model in list_models() else 224
        prep = Preprocess(image_size=size, center_crop=size >= 128)
    if args.image_size:
        prep.image_size = args.image_size
    if args.ghostify:
        model = ghostify(model, args.ratio, args.dw_size)
    try:
        with Image.open(args.image) as im:
            x = prep.transform()(im).unsqueeze(0)
    except (FileNotFoundError, UnidentifiedImageError, OSError) as e:
        raise UsageError(f"cannot read image {args.image}: {e}") from None
    return model, x


def _visualize_maps(figure: str, model, x, layer: str | None, out: str) -> int:
    import torch

    from ..analysis import visualize as viz

    with torch.no_grad():
        if figure == "ghost":
            info = viz.plot_ghost_maps(model, x, layer, out)
            print(
                f"wrote {out}: {info['rows']} intrinsic maps of {info['layer']} with their ghosts "
                f"(mean correlation ghost-to-source {info['mean_correlation']:.2f})"
            )
        else:
            info = viz.plot_redundant_pairs(model, x, layer, out)
            pairs = ", ".join(f"{i}&{j} ({s:.2f})" for i, j, s in info["pairs"][:3])
            print(f"wrote {out}: {info['maps']} maps of {info['layer']}; most similar pairs: {pairs}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_list(sub)
    _add_profile(sub)
    _add_ghostify(sub)
    _add_ablate(sub)
    _add_visualize(sub)


def _add_ablate(sub: argparse._SubParsersAction) -> None:
    from ..tasks.classify.cli import ablate_arguments, cmd_ablate

    p = sub.add_parser(
        "ablate",
        help="the paper's s/d ablation: train each Ghost variant with one recipe and seed",
        description="Train the baseline and its Ghost versions for each s (at d=3) and each d (at s=2) with one "
        "shared recipe and seed; write results.md, results.csv and acc_vs_macs.png. Running it again skips finished "
        "variants and resumes an interrupted one.",
    )
    ablate_arguments(p)
    p.set_defaults(func=cmd_ablate)


def _add_list(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the registered models",
        description="The registered models: params and MACs at their default arguments and input size (measured "
        "by the profiler; `ghostnet profile` gives any other size), a one-line description, and which have published "
        "ImageNet weights (and from where).",
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ghostnet_*'")
    p.add_argument("--task", choices=TASK_NAMES, help="only the models of this task")
    p.set_defaults(func=cmd_list)


def _add_profile(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "profile",
        help="params, MACs and activation memory of a model (or of one Ghost module)",
        description="Count parameters, MACs (the paper's FLOPs) and activation memory by running the model. "
        "MODEL 'ghost_module' profiles a single Ghost module against the plain conv it replaces.",
    )
    p.add_argument("model", help="a registered model name (see `ghostnet list`), or 'ghost_module'")
    p.add_argument("--width", type=positive_float, help="width multiplier (with MODEL 'ghostnet')")
    p.add_argument(
        "--input-size",
        type=positive_int,
        nargs=2,
        metavar=("H", "W"),
        help="default: the size the model is made for (224; 32 for CIFAR models, 112 for face models; 56 for ghost_module)",
    )
    p.add_argument("--num-classes", type=positive_int)
    p.add_argument("--in-chans", type=positive_int, help="input channels (ghost_module: c)")
    p.add_argument("--out-chans", type=positive_int, help="ghost_module: output channels n")
    p.add_argument("--kernel-size", type=positive_int, default=1, help="ghost_module: primary kernel k")
    p.add_argument("--ratio", type=positive_int, default=2, help="ghost_module: ratio s")
    p.add_argument("--dw-size", type=positive_int, default=3, help="ghost_module: cheap kernel d")
    p.add_argument("--stride", type=positive_int, default=1, help="ghost_module: stride")
    p.add_argument("--features-only", action="store_true", help="profile the multi-scale backbone (no head)")
    p.add_argument("--per-layer", action="store_true", help="one row per layer")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_profile)


def _add_ghostify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ghostify",
        help="turn a CNN's convolutions into Ghost modules and report the saving",
        description="Replace every Conv2d of a model (ours or torchvision's, e.g. resnet50) with a Ghost module of the "
        "same channels, kernel, stride, padding and dilation; grouped/depthwise convs and the first conv are kept.",
    )
    p.add_argument("model", help="a registered model or a torchvision model name (resnet50, vgg16_bn, ...)")
    p.add_argument("--ratio", type=positive_int, default=2, help="s")
    p.add_argument("--dw-size", type=positive_int, default=3, help="d")
    p.add_argument(
        "--skip", nargs="+", default=[], metavar="NAME", help="layer names or patterns to keep (e.g. 'layer4.*')"
    )
    p.add_argument("--replace-first", action="store_true", help="also replace the first conv")
    p.add_argument(
        "--ghost-version",
        choices=["v1", "v2", "v3"],
        default="v1",
        help="the module put in: v1 Ghost module, v2 with DFC attention, v3 re-parameterisable (training form)",
    )
    p.add_argument("--input-size", type=positive_int, nargs=2, default=(224, 224), metavar=("H", "W"))
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_ghostify)


def _add_visualize(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--ratio", type=positive_int, default=2)
    p.add_argument("--dw-size", type=positive_int, default=3)
    p.add_argument("--layer", help="the layer to show (default: the first suitable one)")
    p.add_argument("--image-size", type=positive_int)
    p.add_argument("--dataset", default="digits", help="for the dataset preview")
    p.add_argument("--data-dir")
    p.add_argument("--output", help="the PNG to write (default: figures/FIGURE-IMAGE.png, figures/DATASET-preview.png)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=cmd_visualize)
