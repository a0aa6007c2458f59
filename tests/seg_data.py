"""Small segmentation datasets written in their real on-disk formats, for the segmentation tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ghostnet.tasks.segment.data import voc_palette


def _pair(rng: np.random.Generator, h: int, w: int, values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """An image with a bright square on noise, and its mask: the square's class, 0 elsewhere, a 255 rim."""
    img = (rng.random((h, w, 3)) * 80).astype(np.uint8)
    mask = np.zeros((h, w), dtype=np.uint8)
    y, x, s = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2)), max(6, min(h, w) // 3)
    cls = int(rng.choice(values))
    img[y : y + s, x : x + s] = np.array([60 * cls % 256, 200, (255 - 20 * cls) % 256], dtype=np.uint8)
    mask[y : y + s, x : x + s] = cls
    mask[y + s - 1, x : x + s] = 255
    return img, mask


def _palette_png(mask: np.ndarray, path: Path) -> None:
    im = Image.fromarray(mask, mode="P")
    im.putpalette(voc_palette())
    im.save(path)


def write_voc(root: Path, n_train: int = 4, n_val: int = 2, size: tuple[int, int] = (40, 48), seed: int = 0) -> Path:
    """VOCdevkit/VOC2012 with JPEGImages, palette-PNG SegmentationClass and ImageSets/Segmentation lists."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = {"train": [f"2007_{i:06d}" for i in range(n_train)], "val": [f"2008_{i:06d}" for i in range(n_val)]}
    for split, names in ids.items():
        for name in names:
            img, mask = _pair(rng, *size, values=[1, 7, 15])
            Image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
            _palette_png(mask, voc / "SegmentationClass" / f"{name}.png")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def write_cityscapes(root: Path, n_train: int = 2, n_val: int = 2, size: tuple[int, int] = (32, 64)) -> Path:
    """leftImg8bit/{split}/CITY/*_leftImg8bit.png and gtFine/{split}/CITY/*_gtFine_labelIds.png (label ids)."""
    rng = np.random.default_rng(1)
    for split, n in (("train", n_train), ("val", n_val)):
        for sub in ("leftImg8bit", "gtFine"):
            (root / sub / split / "aachen").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            img = (rng.random((*size, 3)) * 255).astype(np.uint8)
            ids = np.full(size, 7, dtype=np.uint8)  # road
            ids[: size[0] // 2] = 23  # sky
            ids[:2] = 1  # ego vehicle: void, ignored
            ids[-4:, -8:] = 26  # car
            Image.fromarray(img).save(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids, mode="L").save(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png")
    return root


def write_folder(
    root: Path, n_train: int = 8, n_val: int = 3, size: tuple[int, int] = (40, 40), classes=("background", "a", "b")
) -> Path:
    """classes.txt and {train,val}/images/*.jpg + {train,val}/masks/*.png (palette PNG masks)."""
    rng = np.random.default_rng(2)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    for split, n in (("train", n_train), ("val", n_val)):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i in range(n):
            img, mask = _pair(rng, *size, values=list(range(1, len(classes))))
            Image.fromarray(img).save(root / split / "images" / f"{i:04d}.png")
            _palette_png(mask, root / split / "masks" / f"{i:04d}.png")
    return root
