"""ImageNet-style image folders (``train/<class>/*`` and ``val/<class>/*``), left on disk as torchvision ImageFolders.

Their images are read by `images.open_image` (16-bit, palette, alpha and CMYK files scaled, not clipped). Files
that are certainly not images (empty, or not starting like any image format) are found up front from their
first bytes, without decoding anything: ``bad_images="skip"`` leaves them out (each split's
``skipped_files`` lists them), ``"error"`` refuses the dataset naming the first. Files that start right but
fail to decode are handled by the loader (`loaders.FolderLoader`) when it reaches them.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .datasets import DatasetError
from .images import check_image_file, open_image

__all__ = ["BAD_IMAGES", "load_image_folder"]

BAD_IMAGES = ("skip", "error")  # what to do with an unreadable image: leave it out (and count it), or refuse


def load_image_folder(root: str | os.PathLike, bad_images: str = "skip") -> tuple[Any, Any, list[str]]:
    """An ImageNet-style folder: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg`` (same class names).

    Returns:
        (train, val, class names); each split is an ImageFolder whose ``skipped_files`` lists the
        ``"path: reason"`` of the files left out.
    """
    from torchvision.datasets import ImageFolder

    if bad_images not in BAD_IMAGES:
        raise ValueError(f"bad_images must be skip or error, got {bad_images!r}")
    root = Path(root)
    splits = []
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"image folder dataset needs {folder}/<class>/<image> (and {root}/train, {root}/val)")
        try:
            dataset = ImageFolder(str(folder), loader=functools.partial(open_image, mode="RGB"))
        except (FileNotFoundError, RuntimeError) as e:
            raise DatasetError(f"{folder}: {e}") from None
        splits.append(_leave_out_non_images(dataset, folder, bad_images))
    train, val = splits
    if train.classes != val.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))[:5]
        raise DatasetError(f"{root}: train and val have different class folders (e.g. {missing})")
    return train, val, train.classes


def _leave_out_non_images(dataset: Any, folder: Path, bad_images: str) -> Any:
    """`dataset` without the files that are certainly not images; refused instead when ``bad_images="error"``."""
    paths = [path for path, _ in dataset.samples]
    chunks = [paths[i : i + 1024] for i in range(0, len(paths), 1024)]
    with ThreadPoolExecutor(max_workers=8) as pool:  # I/O bound: one small read per file
        problems = [p for chunk in pool.map(_check_files, chunks) for p in chunk]
    bad = {path for path, _ in problems}
    if bad and bad_images == "error":
        path, reason = problems[0]
        raise DatasetError(f"{path} {reason} ({len(bad)} such file(s) in {folder}); remove them or use bad_images=skip")
    dataset.skipped_files = [f"{path}: {reason}" for path, reason in problems]
    if bad:
        dataset.samples = [s for s in dataset.samples if s[0] not in bad]
        dataset.imgs = dataset.samples
        dataset.targets = [target for _, target in dataset.samples]
        if not dataset.samples:
            raise DatasetError(f"{folder}: none of its {len(bad)} files is an image (first: {problems[0][0]})")
    return dataset


def _check_files(paths: list[str]) -> list[tuple[str, str]]:
    """(path, why) for each of `paths` that is certainly not an image."""
    return [(p, why) for p in paths if (why := check_image_file(p)) is not None]
