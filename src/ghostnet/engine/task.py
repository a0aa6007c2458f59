"""What a task supplies to the training loop (`Task`), and the pieces every task's step uses.

A task is one kind of training: classification (`classification.py`), detection (`detection.py`), segmentation
(`segmentation.py`), face embeddings (`face.py`). It builds the model and the data and computes one batch's
loss; `loop.run_training` does everything else.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from ..models.registry import ModelSpec
from .distributed import Dist

__all__ = ["Task", "WithLossHead", "autocast", "check_batch_size", "check_one_batch"]


class Task:
    """What the loop needs from one kind of training; each task package implements it (``ghostnet.tasks``).

    After `setup`: ``model`` (on the device), ``train_loader`` / ``eval_loader`` (``len()`` and
    ``batches(epoch, first)``), ``spec`` (what rebuilds the model: saved in every checkpoint).
    """

    metric = "eval_top1"  # the history column that picks best.pth (higher is better)
    model: nn.Module
    train_loader: Any
    eval_loader: Any
    spec: ModelSpec
    # The trainable part of the loss, if any (a margin head's class centres): `step` is then called with the
    # model and it joined (``net(x, *args) == loss_head(model(x), *args)``); it is optimised with the model and
    # saved in checkpoints under "loss_head", but it is not part of the model (nor of what is exported).
    loss_head: nn.Module | None = None

    def setup(self, cfg: Any, d: Dist, device: torch.device) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """One line on the model and data, printed at the start."""
        raise NotImplementedError

    def stat_names(self) -> list[str]:
        """What `step` adds up over an epoch; the first is the sample count."""
        raise NotImplementedError

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        """The loss of one batch (to back-propagate) and its sums, in `stat_names` order."""
        raise NotImplementedError

    def train_row(self, sums: list[float]) -> dict[str, float]:
        """The epoch's training columns from the sums over all ranks."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        """The epoch's evaluation columns (including `metric`), the same on every rank."""
        raise NotImplementedError

    def checkpoint_data(self) -> dict[str, Any]:
        """What inference needs to know about the data, stored in every checkpoint."""
        return {}

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        """Summary fields and the closing lines printed after training."""
        return {}, ""


class WithLossHead(nn.Module):
    """A model and the trainable part of its loss as one module: one optimizer, one DDP wrapper."""

    def __init__(self, model: nn.Module, loss_head: nn.Module) -> None:
        super().__init__()
        self.model, self.loss_head = model, loss_head

    def forward(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        return self.loss_head(self.model(x), *args)


def autocast(device: torch.device, amp: str) -> AbstractContextManager:
    """The mixed-precision context for `amp` (none | bf16 | fp16); a no-op off CUDA."""
    if amp == "none" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def check_batch_size(batch_size: int, world_size: int) -> None:
    """Each of `world_size` processes takes an equal share of every batch."""
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world_size}")


def check_one_batch(loader: Any, images: int, batch_size: int) -> None:
    """A training loader that drops its last partial batch must still give one."""
    if len(loader) == 0:
        raise ValueError(f"the training split has {images} images, fewer than one batch of {batch_size}")
