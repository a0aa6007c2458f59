"""Training-step throughput and peak memory: our GhostNet against timm's, same settings, same run.

Each model is timed in its own child process (so the peak memory of one cannot hide in another's):
forward + cross-entropy + backward + SGD step on random images, after warm-up steps. Peak memory is the
CUDA allocator's peak on a GPU, and on the CPU the process's peak resident set size (ru_maxrss) less its size
before the model was built (torch's own libraries).

    python benchmarks/train_step.py                                   # CPU, batch 32 at 224
    python benchmarks/train_step.py --device cuda --batch-size 256 --amp bf16 --channels-last
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import subprocess
import sys
import time


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
    if args.which == "ours":
        from ghostnet import create_model

        model = create_model("ghostnet_100")
    else:
        import timm

        model = timm.create_model("ghostnet_100")
    model = model.to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
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
    ap.add_argument("--image-size", type=positive_int, default=224)
    ap.add_argument("--steps", type=positive_int, default=10)
    ap.add_argument("--warmup", type=positive_int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the default)")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--which", choices=["ours", "timm"], help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args()
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
    for which in ("timm", "ours", "timm", "ours"):  # interleaved, twice: drift on a shared machine shows up
        cmd = [sys.executable, __file__, "--which", which] + [a for a in sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:  # the child's own last line, not a CalledProcessError around it
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            ap.exit(1, f"train_step.py: the {which} run failed: {last}\n")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    best = {w: max((r for r in rows if r["model"] == w), key=lambda r: r["images_per_s"]) for w in ("ours", "timm")}
    print(
        f"train step, ghostnet_100, batch {args.batch_size} at {args.image_size}, {args.device}, amp {args.amp}, "
        f"channels_last {args.channels_last}, {platform.processor() or platform.machine()}"
    )
    for r in rows:
        print(f"  {r['model']:>4}: {r['images_per_s']:8.1f} img/s   peak {r['peak_bytes'] / 2**20:8.1f} MiB")
    o, t = best["ours"], best["timm"]
    print(
        f"ours / timm (best of two each): throughput {o['images_per_s'] / t['images_per_s']:.2f}x, "
        f"peak memory {o['peak_bytes'] / t['peak_bytes']:.2f}x"
    )


if __name__ == "__main__":
    main()
