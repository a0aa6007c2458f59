"""`ghostnet bench`'s clock: pinned torch threads, the machine's matrix-multiply rate, and the round-robin timing
loop every form goes through."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["torch_threads", "matmul_gflops", "interleaved_times"]


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch at `threads` CPU threads, then put the caller's count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def matmul_gflops(threads: int, device: str = "cpu", n: int = 1024, runs: int = 10) -> float:
    """This machine's fp32 matrix-multiply rate (GFLOP/s) at `threads` threads (torch's thread count is set for
    the measurement and put back afterwards)."""
    with torch_threads(threads):
        a = torch.randn(n, n, device=device)
        b = torch.randn(n, n, device=device)
        for _ in range(2):
            a @ b
        _sync(device)
        t = time.perf_counter()
        for _ in range(runs):
            a @ b
        _sync(device)
        return 2 * n**3 * runs / (time.perf_counter() - t) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _time_once(fn: Callable[[], Any], device: str) -> float:
    """Seconds one call of `fn` takes: wall time on the CPU, CUDA events (then a sync) on a GPU."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleaved_times(
    calls: dict[Any, Callable[[], Any]],
    total: int,
    per_round: int = 3,
    settle: int = 2,
    warm: int = 10,
    device: str = "cpu",
    on_error: Callable[[Any, Exception], None] | None = None,
) -> dict[Any, list[float]]:
    """Seconds per call of each of `calls`, timed round-robin: after `warm` untimed calls each, every round
    gives each call `settle` untimed calls, then `per_round` timed ones, until each has `total` timings.

    A machine's drift (another process, clock changes) so falls on all calls alike, and the settling calls
    absorb the switch between runtimes (ONNX Runtime's and OpenMP's worker threads spin for a while after a
    call and slow whatever runs next). With `on_error`, a call that raises is reported to it and left out of
    the rest (and of the result); without, the error propagates.
    """
    live = dict(calls)
    times: dict[Any, list[float]] = {}

    def run(key: Any, n: int, timed: bool) -> bool:
        try:
            for _ in range(n):
                if timed:
                    times.setdefault(key, []).append(_time_once(live[key], device))
                else:
                    live[key]()
            _sync(device)
            return True
        except Exception as err:  # noqa: BLE001 - one broken call must not lose the others' timings
            if on_error is None:
                raise
            on_error(key, err)
            del live[key]
            times.pop(key, None)
            return False

    for key in list(live):
        run(key, warm, timed=False)
    for _ in range(math.ceil(total / per_round)):
        for key in list(live):
            if run(key, settle, timed=False):
                run(key, per_round, timed=True)
    return times
