"""Training-step throughput and peak memory: our GhostNet against timm's, or a Ghost CIFAR model against its
baseline (``--pair resnet56``: Ghost-ResNet-56 / ResNet-56; ``--pair vgg16``), same settings, same run.

Each model is timed in its own child process (so the peak memory of one cannot hide in another's):
forward + cross-entropy + backward + SGD step on random images, after warm-up steps. Peak memory is the
CUDA allocator's peak on a GPU, and on the CPU the process's peak resident set size (ru_maxrss) less its size
before the model was built (torch's own libraries).

    python benchmarks/train_step.py                                   # CPU, batch 32 at 224
    python benchmarks/train_step.py --device cuda --batch-size 256 --amp bf16 --channels-last
    python benchmarks/train_step.py --pair resnet56 --batch-size 128 --threads 1   # CIFAR pair, 32x32
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time

# pair -> (ours, baseline, the baseline's label, classes, default image size); "timm NAME" is built by timm
PAIRS = {
    "ghostnet": ("ghostnet_100", "timm ghostnet_100", "timm", 1000, 224),
    "resnet56": ("ghost_resnet56", "resnet56", "resnet56", 10, 32),
    "vgg16": ("ghost_vgg16", "vgg16", "vgg16", 10, 32),
}


def positive_int(text: str) -> int:
    """argparse type (kept here rather than imported from ghostnet, whose import would land in the base memory)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _child(args: argparse.Namespace) -> None:
    import resource

    import torch
    import torch.nn.functional as F

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    torch.manual_seed(0)
    base = rss() if args.device == "cpu" else 0  # torch and its libraries, before any model exists
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # the syncs and the peak-memory counters below then measure this GPU
    ours, baseline, _, classes, _ = PAIRS[args.pair]
    name = ours if args.which == "ours" else baseline
    if name.startswith("timm "):
        import timm

        model = timm.create_model(name[5:])
    else:
        from ghostnet import create_model

        model = create_model(name)
    model = model.to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (args.batch_size,), device=device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if args.amp == "bf16" and device.type == "cuda" else None

    def step() -> None:
        if amp is not None:
            with amp:
                loss = F.cross_entropy(model(x), y)
        else:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    peak = (
        torch.cuda.max_memory_allocated()
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    )
    print(
        json.dumps(
            {"model": args.which, "median_step_s": median, "images_per_s": args.batch_size / median, "peak_bytes": peak}
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=positive_int, default=32)
    ap.add_argument("--pair", choices=sorted(PAIRS), default="ghostnet", help="ghostnet (ours / timm), resnet56, vgg16")
    ap.add_argument("--image-size", type=positive_int, help="default 224, and 32 for the CIFAR pairs")
    ap.add_argument("--steps", type=positive_int, default=10)
    ap.add_argument("--warmup", type=positive_int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--which", choices=["ours", "base"], help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
    ours, _, base_label, _, default_size = PAIRS[args.pair]
    args.image_size = args.image_size or default_size
    if args.image_size < 32:
        ap.error("--image-size must be at least 32 (GhostNet downsamples 32x)")
    missing = [m for m in ("torch", "ghostnet") if importlib.util.find_spec(m) is None]
    if missing:  # run outside the project's environment: say how to run it
        ap.exit(
            1,
            f"{sys.argv[0]}: No module named {missing[0]!r}; run it with `uv run python {sys.argv[0]}` (or pip install -e . first)\n",
        )
    import torch  # here, not at the top: the child measures memory before and after importing it

    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: CUDA is not available on this machine")
    if args.which:
        _child(args)
        return
    rows = []
    for which in ("base", "ours", "base", "ours"):  # interleaved, twice: drift on a shared machine shows up
        cmd = [sys.executable, __file__, "--which", which, "--image-size", str(args.image_size)] + sys.argv[1:]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:  # the child's own last line, not a CalledProcessError around it
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            ap.exit(1, f"train_step.py: the {which} run failed: {last}\n")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {w: max((r for r in rows if r["model"] == w), key=lambda r: r["images_per_s"]) for w in ("ours", "base")}
    print(
        f"train step, {ours} / {base_label}, batch {args.batch_size} at {args.image_size}, {args.device}, "
        f"amp {args.amp}, channels_last {args.channels_last}, {platform.processor() or platform.machine()}"
    )
    for r in rows:
        label = "ours" if r["model"] == "ours" else base_label
        print(f"  {label:>8}: {r['images_per_s']:8.1f} img/s   peak {r['peak_bytes'] / 2**20:8.1f} MiB")
    o, t = best["ours"], best["base"]
    print(
        f"ours / {base_label} (best of two each): throughput {o['images_per_s'] / t['images_per_s']:.2f}x, "
        f"peak memory {o['peak_bytes'] / t['peak_bytes']:.2f}x"
    )


if __name__ == "__main__":
    main()
