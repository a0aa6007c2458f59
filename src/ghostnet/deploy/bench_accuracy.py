"""`ghostnet bench --checkpoint`: our model from a trained checkpoint, and the top-1 of each of its timed forms.

Ours is built from the checkpoint (its input size and channels too); its int8 forms are calibrated on the
training split of the checkpoint's dataset, and every form of ours is scored on the same first images of the
test split, one image at a time (edge runtimes' files have a static batch-1 shape; scoring every form the
same way keeps the figures comparable). Peers have no weights for that dataset: they get no top-1.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .bench_forms import ReportFailure, TimedForm, concat_free_name

__all__ = ["TrainedOurs", "trained_ours", "forms_top1", "accuracy_summary"]


@dataclass
class TrainedOurs:
    """Our model from a checkpoint with its dataset's images: calibration images (training split, preprocessed as
    for evaluation) and the first test images with their labels."""

    checkpoint: str
    model_name: str
    model: nn.Module
    in_chans: int
    image_size: int
    dataset: str
    calibration: torch.Tensor  # (N, C, H, W)
    test_images: torch.Tensor  # (M, C, H, W)
    test_labels: torch.Tensor  # (M,)
    test_total: int  # images in the whole test split


def trained_ours(
    checkpoint: str | os.PathLike, eval_images: int, calibration_images: int = 128, data_dir: str | None = None
) -> TrainedOurs:
    """Load one of our checkpoints and `calibration_images` training images and the first `eval_images` test
    images of its dataset."""
    from ..models.checkpoint import read_checkpoint
    from .quantize import checkpoint_data, loader_images

    if eval_images < 1:
        raise ValueError(f"eval_images must be at least 1, got {eval_images}")
    name = read_checkpoint(checkpoint).get("model_name")
    if not isinstance(name, str):
        raise ValueError(f"{checkpoint} is not one of our checkpoints (it names no model)")
    d = checkpoint_data(checkpoint, data_dir)
    calibration = torch.cat(list(loader_images(d.calibration, calibration_images))).float()
    xs, ys, left = [], [], eval_images
    for x, y in d.test.batches():
        xs.append(x[:left])
        ys.append(y[:left])
        left -= len(xs[-1])
        if left <= 0:
            break
    return TrainedOurs(
        str(checkpoint),
        name,
        d.model,
        d.in_chans,
        d.data.image_size,
        d.data.name,
        calibration,
        torch.cat(xs).float(),
        torch.cat(ys),
        len(d.data.test),
    )


def _top_class(out: Any) -> np.ndarray:
    """The argmax over classes of one form's output: a tensor, an array, or a list of them (the first is the
    logits)."""
    if isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, torch.Tensor):
        out = out.detach().float().cpu().numpy()
    return np.asarray(out).argmax(1)


@torch.inference_mode()
def form_top1(fn: Callable[[Any], Any], numpy_input: bool, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 (%) of one form over `images` (on the form's device, or the CPU for an array input), one image a call."""
    correct = 0
    for i in range(len(images)):
        x = images[i : i + 1]
        pred = _top_class(fn(x.numpy() if numpy_input else x))
        correct += int(pred[0] == int(labels[i]))
    return 100.0 * correct / len(images)


def forms_top1(
    entries: list[TimedForm], ours: TrainedOurs, device: str, fail: ReportFailure, say: Callable[[str], None]
) -> dict[int, float]:
    """The top-1 of each of our forms among `entries` (keyed by ``id(entry)``) on ``ours``' test images. A form
    that fails there is reported to `fail` (as ``FORM (top-1)``) and gets no figure."""
    images = ours.test_images
    say(f"top-1 of each form of {ours.model_name} on {len(images)} {ours.dataset} test images, batch 1")
    top1: dict[int, float] = {}
    for e in entries:
        if e.model not in (ours.model_name, concat_free_name(ours.model_name)):
            continue
        x = images if e.numpy_input else images.to(device)
        try:
            top1[id(e)] = form_top1(e.fn, e.numpy_input, x, ours.test_labels)
        except Exception as err:  # noqa: BLE001 - one broken form must not lose the others' figures
            fail(e.model, f"{e.form} (top-1)", err)
    return top1


def accuracy_summary(ours: TrainedOurs | None) -> dict[str, Any] | None:
    """What the top-1 column was measured on, for the result's JSON (None without a checkpoint)."""
    if ours is None:
        return None
    return {
        "checkpoint": ours.checkpoint,
        "dataset": ours.dataset,
        "images": len(ours.test_images),
        "test_images": ours.test_total,
        "batch": 1,
        "calibration_images": len(ours.calibration),
    }
