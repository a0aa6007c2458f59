"""Loaders that keep a small CPU busy with compute, shard global batches across ranks, and resume exactly.

In-memory splits are augmented a whole batch at a time with tensor ops (`TensorLoader`); image folders go
through a `DataLoader` with workers and torchvision transforms (`FolderLoader`). All randomness derives from
(seed, epoch, batch), so a run resumes mid-epoch exactly.

An image that fails to decode (truncated, corrupt) is dropped from its batch and listed in the loader's
``skipped`` with ``bad_images="skip"``, or refused with a `DatasetError` naming it with ``"error"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .datasets import IMAGENET_MEAN, IMAGENET_STD, DatasetError, ImageData
from .image_folder import BAD_IMAGES
from .images import ConvertMode, ImageReadError

__all__ = ["FolderLoader", "TensorLoader", "batch_indices", "folder_transforms", "rank_batches"]


def sample_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across runs and platforms."""
    h = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def batch_indices(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool, drop_last: bool) -> list[torch.Tensor]:
    """The global batches of one epoch: a permutation that depends only on (seed, epoch), cut into batches."""
    if shuffle:
        g = torch.Generator().manual_seed(sample_seed(seed, epoch))
        order = torch.randperm(n, generator=g)
    else:
        order = torch.arange(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    return [order[i : min(i + batch_size, stop)] for i in range(0, stop, batch_size)]


def rank_batches(
    n: int, batch_size: int, seed: int, epoch: int, train: bool, rank: int, world_size: int, start: int = 0
) -> list[list[int]]:
    """This rank's share of each global batch of `epoch`, from batch `start` on, as a DataLoader `batch_sampler`.

    Training shuffles by (seed, epoch) and drops the last partial batch; a last evaluation batch smaller than the
    number of ranks leaves some ranks nothing, and those skip it.
    """
    batches = batch_indices(n, batch_size, seed, epoch, train, train)[start:]
    return [m for m in (b[rank::world_size].tolist() for b in batches) if m]


class TensorLoader:
    """Batches of an in-memory uint8 dataset: sharded per rank, augmented per batch with tensor ops, normalised.

    Args:
        data: the split.
        batch_size: the *global* batch; each of `world_size` ranks gets ``batch_size / world_size`` of it.
        train: shuffle, drop the last partial batch and augment.
        augment: "crop_flip" (pad 4, random crop, horizontal flip), "crop", or "none".
        mean, std: per-channel normalisation (after scaling to [0, 1]).
        in_chans: channels the model takes; a 1-channel dataset is replicated when this is 3.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int,
        *,
        train: bool,
        augment: str = "none",
        mean: Sequence[float] = (0.5,),
        std: Sequence[float] = (0.5,),
        in_chans: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        if augment not in ("crop_flip", "crop", "none"):
            raise ValueError(f"augment must be crop_flip, crop or none for in-memory data, got {augment!r}")
        self.data, self.batch_size, self.train, self.augment = data, batch_size, train, augment
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.device = torch.device(device)
        self.channels_last = channels_last
        data_chans = data.images.shape[1]
        self.in_chans = in_chans or data_chans
        if self.in_chans != data_chans and not (data_chans == 1 and self.in_chans == 3):
            raise ValueError(
                f"the data has {data_chans} channel(s); a model with in_chans={self.in_chans} cannot take it"
            )
        reps = self.in_chans // data_chans
        self.mean = torch.tensor(list(mean) * reps if len(mean) == 1 else mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(list(std) * reps if len(std) == 1 else std, device=self.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        n = len(self.data)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) of this rank, from batch `start` of `epoch` on: float (b, C, H, W), int64 (b,)."""
        all_batches = batch_indices(len(self.data), self.batch_size, self.seed, epoch, self.train, self.train)
        for i in range(start, len(all_batches)):
            idx = all_batches[i]
            x = self.data.images[idx]  # (B, c, H, W) uint8, the global batch
            if self.train and self.augment != "none":
                x = _augment(
                    x, self.augment == "crop_flip", torch.Generator().manual_seed(sample_seed(self.seed, epoch, i, 1))
                )
            mine = slice(self.rank, None, self.world_size)  # this rank's share of the global batch
            yield self._prepare(x[mine]), self.data.labels[idx][mine].to(self.device, non_blocking=True)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if x.shape[1] != self.in_chans:
            x = x.expand(-1, self.in_chans, -1, -1)
        x = (x.float().div_(255) - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def _augment(x: torch.Tensor, flip: bool, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop from a zero-padded image (pad 4) and optional horizontal flip, for a whole uint8 batch."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
    out = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(b, generator=g) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


class _SeededTransform(torch.utils.data.Dataset):
    """Applies a random transform to sample i with randomness fixed by (seed, epoch, i), in any worker.

    An unreadable image gives ``(None, why)`` instead of ``(image, label)``: `_ReadableBatch` drops it, and the
    loader decides in the main process what that means (an exception raised in a worker would reach the user
    as a traceback wrapped in a traceback).
    """

    def __init__(self, dataset: Any, transform: Any, seed: int) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            img, label = self.dataset[i]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, self.epoch, i))
                return self.transform(img), label
        except ImageReadError as e:
            return None, str(e)


class _ReadableBatch:
    """Collates the readable samples of a batch: (images, labels, why each unreadable one was dropped).

    A batch with no readable image gives empty tensors of the right shape (`shape` is one image's).
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __call__(self, samples: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        good = [(x, y) for x, y in samples if x is not None]
        bad = [why for x, why in samples if x is None]
        if not good:
            return torch.empty(0, *self.shape), torch.empty(0, dtype=torch.int64), bad
        x, y = torch.utils.data.default_collate(good)
        return x, y, bad


def folder_transforms(train: bool, image_size: int, mean, std, color_jitter: float = 0.0, in_chans: int = 3):
    """ImageNet-style transforms (the paper's ImageNet recipe): RandomResizedCrop + flip [+ jitter]; or resize 256/224 + centre crop."""
    from torchvision import transforms as T

    ops: list[Any] = [ConvertMode("L" if in_chans == 1 else "RGB")]
    if train:
        ops += [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip()]
        if color_jitter > 0:
            ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:
        ops += [
            T.Resize(int(round(image_size * 256 / 224)), interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop(image_size),
        ]
    m, s = (list(mean)[:1], list(std)[:1]) if in_chans == 1 else (mean, std)
    ops += [T.ToTensor(), T.Normalize(m, s)]
    return T.Compose(ops)


class FolderLoader:
    """Batches of an image-folder split through a DataLoader with workers, sharded like `TensorLoader`.

    Args:
        bad_images: an image that fails to decode is dropped from its batch (``"skip"``; ``skipped`` lists
            those of the latest pass) or refused with a `DatasetError` naming it (``"error"``). A training
            batch left with one image is left empty (BatchNorm cannot train on one image).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        *,
        train: bool,
        image_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        color_jitter: float = 0.0,
        in_chans: int = 3,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 2,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        bad_images: str = "skip",
    ) -> None:
        if bad_images not in BAD_IMAGES:
            raise ValueError(f"bad_images must be skip or error, got {bad_images!r}")
        transform = folder_transforms(train, image_size, mean, std, color_jitter, in_chans)
        self.dataset = _SeededTransform(dataset, transform, seed)
        self.collate = _ReadableBatch((1 if in_chans == 1 else 3, image_size, image_size))
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.device, self.channels_last = torch.device(device), channels_last
        self.bad_images = bad_images
        self.skipped: list[str] = []  # why each image dropped in the latest pass could not be read

    def take_skipped(self) -> list[str]:
        """The images the latest pass dropped (unreadable), and forget them."""
        skipped, self.skipped = self.skipped, []
        return skipped

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        mine = rank_batches(
            len(self.dataset), self.batch_size, self.seed, epoch, self.train, self.rank, self.world_size, start
        )
        self.dataset.epoch = epoch
        self.skipped = []
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=mine,
            num_workers=self.num_workers,
            collate_fn=self.collate,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y, bad in loader:
            if bad and self.bad_images == "error":
                raise DatasetError(f"{bad[0]}; remove it or use bad_images=skip to leave such images out")
            self.skipped += bad
            if bad and self.train and len(y) == 1:  # BatchNorm cannot train on one image: an empty step instead
                x, y = x[:0], y[:0]
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
