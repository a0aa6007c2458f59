"""Datasets in their real on-disk formats: the shared types, where data lives, and `load_dataset` by name.

Small datasets are read into memory as one uint8 tensor (`ImageData`); image folders stay on disk
(torchvision's `ImageFolder`). A missing or malformed dataset raises `DatasetError` naming where we looked.
The readers live beside this module, one per format: `cifar` (python pickle batches), `idx` ((Fashion-)MNIST),
`digits` (scikit-learn's bundled digits) and `image_folder`; `download` fetches and checksums files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DataBundle",
    "DatasetError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageData",
    "check_labels",
    "data_search_dirs",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class DatasetError(ValueError):
    """A dataset that is missing or malformed; the message says where we looked and how to get it."""


@dataclass
class ImageData:
    """An in-memory split: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DataBundle:
    """A dataset's train and test splits with what a model and its preprocessing need to know."""

    name: str
    train: Any  # ImageData, or a torchvision ImageFolder for folder datasets
    test: Any
    classes: list[str]
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # default augmentation: "crop_flip", "crop", "imagenet" or "none"
    source: str = ""  # where the files were found
    meta: dict[str, Any] = field(default_factory=dict)  # image folders: "skipped_files" {"train": [...], "test": [...]}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train, ImageData)


# ---------------------------------------------------------------- where data lives


def data_search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for dataset files, in order: --data-dir, $GHOSTNET_DATA, the user cache, system data.

    The system folder is /usr/share/datasets (Debian's dataset packages), or $GHOSTNET_SYSTEM_DATA if set.
    """
    dirs = []
    if data_dir:
        dirs.append(Path(data_dir))
    if os.environ.get("GHOSTNET_DATA"):
        dirs.append(Path(os.environ["GHOSTNET_DATA"]))
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ghostnet" / "datasets"
    dirs += [cache, Path(os.environ.get("GHOSTNET_SYSTEM_DATA", "/usr/share/datasets"))]
    return dirs


def check_labels(train: ImageData, test: ImageData, num_classes: int, where: str) -> None:
    """Raise `DatasetError` if a split is empty or holds a label outside ``0..num_classes-1``."""
    for name, s in (("train", train), ("test", test)):
        if len(s) == 0:
            raise DatasetError(f"{where}: the {name} split is empty")
        lo, hi = int(s.labels.min()), int(s.labels.max())
        if lo < 0 or hi >= num_classes:
            raise DatasetError(f"{where}: {name} labels span {lo}..{hi} but there are {num_classes} classes")
