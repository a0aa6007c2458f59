"""`ghostnet bench`: our model against its peers, in three modes that share one setup (`BenchSetup`): ``latency``
(every form of `forms.FORMS`, timed round-robin), ``train`` (the training step, a fresh process per model) and
``profile`` (op time per op type). Only the CLI (`cli.bench`) and the scripts in benchmarks/ import it."""

from .latency import run_latency
from .models import as_trained
from .profile import run_profile
from .report import (
    LatencyResult,
    ProfileResult,
    TrainResult,
    format_latency,
    format_profile,
    format_train,
    plot_latency,
)
from .setup import BenchSetup, interleaved_times, torch_threads
from .train import run_train

__all__ = ["BenchSetup", "run_latency", "run_train", "run_profile", "LatencyResult", "TrainResult", "ProfileResult"]
__all__ += ["format_latency", "format_train", "format_profile", "plot_latency", "interleaved_times", "torch_threads"]
__all__ += ["as_trained"]
