"""MNIST and Fashion-MNIST from their four IDX files (gzipped or not)."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from .datasets import DatasetError, ImageData, check_labels, data_search_dirs
from .download import download_dir, download_verified

__all__ = ["IDX_SPECS", "IdxSpec", "load_idx", "read_idx"]


class IdxSpec(TypedDict):
    folders: tuple[str, ...]  # subfolders searched, the first one downloaded into
    mirror: str
    md5: dict[str, str]  # file name -> checksum
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    how: str  # how to get it, for the error message


IDX_SPECS: dict[str, IdxSpec] = {
    "fashion_mnist": {
        "folders": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST"),
        "mirror": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        "classes": [
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ],
        "mean": (0.2860,),
        "std": (0.3530,),
        "augment": "crop_flip",
        "how": "apt-get install dataset-fashion-mnist, or fetch it once with `ghostnet classify train --dataset fashion_mnist --download`",
    },
    "mnist": {
        "folders": ("mnist", "MNIST/raw", "MNIST"),
        "mirror": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        "classes": [str(i) for i in range(10)],
        "mean": (0.1307,),
        "std": (0.3081,),
        "augment": "crop",  # mirrored digits are other digits
        "how": "fetch it once with `ghostnet classify train --dataset mnist --download`",
    },
}
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not) as a numpy array; `DatasetError` when it is not one."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DatasetError(f"{path} cannot be read as IDX: {e}") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise DatasetError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    if ndim < 1 or len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path} has a malformed IDX header")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise DatasetError(f"{path} is truncated: header says {shape} ({int(np.prod(shape))} bytes), found {body.size}")
    return body.reshape(shape)


def _find_idx_dir(name: str, data_dir: str | os.PathLike | None) -> tuple[Path | None, list[str]]:
    looked = []
    for d in data_search_dirs(data_dir):
        for sub in ("",) + IDX_SPECS[name]["folders"]:
            folder = d / sub if sub else d
            looked.append(str(folder))
            if all(_idx_path(folder, f) for pair in _IDX_FILES.values() for f in pair):
                return folder, looked
    return None, looked


def _idx_path(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def load_idx(
    name: str = "fashion_mnist", data_dir: str | os.PathLike | None = None, download: bool = False
) -> tuple[ImageData, ImageData, str]:
    """MNIST or Fashion-MNIST from the four IDX files (``.gz`` or not).

    Searched in `data_dir`, ``$GHOSTNET_DATA``, the user cache and ``/usr/share/datasets`` (where Debian's
    ``dataset-fashion-mnist`` installs), each directly or in a ``fashion-mnist/`` (``mnist/``) subfolder.
    """
    spec = IDX_SPECS[name]
    folder, looked = _find_idx_dir(name, data_dir)
    if folder is None and download:
        folder = download_dir(data_dir) / spec["folders"][0]
        for fname, md5 in spec["md5"].items():
            download_verified(spec["mirror"] + fname, folder / fname, md5)
    if folder is None:
        raise DatasetError(
            f"{name} not found: looked for train-images-idx3-ubyte[.gz] and the other 3 IDX files in "
            f"{', '.join(looked)}; {spec['how']}"
        )
    splits = []
    for split, (img_stem, lab_stem) in _IDX_FILES.items():
        img_path, lab_path = _idx_path(folder, img_stem), _idx_path(folder, lab_stem)
        assert img_path is not None and lab_path is not None
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not pair up")
        splits.append(
            ImageData(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
        )
    check_labels(splits[0], splits[1], len(spec["classes"]), str(folder))
    return splits[0], splits[1], str(folder)
