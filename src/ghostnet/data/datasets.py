"""Datasets in their real on-disk formats: CIFAR pickles, (Fashion-)MNIST IDX, scikit-learn's digits, image folders.

Small datasets are read into memory as one uint8 tensor (`ImageData`); image folders stay on disk
(torchvision's `ImageFolder`). A missing or malformed dataset raises `DatasetError` naming where we looked.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
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
    "data_search_dirs",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "read_idx",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    meta: dict[str, Any] = field(default_factory=dict)

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


def _cache_dir(data_dir: str | os.PathLike | None) -> Path:
    return Path(data_dir) if data_dir else data_search_dirs()[-2]


def _download(url: str, dest: Path, md5: str) -> None:
    """Download `url` to `dest` (atomically) and verify its MD5; a one-line error without network."""
    from torchvision.datasets.utils import check_integrity, download_url

    dest.parent.mkdir(parents=True, exist_ok=True)
    if check_integrity(str(dest), md5):
        return
    tmp_name = f".{dest.name}.part"
    try:
        download_url(url, str(dest.parent), filename=tmp_name, md5=None)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, socket errors, ...
        (dest.parent / tmp_name).unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    tmp = dest.parent / tmp_name
    if not check_integrity(str(tmp), md5):
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {url} (expected md5 {md5}); the download was discarded")
    os.replace(tmp, dest)


# ---------------------------------------------------------------- CIFAR (python pickle batches)


class _CifarSpec(TypedDict):
    url: str
    md5: str
    folder: str  # the archive's top folder
    train: list[str]  # batch files
    test: list[str]
    meta: str
    label_key: bytes  # keys in the unpickled batches
    names_key: bytes


_CIFAR: dict[str, _CifarSpec] = {
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
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


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
    spec = _CIFAR[which]
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
        archive = _cache_dir(data_dir) / archive_name
        _download(spec["url"], archive, spec["md5"])
        return (*_read_cifar_archive(spec, archive), str(archive))
    raise DatasetError(
        f"{which} not found (looked for {spec['folder']}/ or {archive_name} in: {', '.join(dict.fromkeys(looked))}); "
        f"pass --download, or put {archive_name} from {spec['url']} in --data-dir"
    )


def _file_reader(folder: Path) -> Callable[[str], bytes]:
    """Reads the file of `folder` with a given name."""
    return lambda name: (folder / name).read_bytes()


def _read_cifar_archive(spec: _CifarSpec, archive: Path) -> tuple[ImageData, ImageData, list[str]]:
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


def _read_cifar(spec: _CifarSpec, read: Callable[[str], bytes], where: str) -> tuple[ImageData, ImageData, list[str]]:
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
    _check_labels(train, test, len(classes), where)
    return train, test, classes


def _check_labels(train: ImageData, test: ImageData, num_classes: int, where: str) -> None:
    for name, s in (("train", train), ("test", test)):
        if len(s) == 0:
            raise DatasetError(f"{where}: the {name} split is empty")
        lo, hi = int(s.labels.min()), int(s.labels.max())
        if lo < 0 or hi >= num_classes:
            raise DatasetError(f"{where}: {name} labels span {lo}..{hi} but there are {num_classes} classes")


# ---------------------------------------------------------------- MNIST / Fashion-MNIST (IDX)


class _IdxSpec(TypedDict):
    folders: tuple[str, ...]  # subfolders searched, the first one downloaded into
    mirror: str
    md5: dict[str, str]  # file name -> checksum
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str
    how: str  # how to get it, for the error message


_IDX: dict[str, _IdxSpec] = {
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
        "how": "apt-get install dataset-fashion-mnist, or pass --download",
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
        "how": "pass --download",
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
        for sub in ("",) + _IDX[name]["folders"]:
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
    spec = _IDX[name]
    folder, looked = _find_idx_dir(name, data_dir)
    if folder is None and download:
        folder = _cache_dir(data_dir) / spec["folders"][0]
        for fname, md5 in spec["md5"].items():
            _download(spec["mirror"] + fname, folder / fname, md5)
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
    _check_labels(splits[0], splits[1], len(spec["classes"]), str(folder))
    return splits[0], splits[1], str(folder)


# ---------------------------------------------------------------- digits (bundled with scikit-learn)


def load_digits(image_size: int = 32, test_fraction: float = 0.2) -> tuple[ImageData, ImageData, str]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, UCI), upscaled; a fixed stratified split.

    Needs no download, so the project's demo runs anywhere.
    """
    pixels, target = _read_sklearn_digits()
    images = torch.from_numpy(pixels.reshape(-1, 1, 8, 8) / 16.0)  # (N, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(target)
    # Stratified split with a fixed generator: every 5th sample of each class (in file order) is test.
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        test_mask[idx[:: int(round(1 / test_fraction))]] = True
    train = ImageData(images[~test_mask], labels[~test_mask])
    test = ImageData(images[test_mask], labels[test_mask])
    return train, test, "scikit-learn bundled digits (UCI optdigits test set)"


def _read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as float32 pixels (N, 64) in 0..16 and int64 labels, read from scikit-learn's data file.

    Reading the bundled CSV directly skips importing scikit-learn itself (seconds on a small machine).
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read scikit-learn's digits file {path}: {e}") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise DatasetError(f"{path}: expected 65 columns (64 pixels + label), found {table.shape}")
    return np.ascontiguousarray(table[:, :64]), table[:, 64].astype(np.int64)


# ---------------------------------------------------------------- image folders


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


# ---------------------------------------------------------------- one entry point

DATASETS = ("digits", "fashion_mnist", "mnist", "cifar10", "cifar100", "imagefolder")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
    image_size: int | None = None,
) -> DataBundle:
    """Load a dataset by name.

    Args:
        name: one of `DATASETS`.
        data_dir: where to look first (for ``imagefolder``: the root holding ``train/`` and ``val/``).
        download: fetch CIFAR / (Fashion-)MNIST into the cache (or `data_dir`) when missing, checksum-verified.
        image_size: input resolution; defaults to the dataset's own (224 for image folders).
    """
    if name == "digits":
        size = image_size or 32
        train, test, src = load_digits(size)
        return DataBundle(name, train, test, [str(i) for i in range(10)], 1, size, (0.2,), (0.3,), "crop", src)
    if name in _IDX:
        train, test, src = load_idx(name, data_dir, download)
        spec = _IDX[name]
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
    if name in _CIFAR:
        train, test, classes, src = load_cifar(name, data_dir, download)
        train, test = _resize(train, image_size), _resize(test, image_size)
        return DataBundle(
            name, train, test, classes, 3, train.images.shape[-1], CIFAR_MEAN, CIFAR_STD, "crop_flip", src
        )
    if name == "imagefolder":
        if not data_dir:
            raise DatasetError("the imagefolder dataset needs --data-dir pointing at a folder with train/ and val/")
        if download:
            raise DatasetError("image folders cannot be downloaded; point --data-dir at your copy")
        train, test, classes = load_image_folder(data_dir)
        return DataBundle(
            name, train, test, classes, 3, image_size or 224, IMAGENET_MEAN, IMAGENET_STD, "imagenet", str(data_dir)
        )
    raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _resize(split: ImageData, size: int | None) -> ImageData:
    if not size or split.images.shape[-1] == size:
        return split
    x = F.interpolate(split.images.float(), size=(size, size), mode="bilinear", align_corners=False)
    return ImageData(x.round().clamp(0, 255).to(torch.uint8), split.labels)
