"""CIFAR-10/100 from the official python pickle batches: an extracted folder or the ``.tar.gz`` archive.

The batches are unpickled by an unpickler that accepts numpy arrays and nothing else.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from .datasets import DatasetError, ImageData, check_labels, data_search_dirs
from .download import download_dir, download_verified

__all__ = ["CIFAR_SPECS", "CifarSpec", "load_cifar"]


class CifarSpec(TypedDict):
    url: str
    md5: str
    folder: str  # the archive's top folder
    train: list[str]  # batch files
    test: list[str]
    meta: str
    label_key: bytes  # keys in the unpickled batches
    names_key: bytes


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "md5": "c58f30108f718f92721af3b95e74349a",
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "label_key": b"labels",
        "names_key": b"label_names",
    },
    "cifar100": {
        "url": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5": "eb9058c3a382ffc7106e4002c42a8d85",
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "label_key": b"fine_labels",
        "names_key": b"fine_label_names",
    },
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of bytes, lists and numpy arrays) and refuses anything else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a dataset file")
        return super().find_class(module, name)


def _unpickle_batch(data: bytes, where: str) -> dict:
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure means a malformed batch
        raise DatasetError(f"{where} is not a CIFAR python batch: {e}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{where} is not a CIFAR python batch (holds a {type(obj).__name__})")
    return obj


def load_cifar(
    which: str = "cifar10", data_dir: str | os.PathLike | None = None, download: bool = False
) -> tuple[ImageData, ImageData, list[str], str]:
    """CIFAR-10/100 from the official python batches: an extracted folder or the ``.tar.gz``.

    Returns:
        (train, test, class names, where it was found).
    """
    spec = CIFAR_SPECS[which]
    archive_name = spec["url"].rsplit("/", 1)[1]
    looked = []
    for d in data_search_dirs(data_dir):
        for base in (d, d / which):
            folder, archive = base / spec["folder"], base / archive_name
            looked += [str(folder), str(archive)]
            if folder.is_dir():
                return (*_read_cifar(spec, _file_reader(folder), str(folder)), str(folder))
            if archive.is_file():
                return (*_read_cifar_archive(spec, archive), str(archive))
    if download:
        archive = download_dir(data_dir) / archive_name
        download_verified(spec["url"], archive, spec["md5"])
        return (*_read_cifar_archive(spec, archive), str(archive))
    raise DatasetError(
        f"{which} not found (looked for {spec['folder']}/ or {archive_name} in: {', '.join(dict.fromkeys(looked))}); "
        f"fetch it once with `ghostnet classify train --dataset {which} --download`, or put {archive_name} from {spec['url']} "
        "in the data folder (--data-dir)"
    )


def _file_reader(folder: Path) -> Callable[[str], bytes]:
    """Reads the file of `folder` with a given name; a missing one is a `DatasetError` naming it."""

    def read(name: str) -> bytes:
        try:
            return (folder / name).read_bytes()
        except FileNotFoundError:
            raise DatasetError(
                f"{folder} has no {name}: an incomplete CIFAR folder (extract the archive again)"
            ) from None

    return read


def _read_cifar_archive(spec: CifarSpec, archive: Path) -> tuple[ImageData, ImageData, list[str]]:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                if name not in members:
                    raise DatasetError(f"{archive} has no {spec['folder']}/{name}")
                f = tar.extractfile(members[name])
                assert f is not None
                return f.read()

            return _read_cifar(spec, read, str(archive))
    except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise DatasetError(f"{archive} is not a readable CIFAR archive: {e}") from None


def _read_cifar(spec: CifarSpec, read: Callable[[str], bytes], where: str) -> tuple[ImageData, ImageData, list[str]]:
    def split(names: Sequence[str]) -> ImageData:
        images, labels = [], []
        for n in names:
            try:
                raw = read(n)
            except FileNotFoundError:
                raise DatasetError(f"{where} is missing {n}") from None
            batch = _unpickle_batch(raw, f"{where}/{n}")
            data, lab = batch.get(b"data"), batch.get(spec["label_key"])
            if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or lab is None:
                raise DatasetError(f"{where}/{n}: expected 'data' (N, 3072) uint8 and {spec['label_key'].decode()}")
            if len(lab) != len(data):
                raise DatasetError(f"{where}/{n}: {len(data)} images but {len(lab)} labels")
            images.append(torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(-1, 3, 32, 32))
            labels.append(torch.as_tensor(np.asarray(lab, dtype=np.int64)))
        return ImageData(torch.cat(images), torch.cat(labels))

    meta = _unpickle_batch(read(spec["meta"]), f"{where}/{spec['meta']}")
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta.get(spec["names_key"], [])]
    train, test = split(spec["train"]), split(spec["test"])
    check_labels(train, test, len(classes), where)
    return train, test, classes
