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
import torch.nn.functional as F

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "DataBundle",
    "DatasetError",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageData",
    "check_labels",
    "data_search_dirs",
    "load_dataset",
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


# ---------------------------------------------------------------- one entry point

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | None = None,
    bad_images: str = "skip",
) -> DataBundle:
    """Load a dataset by name.

    Args:
        name: one of `DATASETS`.
        data_dir: where to look first (for ``imagefolder``: the root holding ``train/`` and ``val/``).
        download: fetch CIFAR / (Fashion-)MNIST into the cache (or `data_dir`) when missing, checksum-verified.
        image_size: input resolution; defaults to the dataset's own (224 for image folders).
        bad_images: image folders: ``"skip"`` leaves out files that are not images (listed in
            ``meta["skipped_files"]``), ``"error"`` refuses the dataset naming the first.
    """
    # The readers import this module's types, so they are imported here rather than at the top.
    from .cifar import CIFAR_SPECS, load_cifar
    from .digits import load_digits
    from .idx import IDX_SPECS, load_idx

    if name == "digits":
        size = image_size or 32
        train, test, src = load_digits(size)
        return DataBundle(name, train, test, [str(i) for i in range(10)], 1, size, (0.2,), (0.3,), "crop", src)
    if name in IDX_SPECS:
        train, test, src = load_idx(name, data_dir, download)
        spec = IDX_SPECS[name]
        train, test = _resize(train, image_size), _resize(test, image_size)
        return DataBundle(
            name,
            train,
            test,
            list(spec["classes"]),
            1,
            train.images.shape[-1],
            spec["mean"],
            spec["std"],
            spec["augment"],
            src,
        )
    if name in CIFAR_SPECS:
        train, test, classes, src = load_cifar(name, data_dir, download)
        train, test = _resize(train, image_size), _resize(test, image_size)
        return DataBundle(
            name, train, test, classes, 3, train.images.shape[-1], CIFAR_MEAN, CIFAR_STD, "crop_flip", src
        )
    if name == "imagefolder":
        return _image_folder_bundle(data_dir, download, image_size, bad_images)
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _image_folder_bundle(
    data_dir: str | os.PathLike | None, download: bool, image_size: int | None, bad_images: str
) -> DataBundle:
    from .image_folder import load_image_folder

    if not data_dir:
        raise DatasetError("the imagefolder dataset needs --data-dir pointing at a folder with train/ and val/")
    if download:
        raise DatasetError("image folders cannot be downloaded; point --data-dir at your copy")
    train, test, classes = load_image_folder(data_dir, bad_images)
    skipped = {"train": train.skipped_files, "test": test.skipped_files}
    return DataBundle(
        "imagefolder",
        train,
        test,
        classes,
        3,
        image_size or 224,
        IMAGENET_MEAN,
        IMAGENET_STD,
        "imagenet",
        str(data_dir),
        {"skipped_files": skipped},
    )


def _resize(split: ImageData, size: int | None) -> ImageData:
    if not size or split.images.shape[-1] == size:
        return split
    x = F.interpolate(split.images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return ImageData(x.round().clamp(0, 255).to(torch.uint8), split.labels)
