"""The data of a face (identity) run: training identities and verification pairs, from an identity folder or a
small built-in dataset whose classes stand in for identities; and the flip-summed embeddings of a set of images.

Built-in datasets (``fashion_mnist``, ``mnist``, ``digits``): the classes in ``train_identities`` are trained on
(their training-split images); the other classes never take part in training, and the verification pairs are
drawn from their test-split images, so the evaluation measures embeddings of identities the model never saw.

An identity folder: with ``val_pairs`` (an LFW-style ``pairs.txt``) or ``val_bin`` (an insightface ``.bin``)
those pairs verify; otherwise the last ``holdout_identities`` fraction of identities (sorted by name) is held
out of training and the pairs are drawn from their images. Its training images are not held in memory: they are
read per batch by `IdentityFileLoader` (the pairs are).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...data import DatasetError, ImageData, TensorLoader, load_dataset
from ...data.loaders import rank_batches, sample_seed
from ...engine.task import autocast
from .data import (
    IdentityImageFiles,
    PairList,
    decode_pair_images,
    generated_pairs,
    identity_files,
    load_identity_images,
    load_pair_images,
    resize_images,
)

__all__ = [
    "BUILTIN_IDENTITY_SETS",
    "FaceData",
    "IdentityFileLoader",
    "embed_batches",
    "flip_sum_embeddings",
    "load_face_data",
    "validation_pairs",
]

BUILTIN_IDENTITY_SETS = ("fashion_mnist", "mnist", "digits")
FACE_MEAN, FACE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # insightface's normalisation: pixels to [-1, 1]


@dataclass
class FaceData:
    """Training identities (images with identity labels) and the verification pairs of a run."""

    train: ImageData | IdentityImageFiles | None  # in memory (built-in sets) or read from files (identity folders)
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
    pairs = generated_pairs(
        resize_images(test.images[keep], cfg.image_size), test.labels[keep], cfg.num_pairs, cfg.seed, source
    )
    train = None
    if with_train:
        tr = bundle.train
        mask = torch.isin(tr.labels, torch.tensor(train_ids))
        remap = torch.full((n,), -1, dtype=torch.int64)
        remap[torch.tensor(train_ids)] = torch.arange(len(train_ids))
        train = ImageData(resize_images(tr.images[mask], cfg.image_size), remap[tr.labels[mask]])
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
        held = load_identity_images(files[-k:], cfg.image_size, gray)
        source = f"{k} held-out identities of {cfg.data_dir}"
        pairs = generated_pairs(held.images, held.labels, cfg.num_pairs, cfg.seed, source)
    train = None
    train_names = names[: len(names) - k]
    if with_train:
        train = IdentityImageFiles(files[: len(names) - k], cfg.image_size, gray)  # read per batch, not held
        if cfg.train_subset:
            train = train.head(cfg.train_subset)
    chans = 1 if gray else 3
    return FaceData(train, train_names, pairs, FACE_MEAN[:chans], FACE_STD[:chans], chans, cfg.image_size)


def _collate(samples: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    bad = [why for x, why in samples if x is None]
    if bad:
        raise DatasetError(f"{bad[0]}; remove it from the identity folder")
    return torch.stack([x for x, _ in samples]), torch.stack([y for _, y in samples])


class IdentityFileLoader:
    """Training batches of identity-folder images read from their files by `num_workers` DataLoader workers:
    only the file list is in memory. Like `TensorLoader`, the global batches of an epoch depend only on
    (seed, epoch); each of `world_size` ranks reads its share of each, and the augmentation of image j of batch
    i is drawn from (seed, epoch, i) over the global batch, so a run resumes mid-epoch exactly.

    Args:
        augment: "flip" (horizontal flips), "crop_flip" (pad 4, random crop, flip), "crop", or "none".
    """

    def __init__(
        self, data: IdentityImageFiles, batch_size: int, *, augment: str, mean: Any, std: Any, in_chans: int,
        seed: int = 0, rank: int = 0, world_size: int = 1, num_workers: int = 2, device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        if augment not in ("flip", "crop_flip", "crop", "none"):
            raise ValueError(f"augment must be flip, crop_flip, crop or none, got {augment!r}")
        self.data, self.batch_size, self.augment, self.in_chans = data, batch_size, augment, in_chans
        self.seed, self.rank, self.world_size, self.num_workers = seed, rank, world_size, num_workers
        self.device = torch.device(device)
        self.mean = torch.tensor(list(mean), device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std), device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.data) // self.batch_size

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of this rank, from batch `start` of `epoch` on: float (b, C, H, W), int64 (b,)."""
        mine = rank_batches(len(self.data), self.batch_size, self.seed, epoch, True, self.rank, self.world_size, start)
        loader = torch.utils.data.DataLoader(
            self.data, batch_sampler=mine, num_workers=self.num_workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )  # fmt: skip
        for i, (x, y) in enumerate(loader, start):
            x = self._augment(x, torch.Generator().manual_seed(sample_seed(self.seed, epoch, i, 1)))
            x = x.to(self.device, non_blocking=True)
            if x.shape[1] != self.in_chans:
                x = x.expand(-1, self.in_chans, -1, -1)
            yield (x.float().div_(255) - self.mean) / self.std, y.to(self.device, non_blocking=True)

    def _augment(self, x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
        """This rank's share of the global batch, augmented with draws made for the whole global batch."""
        b, _, h, w = x.shape
        mine = slice(self.rank, None, self.world_size)
        if self.augment in ("crop", "crop_flip"):
            oy = torch.randint(0, 2 * pad + 1, (self.batch_size,), generator=g)[mine]
            ox = torch.randint(0, 2 * pad + 1, (self.batch_size,), generator=g)[mine]
            xp = F.pad(x, (pad, pad, pad, pad))
            x = torch.stack([xp[j, :, oy[j] : oy[j] + h, ox[j] : ox[j] + w] for j in range(b)])
        if self.augment in ("flip", "crop_flip"):
            coins = (torch.rand(self.batch_size, generator=g) < 0.5)[mine]
            x = torch.where(coins[:, None, None, None], x.flip(3), x)
        return x


def flip_sum_embeddings(model: nn.Module, x: torch.Tensor, flip: bool = True) -> torch.Tensor:
    """L2-normalised float32 embeddings (B, E) of a normalised batch: each image's plus its mirror image's."""
    e = model(x).float()
    if flip:
        e = e + model(x.flip(3)).float()
    return F.normalize(e, dim=1)


@torch.no_grad()
def embed_batches(model: nn.Module, loader: TensorLoader, amp: str = "none", flip: bool = True) -> torch.Tensor:
    """L2-normalised embeddings (N, E) of a loader's images in order: each image's plus its mirror's, normalised."""
    model.eval()
    out = []
    for x, _ in loader.batches():
        with autocast(x.device, amp):
            out.append(flip_sum_embeddings(model, x, flip).cpu())
    return torch.cat(out)
