"""Rebuilding a model from any checkpoint (ours, or an official/timm state dict plus its name), with the
preprocessing it was trained with."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..data import IMAGENET_MEAN, IMAGENET_STD
from ..data.images import Preprocess
from ..models import create_model
from ..models.checkpoint import FORMAT, CheckpointError, extract_state_dict, load_weights, read_checkpoint

__all__ = ["load_model", "task_checkpoint"]


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


def task_checkpoint(
    path: str | os.PathLike | dict[str, Any], builders: Any, trained_as: str
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A training checkpoint (a path, or one already read) whose model is one of the names in `builders`: the checkpoint,
    the model's name and its keyword arguments; else a CheckpointError saying it is not `trained_as`."""
    ckpt = path if isinstance(path, dict) else read_checkpoint(path)
    where = "the checkpoint" if isinstance(path, dict) else path
    name = ckpt.get("model_name") if isinstance(ckpt, dict) else None
    if name not in builders:
        what = f"a {name} checkpoint" if name else "not a ghostnet training checkpoint"
        raise CheckpointError(f"{where} is {what}, not {trained_as}")
    return ckpt, str(name), dict(ckpt["model_kwargs"])
