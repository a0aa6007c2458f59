"""Joint image/mask transforms and the segmentation loader.

Training samples are scaled at random, padded (the mask with 255, ignored by the loss) to the crop size,
cropped and flipped, with one random draw applied identically to the image and its mask; the draw comes from
(seed, epoch, index), so a resumed run sees the same crops. Evaluation takes whole images at their own size.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ....data.datasets import IMAGENET_MEAN, IMAGENET_STD
from ....data.images import read_image
from ....data.loaders import rank_batches, sample_seed
from .formats import IGNORE_INDEX, SegSplit, read_mask

__all__ = ["SegmentationDataset", "SegmentationLoader", "joint_scale_crop_flip", "normalize"]


def normalize(
    x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """(…, 3, H, W) in [0, 1] -> normalised per channel."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return (x - m) / s


def joint_scale_crop_flip(
    image: torch.Tensor,
    mask: torch.Tensor,
    crop: int,
    scale_range: tuple[float, float],
    flip: bool,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale by a random factor in `scale_range` (image bilinear, mask nearest-exact: both sampled at pixel centres), pad to at least `crop` (image 0,
    mask 255), take a random `crop` x `crop` window and maybe flip: the same draw for both.

    Args:
        image: (3, H, W) float (already normalised, so that 0 is the mean colour).
        mask: (H, W) uint8 class indices.
    Returns:
        ((3, crop, crop), (crop, crop)).
    """
    s = float(rng.uniform(*scale_range))
    h, w = mask.shape
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        mask = F.interpolate(mask[None, None].float(), size=(nh, nw), mode="nearest-exact")[0, 0].to(torch.uint8)
    ph, pw = max(0, crop - nh), max(0, crop - nw)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        mask = F.pad(mask, (0, pw, 0, ph), value=IGNORE_INDEX)
    y = int(rng.integers(0, mask.shape[0] - crop + 1))
    x = int(rng.integers(0, mask.shape[1] - crop + 1))
    image, mask = image[:, y : y + crop, x : x + crop], mask[y : y + crop, x : x + crop]
    if flip and rng.random() < 0.5:
        image, mask = image.flip(-1), mask.flip(-1)
    return image.contiguous(), mask.contiguous()


class SegmentationDataset(torch.utils.data.Dataset):
    """Sample i of a split: (normalised image (3, H, W), mask (H, W) uint8); transformed when `crop` is set."""

    def __init__(
        self,
        split: SegSplit,
        crop: int | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        seed: int = 0,
    ) -> None:
        self.split, self.crop, self.scale_range, self.flip, self.seed, self.epoch = (
            split, crop, scale_range, flip, seed, 0
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = normalize(read_image(self.split.images[i]))  # (3, H, W)
        mask = torch.from_numpy(read_mask(self.split.masks[i], self.split).copy())  # (H, W) uint8
        if image.shape[-2:] != mask.shape:  # the split was checked; this is a file changed since
            raise ValueError(f"image {self.split.images[i]} and mask {self.split.masks[i]} differ in size")
        if self.crop is None:
            return image, mask
        rng = np.random.default_rng(sample_seed(self.seed, self.epoch, i))
        return joint_scale_crop_flip(image, mask, self.crop, self.scale_range, self.flip, rng)


def _stack(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])


def _as_lists(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    return [b[0] for b in batch], [b[1] for b in batch]


class SegmentationLoader:
    """Batches of a segmentation split, sharded per rank like the other loaders.

    Training yields ``(images (B, 3, crop, crop), masks (B, crop, crop) int64)``; evaluation yields lists of
    whole images and masks at their own sizes (``([(3, H_i, W_i)], [(H_i, W_i)])``), for full-image evaluation.
    """

    def __init__(
        self,
        split: SegSplit,
        batch_size: int,
        *,
        train: bool,
        crop: int = 512,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 2,
        device: torch.device | str = "cpu",
    ) -> None:
        self.dataset = SegmentationDataset(split, crop if train else None, scale_range, flip, seed)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Any]:
        mine = rank_batches(
            len(self.dataset), self.batch_size, self.seed, epoch, self.train, self.rank, self.world_size, start
        )
        self.dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=mine,
            num_workers=self.num_workers,
            collate_fn=_stack if self.train else _as_lists,
            pin_memory=self.device.type == "cuda",
        )
        for images, masks in loader:
            if self.train:
                yield images.to(self.device, non_blocking=True), masks.to(self.device).long()
            else:
                yield [x.to(self.device) for x in images], [m.to(self.device).long() for m in masks]
