"""`ghostnet bench train`: training-step throughput and peak memory of our model against its peers.

A step is forward, cross-entropy, backward and an SGD step (momentum 0.9) on one fixed random batch, the model in
training mode; images/s is the batch size over the median step time after warm-up steps. Each model at each batch
size runs in a fresh child process, so that one model's peak memory cannot hide in another's and no allocator
state carries over; the children run one at a time, the models interleaved, for `rounds` rounds, and each model's
best round is kept (on a shared machine a round can be slowed by another job, never sped up). Peak memory is the
CUDA allocator's peak on a GPU, and on the CPU the child's peak resident set size less its size at start.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .models import build_ours, peer_builders
from .report import Failure, TrainResult, TrainRow, error_line
from .setup import BenchSetup, machine_info, torch_threads


def training_step(model: nn.Module, x: torch.Tensor, bf16: bool = False) -> Callable[[], None]:
    """One training step of `model` on the fixed batch `x`: forward (under bf16 autocast if `bf16`), cross-entropy
    against fixed random labels shaped as the output ((N,) for a classifier, (N, H, W) for a segmenter), backward,
    SGD with momentum 0.9. Leaves `model` in training mode."""
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


def train_model(setup: BenchSetup, name: str) -> nn.Module:
    """`name` as it is trained: ours from the registry, a peer without its inference folding."""
    return build_ours(name) if name == setup.model_name else peer_builders(setup.model_name, inference=False)[name]()


def _child(setup: BenchSetup, name: str, batch: int) -> dict[str, float]:
    """Runs in the child: `name`'s median step time at `batch`, images/s and peak memory (bytes)."""
    with open("/proc/self/statm") as f:
        base_rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    with torch_threads(setup.threads):
        torch.manual_seed(0)
        device = torch.device(setup.device)
        layout = torch.channels_last if setup.channels_last else torch.contiguous_format
        model = train_model(setup, name).to(device).to(memory_format=layout)
        x = torch.randn(batch, 3, *setup.hw, device=device).contiguous(memory_format=layout)
        step = training_step(model, x, bool(setup.bf16))
        for _ in range(setup.warmup):
            step()
        if setup.cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(setup.runs):
            t0 = time.perf_counter()
            step()
            if setup.cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    median = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated(device) if setup.cuda else _peak_rss() - base_rss
    return {"images_per_s": batch / median, "peak_bytes": peak}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_train(setup: BenchSetup, say: Callable[[str], None] | None = None) -> TrainResult:
    """Training-step images/s and peak memory of ours and its training peers at each batch size, each model's best
    of `rounds` rounds, as a ratio to the first peer's (the baseline's). An unknown model is refused before any
    child starts; a child that fails is listed under "failed" and not retried."""
    say = say or (lambda s: None)
    build_ours(setup.model_name)  # an unknown name refused here, in one line, not in every child
    names = [setup.model_name, *(peer_builders(setup.model_name, inference=False) if setup.peers else [])]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {(n, b): [] for b in setup.batch_sizes for n in names}
    failed: list[Failure] = []
    context = get_context("spawn")  # a fresh interpreter: no memory or threads from this process
    for r in range(setup.rounds):
        for (name, batch), done in runs.items():
            if any(f.model == name and f.batch == batch for f in failed):
                continue
            say(f"train step round {r + 1}/{setup.rounds}: {name}, batch {batch}")
            with ProcessPoolExecutor(1, mp_context=context) as pool:
                try:
                    done.append(pool.submit(_child, setup, name, batch).result())
                except Exception as e:  # noqa: BLE001 - a model that cannot train here must not end the run
                    failed.append(Failure(name, error_line(e), batch=batch))
                    say(f"{name} at batch {batch} failed: {failed[-1].error}")
    baseline = names[1] if len(names) > 1 else setup.model_name
    return TrainResult(_machine(setup), baseline, _rows(runs, baseline), failed)


def _rows(runs: dict[tuple[str, int], list[dict[str, float]]], baseline: str) -> list[TrainRow]:
    """One row per (model, batch size) that ran: every round's images/s, the best round, its ratio to `baseline`."""
    best = {key: max(done, key=lambda d: d["images_per_s"]) for key, done in runs.items() if done}
    rows = []
    for (name, batch), b in best.items():
        ref = best.get((baseline, batch))
        rounds = [round(d["images_per_s"], 2) for d in runs[(name, batch)]]
        ratio = round(b["images_per_s"] / ref["images_per_s"], 3) if ref else None
        rows.append(
            TrainRow(name, batch, round(b["images_per_s"], 2), rounds, round(b["peak_bytes"] / 2**20, 1), ratio)
        )
    return rows


def _machine(setup: BenchSetup) -> dict[str, Any]:
    """What the steps were timed on and under."""
    return machine_info(
        device_name=torch.cuda.get_device_name(torch.device(setup.device)) if setup.cuda else "cpu",
        input_size=list(setup.hw),
        steps=setup.runs,
        warmup=setup.warmup,
        threads=setup.threads,
        device=setup.device,
        bf16=bool(setup.bf16),
        channels_last=setup.channels_last,
    )
