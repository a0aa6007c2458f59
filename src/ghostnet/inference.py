"""Using trained weights: rebuild a model from any checkpoint, evaluate it on a dataset, predict images."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import FORMAT, CheckpointError, extract_state_dict, load_weights, read_checkpoint
from .data import IMAGENET_MEAN, IMAGENET_STD, DatasetError, load_dataset
from .models import create_model

__all__ = ["Preprocess", "load_model", "evaluate_checkpoint", "predict_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass
class Preprocess:
    """How the model's inputs were made: resolution, channels, normalisation, class names."""

    image_size: int = 224
    in_chans: int = 3  # the model's input channels
    data_chans: int = 3  # the images' own channels (1 = grayscale, replicated when in_chans is 3)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    classes: tuple[str, ...] = ()
    center_crop: bool = True  # ImageNet-style: resize the short side to size*256/224, then centre crop

    def transform(self):
        from torchvision import transforms as T

        ops: list[Any] = [T.Lambda(lambda im: im.convert("L" if self.data_chans == 1 else "RGB"))]
        if self.center_crop:
            ops += [T.Resize(int(round(self.image_size * 256 / 224))), T.CenterCrop(self.image_size)]
        else:
            ops.append(T.Resize((self.image_size, self.image_size)))
        mean, std = list(self.mean), list(self.std)
        if self.data_chans == 1 and self.in_chans == 3:
            ops.append(T.Lambda(lambda im: im.convert("RGB")))
            mean, std = mean * (3 // len(mean)), std * (3 // len(std))
        ops += [T.ToTensor(), T.Normalize(mean, std)]
        return T.Compose(ops)


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
        raise CheckpointError(f"{checkpoint} is a bare state dict; say which model it is with --model (e.g. ghostnet_100)")
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
) -> dict[str, Any]:
    """Top-1/top-5/loss (and a confusion matrix for <= 20 classes) of a checkpoint on a dataset's test split.

    The dataset defaults to the one the checkpoint was trained on. Runs distributed under torchrun.
    """
    from .train import build_loaders, evaluate, init_distributed
    from .config import TrainConfig

    d, dev = init_distributed(device)
    model, prep, trained = load_model(checkpoint, model_name, use_ema=use_ema)
    dataset = dataset or trained.get("dataset")
    if not dataset:
        raise DatasetError("say which dataset to evaluate on (--dataset, and --data-dir for image folders)")
    data_dir = data_dir if data_dir is not None else (trained.get("data_dir") if dataset == trained.get("dataset") else None)
    image_size = image_size or (trained.get("image_size") if dataset == trained.get("dataset") else None) or (
        prep.image_size if dataset == "imagefolder" else None
    )
    data = load_dataset(dataset, data_dir, False, image_size)
    if prep.classes and len(prep.classes) != data.num_classes:
        raise DatasetError(f"the model predicts {len(prep.classes)} classes but {dataset} has {data.num_classes}")
    cfg = TrainConfig(dataset=dataset, eval_batch_size=batch_size, batch_size=d.world_size, device=device)
    _, loader = build_loaders(cfg, data, d, dev, prep.in_chans)
    metrics = evaluate(model.to(dev), loader, data.num_classes, d, dev, confusion=data.num_classes <= 20, progress=progress)
    metrics.update(dataset=dataset, classes=data.classes, checkpoint=str(checkpoint), world_size=d.world_size, is_main=d.is_main)
    return metrics


def _collect_images(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"image not found: {p}")
    return files


@torch.no_grad()
def predict_images(
    model: nn.Module, prep: Preprocess, paths: list[str], topk: int = 5, batch_size: int = 32
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for image files (or every image under folders).

    Returns:
        One ``{"path", "top": [(class name, probability), ...]}`` per image, in input order.
    """
    from PIL import Image, UnidentifiedImageError

    files = _collect_images(paths)
    tf = prep.transform()
    device = next(model.parameters()).device
    results = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        tensors = []
        for f in chunk:
            try:
                with Image.open(f) as im:
                    tensors.append(tf(im))
            except (UnidentifiedImageError, OSError) as e:
                raise DatasetError(f"{f} is not a readable image: {e}") from None
        probs = model(torch.stack(tensors).to(device)).softmax(dim=1)
        k = min(topk, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        for f, vs, ix in zip(chunk, values.tolist(), indices.tolist()):
            names = [prep.classes[j] if j < len(prep.classes) else str(j) for j in ix]
            results.append({"path": str(f), "top": list(zip(names, vs))})
    return results
