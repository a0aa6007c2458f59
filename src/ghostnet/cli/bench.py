"""`ghostnet bench latency|train|profile`: our model against its peers (`ghostnet.bench`), each mode with its own
options; the options become one `BenchSetup`, which checks them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..tasks.options import CommandParser, positive_int

__all__ = ["add_parsers", "cmd_bench"]

MODEL_HELP = (
    "a registered model (default ghostnet_100, or the checkpoint's; ghost_resnet56 and ghost_vgg16 are timed against "
    "resnet56 and vgg16), a segmenter (lraspp_ghostnet_100, deeplabv3_ghostnet_100: against torchvision's LR-ASPP / "
    "DeepLabV3 MobileNetV3-Large), or ghostify:NAME (torchvision's NAME made Ghost, against NAME)"
)


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench import (
        BenchSetup,
        format_latency,
        format_profile,
        format_train,
        plot_latency,
        run_latency,
        run_profile,
        run_train,
    )
    from ..deploy.export import check_output_path

    for out in (args.output, getattr(args, "plot", None)):
        if out:
            check_output_path(out)  # before the run, not after it
    sizes = ("input_size", "batch_sizes")
    options = {k: v for k, v in vars(args).items() if k in BenchSetup.__dataclass_fields__ and k not in sizes}
    options = {k: v for k, v in options.items() if v is not None}
    if getattr(args, "checkpoint", None):  # a trained classifier: its own data scores each form
        from ..tasks.classify.quantize import checkpoint_data

        options["trained_data"] = checkpoint_data
    setup = BenchSetup(input_size=tuple(args.input_size or ()), batch_sizes=tuple(args.batch_sizes or ()), **options)
    say = None if args.json else (lambda s: print(f"  {s}", file=sys.stderr))
    result: Any = {"latency": run_latency, "train": run_train, "profile": run_profile}[args.mode](setup, say)
    if args.output:
        from pathlib import Path

        from ..engine.runs import write_text

        write_text(Path(args.output), json.dumps(result.to_dict(), indent=2) + "\n")
    if getattr(args, "plot", None):
        plot_latency(result, args.plot)
    text: Any = {"latency": format_latency, "train": format_train, "profile": format_profile}[args.mode]
    print(json.dumps(result.to_dict(), indent=2) if args.json else text(result))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="our model against its peers: latency of every deploy form, training step, profile"
    )
    modes = p.add_subparsers(dest="mode", metavar="MODE", parser_class=CommandParser, required=True)
    latency = modes.add_parser(
        "latency",
        help="latency/throughput of our model in each deploy form against peers, in one run",
        description="Times our model eager, BN-folded + channels_last, torch.compile'd, in ONNX Runtime fp32 and "
        "int8, and timm's ghostnet_100 (if installed) and torchvision's mobilenet_v3_large, mobilenet_v2 and "
        "resnet18, eager and in ONNX Runtime, round-robin with pinned threads and warm-up; ratios against one "
        "baseline of the same run. --runtimes adds OpenVINO, ExecuTorch, LiteRT (fp32 and int8 of every model) and "
        "ncnn (fp32); --checkpoint adds each form's top-1 on the checkpoint's test split.",
    )
    train = modes.add_parser(
        "train",
        help="training-step images/s and peak memory (each model in a fresh process, interleaved, best of 2 rounds)",
    )
    profile = modes.add_parser(
        "profile",
        help="op time per op type of each form (torch.profiler; ONNX Runtime's profiler), convs split into dense "
        "and depthwise",
    )
    for q, runs in (
        (latency, "timed runs at batch 1 (default 50)"),
        (train, "timed steps (default 10)"),
        (profile, "profiled calls at batch 1 (default 20)"),
    ):
        _add_common(q, runs)
    _add_latency(latency)
    train.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    train.add_argument("--bf16", action="store_true", help="train under bf16 autocast")
    train.add_argument("--channels-last", action="store_true", help="train in channels_last")
    profile.add_argument("--runtimes", default="torch,ort", help="comma-separated: torch, ort")
    profile.add_argument(
        "--int8", action="store_true", help="also profile ONNX Runtime int8 (calibrated on random inputs)"
    )
    profile.add_argument("--concat-free", action="store_true", help="also ours' concat-free deploy form")
    profile.add_argument("--train-step", action="store_true", help="profile the training step (default batch 32)")
    profile.add_argument("--channels-last", action="store_true", help="with --train-step: train in channels_last")


def _add_common(p: argparse.ArgumentParser, runs_help: str) -> None:
    """The options every mode has: the model, its input, batch sizes, threads, runs, peers, the outputs."""
    p.add_argument("--model", dest="model_name", metavar="MODEL", help=MODEL_HELP)
    p.add_argument(
        "--input-size", type=positive_int, nargs="+", metavar="SIZE",
        help="H W, or one size for a square (default the model's registered size: 32 for CIFAR models, else 224; "
        "64 with --quick)",
    )  # fmt: skip
    p.add_argument("--batch-sizes", type=positive_int, nargs="+", help="batch sizes (latency: 1 gives the latency)")
    p.add_argument("--threads", type=positive_int, help="default: all cores")
    p.add_argument("--runs", type=positive_int, help=runs_help)
    p.add_argument("--no-peers", dest="peers", action="store_false")
    p.add_argument("--quick", action="store_true", help="a few runs at 64x64: checks the harness, not the machine")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", help="also write the JSON here")
    p.set_defaults(func=cmd_bench)


def _add_latency(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtimes", default="torch,ort",
        help="comma-separated: torch, ort, openvino, executorch, tflite, ncnn; an edge runtime times every model as "
        "<label>-fp32 and <label>-int8 (ov, et, tflite; ncnn fp32 only), converted per batch size",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (batch sizes default 1 32 256 there)")
    p.add_argument("--compile", action="store_true", help="include torch.compile (slow to compile on CPU)")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, help="add bf16-autocast forms (default: on CUDA)")
    p.add_argument("--no-onnx", dest="onnx", action="store_false", help="leave ONNX Runtime (ort) out of --runtimes")
    p.add_argument("--no-int8", dest="int8", action="store_false")
    p.add_argument("--baseline", help="'MODEL / FORM' to take ratios against (default: timm's model, eager)")
    p.add_argument("--plot", help="also draw latency vs MACs into this PNG")
    p.add_argument(
        "--concat-free", action="store_true", help="also time ours' concat-free deploy form (ghost_deploy_form)"
    )
    p.add_argument(
        "--checkpoint",
        help="our trained checkpoint: ours is built from it (its input size), int8 calibrated on its training split, "
        "and each form of ours gets its top-1 on the test split",
    )
    p.add_argument("--eval-images", type=positive_int, default=500, help="with --checkpoint: test images scored")
    p.add_argument("--data-dir", help="with --checkpoint: where its dataset is, if not where it was at training")
