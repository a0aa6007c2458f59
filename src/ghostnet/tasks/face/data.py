"""Identity data in its real formats: identity folders, LFW-style ``pairs.txt`` lists, insightface's ``.bin``
verification sets (read without executing pickled code), and the LFW download.

- An identity folder is ``root/<identity>/*.jpg`` (CASIA-WebFace, extracted MS1M, LFW itself): one folder per
  person. `load_identity_folder` reads it into memory (uint8), resized to the model's input size;
  `IdentityImageFiles` keeps only the file list and reads one image per item (for training on large sets).
- ``pairs.txt`` (LFW's format): an optional header line (folds and pairs per fold), then one pair a line:
  ``name n1 n2`` (the same person, images ``name/name_000n1.jpg`` and ``name/name_000n2.jpg``) or
  ``name1 n1 name2 n2`` (two people). Lines ``pathA pathB 1|0`` (paths under the root) are read as well.
- A ``.bin`` set (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``) is a pickle of ``(list of encoded images,
  list of bool)``, images in pair order. `read_verification_bin` accepts exactly that: its unpickler resolves no
  global at all, so a file naming any class or function is refused before anything in it runs.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ...data.datasets import DatasetError, ImageData
from ...data.download import download_dir, download_verified, extract_tar
from ...data.images import IMAGE_SUFFIXES, ImageReadError, open_image

__all__ = [
    "LFW_FILES",
    "LFW_URL",
    "IdentityImageFiles",
    "PairList",
    "decode_pair_images",
    "download_lfw",
    "identity_files",
    "generated_pairs",
    "load_identity_folder",
    "load_identity_images",
    "load_image_files",
    "load_pair_images",
    "make_pairs",
    "read_pairs",
    "read_verification_bin",
    "resize_images",
]

# The LFW site and its files (the MD5s torchvision checks too).
LFW_URL = "http://vis-www.cs.umass.edu/lfw/"
LFW_FILES = {
    "pairs.txt": "9f1ba174e4e1c508ff7cdf10ac338a7d",
    "lfw.tgz": "a17d05bd522c52d84eca14327a23d494",
    "lfw-deepfunneled.tgz": "68331da3eb755a505a502b5aacb3c201",
}


# ---------------------------------------------------------------- identity folders


def identity_files(root: str | os.PathLike, min_images: int = 2) -> tuple[list[str], list[list[Path]]]:
    """The identities (sorted folder names) under `root` with at least `min_images` images, and each one's image
    files (sorted). Identities with fewer images are left out with one warning that counts them.

    Raises:
        DatasetError: `root` is missing or holds no identity folder, an identity folder holds no image, or no
            identity has `min_images` images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"identity folder {root} not found (expected {root}/<identity>/<image>)")
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise DatasetError(f"{root} holds no identity folders (expected {root}/<identity>/<image>)")
    kept, files, few = [], [], []
    for name in names:
        found = sorted(f for f in (root / name).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DatasetError(
                f"identity {name!r} has no images ({root / name} is empty of {', '.join(IMAGE_SUFFIXES)})"
            )
        if len(found) < min_images:
            few.append(name)
            continue
        kept.append(name)
        files.append(found)
    if not kept:
        raise DatasetError(
            f"no identity in {root} has {min_images} or more images (e.g. {few[0]!r}); "
            "same-identity pairs need two images of one identity"
        )
    if few:
        warnings.warn(
            f"{len(few)} of {len(names)} identities in {root} have fewer than {min_images} images and are left out "
            f"(e.g. {few[0]!r})",
            stacklevel=2,
        )
    return kept, files


def _read_resized(path: Path | bytes, image_size: int, mode: str, name: str) -> np.ndarray:
    """One image as uint8 (H, W, C), resized to a square of `image_size`."""
    from PIL import Image

    image: Any
    if isinstance(path, bytes):
        try:
            image = Image.open(io.BytesIO(path))
            image.load()
        except Exception as e:  # noqa: BLE001 - PIL raises many types for corrupt data
            raise ImageReadError(f"{name}: not a readable image ({type(e).__name__})") from None
        image = image.convert(mode)
    else:
        image = open_image(path, mode)
    if image.size != (image_size, image_size):
        image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def _stack(arrays: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def load_image_files(paths: list[Path], image_size: int = 112, grayscale: bool = False) -> torch.Tensor:
    """Image files read as uint8 (N, C, S, S), resized to `image_size` (bilinear)."""
    mode = "L" if grayscale else "RGB"
    return _stack([_read_resized(p, image_size, mode, str(p)) for p in paths])


def load_identity_images(files: list[list[Path]], image_size: int = 112, grayscale: bool = False) -> ImageData:
    """The images of some identities (each a list of files) in memory, resized to `image_size`, labelled 0..k-1."""
    images = [load_image_files(paths, image_size, grayscale) for paths in files]
    labels = torch.cat([torch.full((len(x),), i, dtype=torch.int64) for i, x in enumerate(images)])
    return ImageData(torch.cat(images), labels)


class IdentityImageFiles(torch.utils.data.Dataset):
    """The images of some identities (each a list of files) read one at a time, for a `DataLoader`: item i is
    (uint8 (C, S, S) resized to `image_size`, label), labels 0..k-1 in the order of `files`. Only the file list
    is held in memory. An unreadable image gives ``(None, why)`` so the loader can say so in one line.
    """

    def __init__(self, files: list[list[Path]], image_size: int = 112, grayscale: bool = False) -> None:
        self.paths = [p for paths in files for p in paths]
        self.labels = torch.tensor([i for i, paths in enumerate(files) for _ in paths], dtype=torch.int64)
        self.image_size, self.mode = image_size, "L" if grayscale else "RGB"

    def __len__(self) -> int:
        return len(self.paths)

    def head(self, n: int) -> IdentityImageFiles:
        """The first `n` images (a training subset)."""
        out = IdentityImageFiles([], self.image_size, self.mode == "L")
        out.paths, out.labels = self.paths[:n], self.labels[:n]
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, Any]:
        try:
            arr = _read_resized(self.paths[i], self.image_size, self.mode, str(self.paths[i]))
        except ImageReadError as e:
            return None, str(e)
        return torch.tensor(arr).permute(2, 0, 1).contiguous(), self.labels[i]


def load_identity_folder(
    root: str | os.PathLike,
    image_size: int = 112,
    grayscale: bool = False,
    min_images: int = 2,
    only: list[str] | None = None,
) -> tuple[ImageData, list[str]]:
    """Every image of an identity folder in memory, resized to `image_size`; labels index the identities.

    Args:
        only: read these identities only (in this order); default all, sorted by name.

    Returns:
        (images uint8 (N, C, S, S) with labels, identity names).
    """
    names, files = identity_files(root, min_images)
    if only is not None:
        by_name = dict(zip(names, files))
        names, files = list(only), [by_name[n] for n in only]
    return load_identity_images(files, image_size, grayscale), names


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized to (N, C, size, size) (bilinear, antialiased); unchanged if already so."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def make_pairs(labels: torch.Tensor, num_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`num_pairs` pairs of sample indices, half of one identity and half of two, in random order.

    Returns:
        (indices (P, 2), issame (P,)).

    Raises:
        DatasetError: no identity has two images, or there are fewer than two identities.
    """
    labels_np = labels.numpy()
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels_np == c) for c in np.unique(labels_np)]
    multi = [g for g in groups if len(g) >= 2]
    if not multi or len(groups) < 2:
        raise DatasetError("verification pairs need an identity with two images and at least two identities")
    pairs, same = [], []
    for i in range(num_pairs):
        if i % 2 == 0:
            g = multi[rng.integers(len(multi))]
            a, b = rng.choice(g, 2, replace=False)
        else:
            ga, gb = rng.choice(len(groups), 2, replace=False)
            a, b = rng.choice(groups[ga]), rng.choice(groups[gb])
        pairs.append((a, b))
        same.append(i % 2 == 0)
    order = rng.permutation(num_pairs)
    return np.asarray(pairs, dtype=np.int64)[order], np.asarray(same, dtype=bool)[order]


# ---------------------------------------------------------------- pairs.txt


@dataclass
class PairList:
    """Verification pairs: the images in pair order (2 per pair) and whether each pair is one identity."""

    images: ImageData  # (2P, C, S, S) uint8; labels hold the pair index
    issame: torch.Tensor  # (P,) bool
    source: str

    def __len__(self) -> int:
        return len(self.issame)


def generated_pairs(images: torch.Tensor, labels: torch.Tensor, num_pairs: int, seed: int, source: str) -> PairList:
    """`num_pairs` verification pairs (`make_pairs`) drawn from labelled images, as a `PairList`."""
    idx, issame = make_pairs(labels, num_pairs, seed)
    flat = torch.from_numpy(idx.reshape(-1))
    return PairList(
        ImageData(images[flat], torch.arange(len(idx)).repeat_interleave(2)), torch.from_numpy(issame), source
    )


def _lfw_path(root: Path, name: str, number: str) -> Path:
    return root / name / f"{name}_{int(number):04d}.jpg"


def read_pairs(pairs_file: str | os.PathLike, root: str | os.PathLike) -> list[tuple[Path, Path, bool]]:
    """The pairs of a ``pairs.txt`` (see the module docstring), each image checked to exist under `root`.

    Raises:
        DatasetError: the file is missing, a line is malformed, or it names an image that is not there.
    """
    pairs_file, root = Path(pairs_file), Path(root)
    if not pairs_file.is_file():
        raise DatasetError(f"pairs file {pairs_file} not found")
    pairs = []
    for lineno, line in enumerate(pairs_file.read_text().splitlines(), 1):
        f = line.split()
        if not f or (lineno == 1 and all(x.isdigit() for x in f)):  # blank, or the "folds pairs" header
            continue
        if len(f) == 3 and f[1].isdigit() and f[2].isdigit():
            pair = (_lfw_path(root, f[0], f[1]), _lfw_path(root, f[0], f[2]), True)
        elif len(f) == 4 and f[1].isdigit() and f[3].isdigit():
            pair = (_lfw_path(root, f[0], f[1]), _lfw_path(root, f[2], f[3]), False)
        elif len(f) == 3 and f[2] in ("0", "1"):
            pair = (root / f[0], root / f[1], f[2] == "1")
        else:
            raise DatasetError(
                f"{pairs_file}:{lineno}: expected 'name n1 n2', 'name1 n1 name2 n2' or 'pathA pathB 0|1', got {line.strip()!r}"
            )
        for p in pair[:2]:
            if not p.is_file():
                raise DatasetError(f"{pairs_file}:{lineno} names an image that is not there: {p}")
        pairs.append(pair)
    if not pairs:
        raise DatasetError(f"{pairs_file} lists no pairs")
    return pairs


def load_pair_images(
    pairs_file: str | os.PathLike, root: str | os.PathLike, image_size: int = 112, grayscale: bool = False
) -> PairList:
    """The images of a ``pairs.txt`` in memory, resized to `image_size`, in pair order."""
    pairs = read_pairs(pairs_file, root)
    mode = "L" if grayscale else "RGB"
    arrays = [_read_resized(p, image_size, mode, str(p)) for a, b, _ in pairs for p in (a, b)]
    index = torch.arange(len(pairs)).repeat_interleave(2)
    issame = torch.tensor([s for _, _, s in pairs], dtype=torch.bool)
    return PairList(ImageData(_stack(arrays), index), issame, str(pairs_file))


# ---------------------------------------------------------------- insightface .bin sets


class _NoGlobals(pickle.Unpickler):
    """An unpickler that resolves no global: only built-in containers, bytes, str, numbers and bools load."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused: the file asks for {module}.{name}")


def read_verification_bin(path: str | os.PathLike) -> tuple[list[bytes], list[bool]]:
    """The encoded images and the same-identity flags of an insightface ``.bin`` set, without running its code.

    Raises:
        DatasetError: missing, not a pickle, names any global (refused before it runs), or not
            ``(list of bytes, list of bool)`` with two images per flag.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"verification set {path} not found")
    try:
        with open(path, "rb") as f:
            obj = _NoGlobals(f, encoding="bytes").load()
    except pickle.UnpicklingError as e:
        raise DatasetError(f"{path}: not a verification .bin ({e}); nothing in it was run") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DatasetError(f"{path}: not a verification .bin (unreadable pickle: {type(e).__name__})") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(x, list) for x in obj)):
        raise DatasetError(f"{path}: expected (list of images, list of bools), got {type(obj).__name__}")
    bins, issame = obj
    if not all(isinstance(b, (bytes, bytearray)) for b in bins) or not all(isinstance(s, bool) for s in issame):
        raise DatasetError(f"{path}: expected encoded images as bytes and the pair flags as bools")
    if not issame or len(bins) != 2 * len(issame):
        raise DatasetError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected two per pair)")
    return [bytes(b) for b in bins], issame


def decode_pair_images(path: str | os.PathLike, image_size: int = 112, grayscale: bool = False) -> PairList:
    """The pairs of a ``.bin`` set, decoded and resized to `image_size`, in pair order."""
    bins, issame = read_verification_bin(path)
    mode = "L" if grayscale else "RGB"
    arrays = [_read_resized(b, image_size, mode, f"{path} image {i}") for i, b in enumerate(bins)]
    index = torch.arange(len(issame)).repeat_interleave(2)
    return PairList(ImageData(_stack(arrays), index), torch.tensor(issame, dtype=torch.bool), str(path))


# ---------------------------------------------------------------- download


def download_lfw(
    data_dir: str | os.PathLike | None = None, images: str = "lfw.tgz", base_url: str = LFW_URL
) -> tuple[Path, Path]:
    """Download (once; MD5-checked) LFW's ``pairs.txt`` and an image archive, and unpack the images.

    Args:
        data_dir: where to put them (default: the data cache), under ``lfw/``.
        images: ``lfw.tgz`` (the original images) or ``lfw-deepfunneled.tgz``. LFW's faces are 250 x 250 and
            not aligned to 112 x 112 as face models expect; results on them are not comparable to the
            published ones, which use the aligned ``lfw.bin``.
        base_url: the site to fetch from.

    Returns:
        (pairs.txt, the folder of identity folders).
    """
    if images not in LFW_FILES or not images.endswith(".tgz"):
        raise ValueError(f"images must be one of {[k for k in LFW_FILES if k.endswith('.tgz')]}, got {images!r}")
    folder = download_dir(data_dir) / "lfw"
    pairs = folder / "pairs.txt"
    download_verified(base_url + "pairs.txt", pairs, LFW_FILES["pairs.txt"])
    archive = folder / images
    download_verified(base_url + images, archive, LFW_FILES[images])
    top = images.removesuffix(".tgz")
    if not (folder / top).is_dir():
        extract_tar(archive, folder)
    return pairs, folder / top
