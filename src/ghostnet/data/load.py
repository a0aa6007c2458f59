"""`load_dataset`: any supported dataset by name, from the format readers, as a `DataBundle`."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .cifar import CIFAR_SPECS, load_cifar
from .datasets import CIFAR_MEAN, CIFAR_STD, IMAGENET_MEAN, IMAGENET_STD, DataBundle, DatasetError, ImageData
from .digits import load_digits
from .idx import IDX_SPECS, load_idx
from .image_folder import load_image_folder

__all__ = ["DATASETS", "load_dataset"]

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
