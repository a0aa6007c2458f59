"""The data of a face (identity) run: training identities and verification pairs, from an identity folder or a
small built-in dataset whose classes stand in for identities; and the flip-summed embeddings of a set of images.

Built-in datasets (``fashion_mnist``, ``mnist``, ``digits``): the classes in ``train_identities`` are trained on
(their training-split images); the other classes never take part in training, and the verification pairs are
drawn from their test-split images, so the evaluation measures embeddings of identities the model never saw.

An identity folder: with ``val_pairs`` (an LFW-style ``pairs.txt``) or ``val_bin`` (an insightface ``.bin``)
those pairs verify; otherwise the last ``holdout_identities`` fraction of identities (sorted by name) is held
out of training and the pairs are drawn from their images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data import DatasetError, ImageData, TensorLoader, load_dataset
from ..data.faces import (
    PairList,
    decode_pair_images,
    identity_files,
    load_identity_folder,
    load_image_files,
    load_pair_images,
)
from .task import autocast

__all__ = ["BUILTIN_IDENTITY_SETS", "FaceData", "embed_batches", "load_face_data", "make_pairs", "validation_pairs"]

BUILTIN_IDENTITY_SETS = ("fashion_mnist", "mnist", "digits")
FACE_MEAN, FACE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # insightface's normalisation: pixels to [-1, 1]


@dataclass
class FaceData:
    """Training identities (images with identity labels) and the verification pairs of a run."""

    train: ImageData | None
    identities: list[str]  # the training identities, in label order
    pairs: PairList
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int  # the images' channels
    image_size: int

    def describe(self) -> str:
        n_same = int(self.pairs.issame.sum())
        train = f"{len(self.train):,} images of {len(self.identities)} identities; " if self.train is not None else ""
        return f"{train}{len(self.pairs):,} verification pairs ({n_same} same-identity) from {self.pairs.source}"


def make_pairs(labels: torch.Tensor, num_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`num_pairs` pairs of sample indices, half of one identity and half of two, in random order.

    Returns:
        (indices (P, 2), issame (P,)).
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


def _pair_list(images: torch.Tensor, labels: torch.Tensor, num_pairs: int, seed: int, source: str) -> PairList:
    idx, issame = make_pairs(labels, num_pairs, seed)
    flat = torch.from_numpy(idx.reshape(-1))
    return PairList(
        ImageData(images[flat], torch.arange(len(idx)).repeat_interleave(2)), torch.from_numpy(issame), source
    )


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def _builtin(cfg: Any, with_train: bool) -> FaceData:
    bundle = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)
    n = bundle.num_classes
    train_ids = list(cfg.train_identities) if cfg.train_identities else list(range(math.ceil(0.6 * n)))
    if any(c not in range(n) for c in train_ids) or len(set(train_ids)) < 2 or len(set(train_ids)) > n - 2:
        raise ValueError(
            f"train_identities must name at least 2 of {cfg.dataset}'s classes 0..{n - 1} and leave at least 2 out, "
            f"got {train_ids}"
        )
    held = [c for c in range(n) if c not in train_ids]
    test = bundle.test
    keep = torch.isin(test.labels, torch.tensor(held))
    source = f"{cfg.dataset} test images of held-out classes {held}"
    pairs = _pair_list(_resize(test.images[keep], cfg.image_size), test.labels[keep], cfg.num_pairs, cfg.seed, source)
    train = None
    if with_train:
        tr = bundle.train
        mask = torch.isin(tr.labels, torch.tensor(train_ids))
        remap = torch.full((n,), -1, dtype=torch.int64)
        remap[torch.tensor(train_ids)] = torch.arange(len(train_ids))
        train = ImageData(_resize(tr.images[mask], cfg.image_size), remap[tr.labels[mask]])
        if cfg.train_subset:
            train = ImageData(train.images[: cfg.train_subset], train.labels[: cfg.train_subset])
    names = [bundle.classes[c] for c in train_ids]
    return FaceData(train, names, pairs, tuple(bundle.mean), tuple(bundle.std), bundle.in_chans, cfg.image_size)


def _held_out(names: list[str], fraction: float) -> int:
    k = max(2, math.ceil(fraction * len(names)))
    if k > len(names) - 2:
        raise DatasetError(
            f"{len(names)} identities cannot be split into training ones and {k} held out for verification; "
            "add identities or give val_pairs / val_bin"
        )
    return k


def validation_pairs(cfg: Any) -> PairList:
    """The verification pairs of a face config, without reading its training images."""
    return load_face_data(cfg, with_train=False).pairs


def load_face_data(cfg: Any, with_train: bool = True) -> FaceData:
    """The training identities (if `with_train`) and the verification pairs a `FaceConfig` describes."""
    if cfg.dataset in BUILTIN_IDENTITY_SETS:
        return _builtin(cfg, with_train)
    if cfg.dataset != "folder":
        raise ValueError(f"dataset must be folder or one of {', '.join(BUILTIN_IDENTITY_SETS)}, got {cfg.dataset!r}")
    if not cfg.data_dir:
        raise ValueError("dataset folder needs data_dir: the folder of identity folders (DATA_DIR/<identity>/*.jpg)")
    gray = cfg.in_chans == 1
    names, files = identity_files(cfg.data_dir, cfg.min_images)
    if cfg.val_bin:
        pairs = decode_pair_images(cfg.val_bin, cfg.image_size, gray)
        k = 0
    elif cfg.val_pairs:
        pairs = load_pair_images(cfg.val_pairs, cfg.val_root or cfg.data_dir, cfg.image_size, gray)
        k = 0
    else:
        k = _held_out(names, cfg.holdout_identities)
        held = load_identity_folder_subset(files[-k:], cfg.image_size, gray)
        source = f"{k} held-out identities of {cfg.data_dir}"
        pairs = _pair_list(held.images, held.labels, cfg.num_pairs, cfg.seed, source)
    train = None
    train_names = names[: len(names) - k]
    if with_train:
        train, _ = load_identity_folder(cfg.data_dir, cfg.image_size, gray, cfg.min_images, only=train_names)
        if cfg.train_subset:
            train = ImageData(train.images[: cfg.train_subset], train.labels[: cfg.train_subset])
    chans = 1 if gray else 3
    return FaceData(train, train_names, pairs, FACE_MEAN[:chans], FACE_STD[:chans], chans, cfg.image_size)


def load_identity_folder_subset(files: list[list[Any]], image_size: int, grayscale: bool) -> ImageData:
    """The images of some identities (lists of files), labelled 0..k-1."""
    images = [load_image_files(paths, image_size, grayscale) for paths in files]
    labels = torch.cat([torch.full((len(x),), i, dtype=torch.int64) for i, x in enumerate(images)])
    return ImageData(torch.cat(images), labels)


@torch.no_grad()
def embed_batches(model: nn.Module, loader: TensorLoader, amp: str = "none", flip: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (N, E) of a loader's images in order: each image's plus its mirror's, normalised."""
    model.eval()
    out = []
    for x, _ in loader.batches():
        with autocast(x.device, amp):
            e = model(x).float()
            if flip:
                e = e + model(x.flip(3)).float()
        out.append(F.normalize(e, dim=1).cpu())
    return torch.cat(out)
