"""Evaluating a checkpoint on a dataset's test split (`load_model`, re-exported here, rebuilds it)."""

from __future__ import annotations

import os
from typing import Any

from ...data import DatasetError, load_dataset
from ...engine.distributed import init_distributed
from ...engine.weights import load_model
from .config import TrainConfig
from .task import build_loaders, count_skipped, evaluate

__all__ = ["load_model", "evaluate_checkpoint"]


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    model_name: str | None = None,
    dataset: str | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    batch_size: int = 256,
    use_ema: bool = False,
    device: str = "auto",
    progress: bool = True,
    bad_images: str = "skip",
) -> dict[str, Any]:
    """Top-1/top-5/loss (and a confusion matrix for <= 20 classes) of a checkpoint on a dataset's test split.

    The dataset defaults to the one the checkpoint was trained on. Runs distributed under torchrun.
    With ``bad_images="skip"`` unreadable images of an image folder are left out and counted
    (``"skipped_images"``, the first in ``"first_skipped"``); with ``"error"`` the first one is refused.
    """
    d, dev = init_distributed(device)
    model, prep, trained = load_model(checkpoint, model_name, use_ema=use_ema)
    dataset = dataset or trained.get("dataset")
    if not dataset:
        raise DatasetError("say which dataset to evaluate on (--dataset, and --data-dir for image folders)")
    data_dir = (
        data_dir if data_dir is not None else (trained.get("data_dir") if dataset == trained.get("dataset") else None)
    )
    image_size = (
        image_size
        or (trained.get("image_size") if dataset == trained.get("dataset") else None)
        or (prep.image_size if dataset == "imagefolder" else None)
    )
    data = load_dataset(dataset, data_dir, False, image_size, bad_images)
    predicts = len(prep.classes) or getattr(model, "num_classes", None)
    if predicts and predicts != data.num_classes:  # a bare state dict carries no class names, only its head's shape
        raise DatasetError(f"{checkpoint} predicts {predicts} classes but {dataset} has {data.num_classes}")
    cfg = TrainConfig(
        dataset=dataset, eval_batch_size=batch_size, batch_size=d.world_size, device=device, bad_images=bad_images
    )
    _, loader = build_loaders(cfg, data, d, dev, prep.in_chans)
    metrics = evaluate(
        model.to(dev), loader, data.num_classes, d, dev, confusion=data.num_classes <= 20, progress=progress
    )
    (decoding,), first = count_skipped([loader], d, dev)
    up_front = data.meta.get("skipped_files", {}).get("test", [])
    metrics.update(
        dataset=dataset,
        classes=data.classes,
        checkpoint=str(checkpoint),
        world_size=d.world_size,
        is_main=d.is_main,
        skipped_images=len(up_front) + decoding,
        first_skipped=(up_front or [first])[0],
    )
    return metrics
