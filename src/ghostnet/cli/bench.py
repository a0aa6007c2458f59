"""`ghostnet bench`: our model in each deploy form against its peers, timed in one run; with --train-step its
training step, with --profile where each form's time goes."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..tasks.options import UsageError, positive_int

__all__ = ["add_parsers", "cmd_bench"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    _add_bench(sub)


def _bench_size(given: list[int] | None, default: int | None) -> int | tuple[int, int] | None:
    """--input-size as run_bench takes it: one int (a square) or (H, W); `default` (None: the checkpoint's, or the model's registered size)."""
    if not given:
        return default
    if len(given) > 2:
        raise UsageError(f"--input-size takes H W or one size for a square, got {len(given)} numbers")
    return given[0] if len(given) == 1 else (given[0], given[1])


def cmd_bench(args: argparse.Namespace) -> int:
    from ..deploy.export import check_output_path

    _check_mode(args)
    for out in (args.output, args.plot):
        if out:
            check_output_path(out)  # before the run, not after it
    if args.train_step and not args.profile:
        from ..deploy.bench_train import format_train_bench

        result, text = _bench_train(args), format_train_bench
    elif args.profile:
        from ..deploy.bench_profile import format_profile

        result, text = _bench_profile(args), format_profile
    else:
        from ..deploy.bench import format_bench

        result, text = _bench_forms(args), format_bench
    if args.output:
        from pathlib import Path

        from ..engine.runs import write_text

        write_text(Path(args.output), json.dumps(result, indent=2) + "\n")
    if args.plot:
        from ..deploy.bench import plot_bench

        plot_bench(result, args.plot)
    print(json.dumps(result, indent=2) if args.json else text(result))
    return 0


def _say(args: argparse.Namespace) -> Any:
    """Progress lines on stderr, none with --json."""
    return None if args.json else (lambda s: print(f"  {s}", file=sys.stderr))


def _check_mode(args: argparse.Namespace) -> None:
    """Refuse options that the chosen mode (timing, --train-step, --profile) would ignore."""
    modes = [flag for flag, on in (("--train-step", args.train_step), ("--profile", args.profile)) if on]
    if not modes:
        if args.channels_last:
            raise UsageError("--channels-last applies to --train-step (the timed forms include channels_last)")
        return
    mode = " ".join(modes)
    given = {
        "--checkpoint": args.checkpoint,
        "--compile": args.compile,
        "--baseline": args.baseline,
        "--plot": args.plot,
        "--no-int8": args.no_int8,
        "--bf16": args.bf16 is not None and bool(args.profile),
        "--concat-free": args.concat_free and args.train_step,
        "--channels-last": args.channels_last and not args.train_step,
        "--device": args.device != "cpu" and bool(args.profile),
    }
    if bad := [flag for flag, on in given.items() if on]:
        raise UsageError(f"{', '.join(bad)} cannot be used with {mode}")
    allowed = {"torch"} if args.train_step else {"torch", "ort"}
    if args.runtimes != "torch,ort" and set(_runtimes(args)) - allowed:
        raise UsageError(f"{mode} covers {', '.join(sorted(allowed))}; leave out --runtimes {args.runtimes}")


def _runtimes(args: argparse.Namespace) -> tuple[str, ...]:
    """--runtimes as the library reads it (unknown or uninstalled names refused), less ``ort`` with --no-onnx."""
    from ..deploy.bench_runtimes import resolve_runtimes

    return resolve_runtimes(args.runtimes, not args.no_onnx)


def _bench_train(args: argparse.Namespace) -> dict[str, Any]:
    """`ghostnet bench --train-step`."""
    from ..deploy.bench import resolve_input_size
    from ..deploy.bench_train import run_train_bench

    name = args.model or "ghostnet_100"
    return run_train_bench(
        name,
        resolve_input_size(name, _bench_size(args.input_size, 64 if args.quick else None)),
        tuple(args.batch_sizes or ([4] if args.quick else [32])),
        threads=args.threads,
        steps=args.runs or (2 if args.quick else 10),
        warmup=1 if args.quick else 3,
        device=args.device,
        peers=not args.no_peers,
        bf16=bool(args.bf16),
        channels_last=args.channels_last,
        progress=_say(args),
    )


def _bench_profile(args: argparse.Namespace) -> dict[str, Any]:
    """`ghostnet bench --profile` (of the training step, with --train-step)."""
    import os

    from ..deploy.bench import resolve_input_size
    from ..deploy.bench_profile import run_profile

    name = args.model or "ghostnet_100"
    return run_profile(
        name,
        resolve_input_size(name, _bench_size(args.input_size, 64 if args.quick else None)),
        tuple(args.batch_sizes or ([1] if args.quick or not args.train_step else [32])),
        threads=args.threads or (os.cpu_count() or 1),
        runs=args.runs or (2 if args.quick else 20),
        peers=not args.no_peers,
        concat_free=args.concat_free,
        runtimes=_runtimes(args),
        train_step=args.train_step,
        channels_last=args.channels_last,
        progress=_say(args),
    )


def _bench_forms(args: argparse.Namespace) -> dict[str, Any]:
    """`ghostnet bench`: every form timed."""
    from ..deploy.bench import run_bench

    quick = args.quick
    return run_bench(
        args.model if args.checkpoint else args.model or "ghostnet_100",
        _bench_size(args.input_size, 64 if quick and not args.checkpoint else None),
        tuple(args.batch_sizes or ([1, 4] if quick else [])),
        args.threads,
        args.runs or (3 if quick else 50),
        1 if quick else 10,
        args.device,
        compile=args.compile,
        onnx=not args.no_onnx,
        int8=not args.no_int8,
        peers=not args.no_peers,
        baseline=args.baseline,
        progress=None if args.json else (lambda s: print(f"  timing {s}", file=sys.stderr)),
        concat_free=args.concat_free,
        bf16=args.bf16,
        runtimes=args.runtimes,
        checkpoint=args.checkpoint,
        eval_images=args.eval_images,
        data_dir=args.data_dir,
    )


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="latency/throughput of our model in each deploy form against peers, in one run",
        description="Times our model eager, BN-folded + channels_last, torch.compile'd, in ONNX Runtime fp32 and int8, "
        "and timm's ghostnet_100 (if installed) and torchvision's mobilenet_v3_large, mobilenet_v2 and resnet18, eager "
        "and in ONNX Runtime, with pinned threads and warm-up; ratios against one baseline of the same run. "
        "--runtimes adds OpenVINO, ExecuTorch, LiteRT (fp32 and int8 of every model) and ncnn (fp32); --checkpoint "
        "adds each form's top-1 on the checkpoint's test split.",
    )
    p.add_argument(
        "--model",
        help="a registered model (default ghostnet_100, or the checkpoint's; ghost_resnet56 and ghost_vgg16 are timed "
        "against resnet56 and vgg16), a segmenter (lraspp_ghostnet_100, deeplabv3_ghostnet_100: against torchvision's "
        "LR-ASPP / DeepLabV3 MobileNetV3-Large), or ghostify:NAME (torchvision's NAME made Ghost, against NAME)",
    )
    _add_bench_runtimes(p)
    p.add_argument(
        "--input-size",
        type=positive_int,
        nargs="+",
        metavar="SIZE",
        help="H W, or one size for a square (default the model's registered size: 32 for CIFAR models, else 224; "
        "64 with --quick)",
    )
    p.add_argument(
        "--batch-sizes", type=positive_int, nargs="+", help="default 1 32, and 256 on CUDA (1 gives latency)"
    )
    p.add_argument("--threads", type=positive_int, help="default: all cores")
    p.add_argument("--runs", type=positive_int, help="timed runs at batch 1 (default 50)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--compile", action="store_true", help="include torch.compile (slow to compile on CPU)")
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add bf16-autocast forms (default: on CUDA only)",
    )
    p.add_argument("--no-onnx", action="store_true", help="leave out ONNX Runtime (ort) from --runtimes")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--no-peers", action="store_true")
    p.add_argument(
        "--baseline", help="'MODEL / FORM' to take ratios against (default: timm's model of the same name, eager)"
    )
    p.add_argument("--quick", action="store_true", help="a few runs at 64x64: checks the harness, not the machine")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--output", help="also write the JSON here")
    p.add_argument("--plot", help="also draw latency vs MACs into this PNG")
    _add_bench_modes(p)
    p.set_defaults(func=cmd_bench)


def _add_bench_modes(p: argparse.ArgumentParser) -> None:
    """`ghostnet bench`'s other measurements: the training step, the per-op profile, the concat-free form."""
    p.add_argument(
        "--train-step",
        action="store_true",
        help="time the training step instead (images/s and peak memory; each model in a fresh process, interleaved, "
        "best of two rounds; --runs timed steps, default 10; --batch-sizes default 32; --bf16 autocast)",
    )
    p.add_argument("--channels-last", action="store_true", help="with --train-step: train in channels_last")
    p.add_argument(
        "--profile",
        action="store_true",
        help="op time per op type of each form instead (torch.profiler; ONNX Runtime's profiler), convs split into "
        "dense and depthwise; with --train-step, of the training step",
    )
    p.add_argument(
        "--concat-free",
        action="store_true",
        help="also time ours' concat-free deploy form (ghost_deploy_form) as a model of its own",
    )


def _add_bench_runtimes(p: argparse.ArgumentParser) -> None:
    """`ghostnet bench`'s runtimes and checkpoint options."""
    p.add_argument(
        "--runtimes",
        default="torch,ort",
        help="comma-separated: torch, ort, openvino, executorch, tflite, ncnn (default torch,ort); an edge runtime "
        "times every model as <label>-fp32 and <label>-int8 (ov, et, tflite; ncnn fp32 only), converted per batch size",
    )
    p.add_argument(
        "--checkpoint",
        help="our trained checkpoint: ours is built from it (its input size), int8 calibrated on its training "
        "split, and each form of ours gets its top-1 on the test split",
    )
    p.add_argument(
        "--eval-images", type=positive_int, default=500, help="with --checkpoint: test images scored (batch 1)"
    )
    p.add_argument("--data-dir", help="with --checkpoint: where its dataset is, if not where it was at training")
