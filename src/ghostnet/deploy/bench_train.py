"""`ghostnet bench --train-step`: training-step throughput and peak memory of our model against its peers.

A step is forward, cross-entropy, backward and an SGD step (momentum 0.9) on one fixed random batch, the model in
training mode; images/s is the batch size over the median step time after warm-up steps. Each model at each
batch size runs in a fresh child process, so that one model's peak memory cannot hide in another's and no
allocator state carries over; the children run one at a time, the models interleaved, for `rounds` rounds, and
each model's best round is kept (on a shared machine a round can be slowed by another job, never sped up).
Peak memory is the CUDA allocator's peak on a GPU, and on the CPU the child's peak resident set size less its
size before the model was built (torch and its libraries).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import get_context
from typing import Any

__all__ = ["TrainStepJob", "run_train_bench", "format_train_bench", "training_step"]


@dataclass(frozen=True)
class TrainStepJob:
    """One child process's measurement: `model` (ours, `ours_name`, or one of its peers) at one batch size."""

    ours_name: str
    model: str
    batch: int
    input_size: tuple[int, int]
    steps: int
    warmup: int
    threads: int
    device: str
    bf16: bool
    channels_last: bool


def _build(job: TrainStepJob) -> Any:
    """The model `job` names, as it is trained: ours from the registry (or ``ghostify:NAME``, a segmenter), a peer
    from `peer_builders` without its inference folding."""
    from .bench_forms import build_ours, peer_builders

    if job.model == job.ours_name:
        return build_ours(job.model)
    return peer_builders(job.ours_name, inference=False)[job.model]()


def _peak_bytes(device: Any, base_rss: int) -> int:
    """The child's peak memory: the CUDA allocator's peak, or the peak resident set size above `base_rss`."""
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss


def _rss() -> int:
    """This process's resident set size now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _train_child(job: TrainStepJob) -> dict[str, Any]:
    """Runs in the child: `job`'s median step time, images/s and peak memory."""
    from .bench_timing import torch_threads

    base = _rss()
    with torch_threads(job.threads):
        return _timed_steps(job, base)


def training_step(model: Any, x: Any, bf16: bool = False) -> Callable[[], None]:
    """One training step of `model` on the fixed batch `x` (both on one device): forward (under bf16 autocast if
    `bf16`), cross-entropy against fixed random labels shaped as the output ((N,) for a classifier, (N, H, W) for
    a segmenter), backward, SGD with momentum 0.9. Leaves `model` in training mode."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        out = model.eval()(x[:1])
    model.train()
    y = torch.randint(0, out.shape[1], (x.shape[0], *out.shape[2:]), device=x.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _timed_steps(job: TrainStepJob, base_rss: int) -> dict[str, Any]:
    """`_train_child`'s measurement, at the thread count it has set; `base_rss`: the child's size at start."""
    import time

    import torch

    torch.manual_seed(0)
    device = torch.device(job.device)
    memory_format = torch.channels_last if job.channels_last else torch.contiguous_format
    model = _build(job).to(device, memory_format=memory_format)
    x = torch.randn(job.batch, 3, *job.input_size, device=device).contiguous(memory_format=memory_format)
    step = training_step(model, x, job.bf16)
    for _ in range(job.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(job.steps):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    return {"step_s": median, "images_per_s": job.batch / median, "peak_bytes": _peak_bytes(device, base_rss)}


def run_train_bench(
    model_name: str = "ghostnet_100",
    input_size: tuple[int, int] = (224, 224),
    batch_sizes: tuple[int, ...] = (32,),
    *,
    threads: int | None = None,
    steps: int = 10,
    warmup: int = 3,
    device: str = "cpu",
    peers: bool = True,
    bf16: bool = False,
    channels_last: bool = False,
    rounds: int = 2,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Training-step images/s and peak memory of `model_name` and its training peers (`peer_builders`: a Ghost
    CIFAR model's baseline, ``ghostify:NAME``'s torchvision NAME, timm's GhostNet and torchvision's models beside
    ours); returns ``{"machine", "baseline", "rows", "failed"}``, each row one model at one batch size with every
    round's images/s, the best, and the best as a ratio to the first peer's (the baseline's) at that batch size.

    A model that cannot be built or a device that is not there is refused before any child starts; a child that
    fails is listed under "failed" and the run goes on.
    """
    from .bench_forms import build_ours, error_line, peer_builders
    from .bench_setup import use_device

    use_device(device)
    build_ours(model_name)  # an unknown name refused here, in one line, not in every child
    say = progress or (lambda s: None)
    names = [model_name, *(peer_builders(model_name, inference=False) if peers else [])]
    threads = threads or (os.cpu_count() or 1)
    base = TrainStepJob(model_name, model_name, 1, input_size, steps, warmup, threads, device, bf16, channels_last)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {(n, b): [] for b in batch_sizes for n in names}
    failed: list[dict[str, Any]] = []  # model, batch, error
    context = get_context("spawn")  # a fresh interpreter: no memory or threads from this process
    for r in range(rounds):
        for (name, batch), done in runs.items():
            if any(f["model"] == name and f["batch"] == batch for f in failed):
                continue
            say(f"train step round {r + 1}/{rounds}: {name}, batch {batch}")
            job = replace(base, model=name, batch=batch)
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                try:
                    done.append(pool.submit(_train_child, job).result())
                except Exception as e:  # noqa: BLE001 - a model that cannot train here must not end the run
                    failed.append({"model": name, "batch": batch, "error": error_line(e)})
                    say(f"{name} at batch {batch} failed: {failed[-1]['error']}")
    return {
        "machine": _machine(base),
        "baseline": names[1] if len(names) > 1 else model_name,
        "rows": _rows(runs, names[1] if len(names) > 1 else model_name),
        "failed": failed,
    }


def _rows(runs: dict[tuple[str, int], list[dict[str, Any]]], baseline: str) -> list[dict[str, Any]]:
    """One row per (model, batch size) that ran: every round's images/s, the best round, its ratio to `baseline`."""
    best = {key: max(done, key=lambda d: d["images_per_s"]) for key, done in runs.items() if done}
    rows = []
    for (name, batch), b in best.items():
        ref = best.get((baseline, batch))
        rows.append(
            {
                "model": name,
                "batch": batch,
                "images_per_s": round(b["images_per_s"], 2),
                "rounds_images_per_s": [round(d["images_per_s"], 2) for d in runs[(name, batch)]],
                "peak_mib": round(b["peak_bytes"] / 2**20, 1),
                "x_baseline": round(b["images_per_s"] / ref["images_per_s"], 3) if ref else None,
            }
        )
    return rows


def _machine(job: TrainStepJob) -> dict[str, Any]:
    """What the steps were timed on and under."""
    import torch

    from .bench_report import machine_info

    settings = asdict(job)
    for key in ("ours_name", "model", "batch"):
        settings.pop(key)
    device = torch.cuda.get_device_name(torch.device(job.device)) if job.device.startswith("cuda") else "cpu"
    return machine_info() | {"device_name": device} | settings


def format_train_bench(result: dict[str, Any]) -> str:
    """The training-step result as a table: images/s of each round and the best, × the baseline, peak memory."""
    from .bench_report import cpu_label

    m = result["machine"]
    h, w = m["input_size"]
    lines = [
        f"training step: {m['device_name']} ({cpu_label(m)}, {m['threads']} threads), "
        f"torch {m['torch']}, input {h}x{w}, {m['steps']} timed steps after {m['warmup']}, bf16 {m['bf16']}, "
        f"channels_last {m['channels_last']}; best of the rounds, ratios vs {result['baseline']}"
    ]
    mw = max([24, *(len(r["model"]) for r in result["rows"])])
    head = f"{'model':<{mw}} {'batch':>5} {'img/s':>8} {'x base':>7} {'peak MiB':>9}  rounds (img/s)"
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        ratio = f"{r['x_baseline']:>7.2f}" if r["x_baseline"] is not None else f"{'-':>7}"
        rounds = ", ".join(f"{v:.1f}" for v in r["rounds_images_per_s"])
        lines.append(
            f"{r['model']:<{mw}} {r['batch']:>5} {r['images_per_s']:>8.1f} {ratio} {r['peak_mib']:>9.1f}  {rounds}"
        )
    lines += [f"failed: {f['model']} at batch {f['batch']}: {f['error']}" for f in result["failed"]]
    return "\n".join(lines)
