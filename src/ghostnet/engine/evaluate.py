"""Using trained weights: rebuild a model from any checkpoint, evaluate it on a dataset's test split."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..data import IMAGENET_MEAN, IMAGENET_STD, DatasetError, load_dataset
from ..data.images import Preprocess
from ..models import create_model
from ..models.checkpoint import FORMAT, CheckpointError, extract_state_dict, load_weights, read_checkpoint
from .classification import build_loaders, count_skipped, evaluate
from .config import TrainConfig
from .distributed import init_distributed

__all__ = ["load_model", "evaluate_checkpoint"]


def _imagenet_classes() -> tuple[str, ...]:
    from torchvision.models import MobileNet_V3_Large_Weights

    return tuple(MobileNet_V3_Large_Weights.IMAGENET1K_V1.meta["categories"])


def load_model(
    checkpoint: str | os.PathLike, model_name: str | None = None, *, use_ema: bool = False, **model_kwargs: Any
) -> tuple[nn.Module, Preprocess, dict[str, Any]]:
    """A model ready for inference from our checkpoint, or from an official/timm state dict plus `model_name`.

    Returns:
        (model in eval mode, its preprocessing, the checkpoint's training config or {}).
    """
    ckpt = read_checkpoint(checkpoint)
    if ckpt.get("format") == FORMAT and ckpt.get("model_name"):
        if model_name and model_name != ckpt["model_name"]:
            raise CheckpointError(f"{checkpoint} holds a {ckpt['model_name']}, not a {model_name}")
        kwargs = dict(ckpt.get("model_kwargs") or {}) | model_kwargs
        model = create_model(ckpt["model_name"], **kwargs)
        if use_ema and not ckpt.get("model_ema"):
            raise CheckpointError(f"{checkpoint} has no EMA weights (train with --ema-decay)")
        load_weights(model, ckpt, prefer_ema=use_ema)
        meta = ckpt.get("data") or {}
        prep = Preprocess(
            image_size=meta.get("image_size", 224),
            in_chans=meta.get("in_chans", 3),
            data_chans=1 if len(meta.get("mean", (0, 0, 0))) == 1 else 3,
            mean=tuple(meta.get("mean", IMAGENET_MEAN)),
            std=tuple(meta.get("std", IMAGENET_STD)),
            classes=tuple(meta.get("classes", ())),
            center_crop=(ckpt.get("config") or {}).get("dataset") == "imagefolder",
        )
        return model.eval(), prep, ckpt.get("config") or {}
    if not model_name:
        raise CheckpointError(
            f"{checkpoint} is a bare state dict; say which model it is with --model (e.g. ghostnet_100)"
        )
    sd = extract_state_dict(ckpt)
    num_classes = next((v.shape[0] for k, v in sd.items() if k.endswith("classifier.weight")), 1000)
    model = create_model(model_name, **({"num_classes": num_classes} | model_kwargs))
    load_weights(model, sd)
    prep = Preprocess(in_chans=model_kwargs.get("in_chans", 3))
    if num_classes == 1000:
        prep.classes = _imagenet_classes()
    return model.eval(), prep, {}


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
