"""ImageNet-style image folders (``train/<class>/*`` and ``val/<class>/*``), left on disk as torchvision ImageFolders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .datasets import DatasetError

__all__ = ["load_image_folder"]


def load_image_folder(root: str | os.PathLike) -> tuple[Any, Any, list[str]]:
    """An ImageNet-style folder: ``train/<class>/*.jpg`` and ``val/<class>/*.jpg`` (same class names)."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    splits = []
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"image folder dataset needs {folder}/<class>/<image> (and {root}/train, {root}/val)")
        try:
            splits.append(ImageFolder(str(folder)))
        except (FileNotFoundError, RuntimeError) as e:
            raise DatasetError(f"{folder}: {e}") from None
    train, val = splits
    if train.classes != val.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))[:5]
        raise DatasetError(f"{root}: train and val have different class folders (e.g. {missing})")
    return train, val, train.classes
