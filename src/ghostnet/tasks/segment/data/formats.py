"""Segmentation data in its real on-disk formats: PASCAL VOC 2012, Cityscapes and a plain folder of pairs.

    VOCdevkit/VOC2012/JPEGImages/*.jpg, SegmentationClass/*.png (palette PNG: value = class, 255 = ignore),
        ImageSets/Segmentation/{train,val}.txt; SBD's augmented set: SegmentationClassAug/*.png + train_aug.txt
    cityscapes/leftImg8bit/{train,val}/CITY/*_leftImg8bit.png, gtFine/{train,val}/CITY/*_gtFine_labelIds.png
        (label ids mapped to the 19 train ids, every other id to 255)
    folder/classes.txt (one class a line: line i is mask value i), {train,val}/images/*, {train,val}/masks/*.png

Every split is checked when it is read: each mask's values must be known classes or 255 (the file and the
values are named otherwise), and each image and mask must have the same size (the pair is named).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ....data.datasets import DatasetError

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_COLORS",
    "IGNORE_INDEX",
    "SEGMENTATION_FORMATS",
    "SegSplit",
    "VOC_CLASSES",
    "cityscapes_lut",
    "load_segmentation_split",
    "read_mask",
    "voc_palette",
]

IGNORE_INDEX = 255
SEGMENTATION_FORMATS = ("voc", "cityscapes", "folder")
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
# Cityscapes' label ids (cityscapesScripts' labels.py) of the 19 evaluated classes, in train-id order.
# Cityscapes' own colours for the 19 train ids (its devkit's labels table), as street-scene overlays show them.
CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60), (255, 0, 0),
    (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip
_CITYSCAPES_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
_CITYSCAPES_MAX_ID = 33  # ids 0..33 are defined; the rest (void classes) map to 255
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def voc_palette(n: int = 256) -> list[int]:
    """PASCAL VOC's colour map (the bit-interleaved one of its devkit), flat [r0, g0, b0, r1, ...] for `n` values."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def cityscapes_lut() -> np.ndarray:
    """(256,) uint8: Cityscapes label id -> train id (0..18), 255 for every other id."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(_CITYSCAPES_IDS):
        lut[label_id] = train_id
    return lut


@dataclass
class SegSplit:
    """One split: image/mask pairs, the class names, and how raw mask values become class indices."""

    images: list[Path]
    masks: list[Path]
    classes: list[str]
    format: str
    root: Path
    lut: np.ndarray | None = None  # raw mask value -> class index (Cityscapes); None = the values are the classes
    palette_masks: bool = False  # masks must be palette PNGs (VOC's SegmentationClass)
    valid_values: set[int] = field(default_factory=set)  # raw values a mask may hold

    def __len__(self) -> int:
        return len(self.images)

    def report(self) -> str:
        return f"{len(self)} image/mask pairs, {len(self.classes)} classes ({self.format} at {self.root})"


def read_mask(path: str | os.PathLike, split: SegSplit) -> np.ndarray:
    """The mask at `path` as (H, W) uint8 class indices (255 = ignore), checked against `split`'s classes."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if split.palette_masks and im.mode != "P":
                raise DatasetError(
                    f"{path} is a {im.mode} image, not a palette PNG: VOC's SegmentationClass masks store the class as "
                    "the palette index (an RGB rendering loses it; use the original files)"
                )
            if im.mode not in ("P", "L", "I;16", "I"):
                raise DatasetError(f"{path} is a {im.mode} image; a mask must be single-channel (P or L) class values")
            raw = np.asarray(im)
    except OSError as e:
        raise DatasetError(f"{path} is not a readable mask: {e}") from None
    bad = sorted(set(np.unique(raw).tolist()) - split.valid_values)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise DatasetError(
            f"{path} holds value(s) {shown} that are neither a class (0..{len(split.classes) - 1}) nor 255 (ignore)"
        )
    raw = raw.astype(np.uint8)
    return split.lut[raw] if split.lut is not None else raw


def _check_pairs(split: SegSplit, check_masks: bool) -> None:
    """Every image and its mask have the same size; with `check_masks`, every mask's values are read and checked."""
    from PIL import Image

    for img, mask in zip(split.images, split.masks):
        if not mask.is_file():
            raise DatasetError(f"the mask of {img} is missing: {mask}")
        try:
            with Image.open(img) as a, Image.open(mask) as b:
                sizes = (a.size, b.size)
        except OSError as e:
            raise DatasetError(f"cannot read the pair {img} / {mask}: {e}") from None
        if sizes[0] != sizes[1]:
            (w1, h1), (w2, h2) = sizes
            raise DatasetError(f"image {img} is {w1}x{h1} but its mask {mask} is {w2}x{h2}")
        if check_masks:
            read_mask(mask, split)


def load_segmentation_split(fmt: str, root: str | os.PathLike, split: str, check_masks: bool = True) -> SegSplit:
    """A checked split of a dataset in `fmt` (``voc``, ``cityscapes`` or ``folder``) under `root`.

    Args:
        fmt: the on-disk format.
        root: VOC: a folder holding ``JPEGImages/`` (or ``VOCdevkit/VOC2012`` above it); Cityscapes: the folder
            holding ``leftImg8bit/`` and ``gtFine/``; folder: the one holding ``classes.txt``.
        split: ``train``, ``val`` (VOC also ``train_aug`` with SBD's masks, or any list in ImageSets/Segmentation).
        check_masks: read every mask and check its values (the sizes are always checked).
    """
    if fmt not in SEGMENTATION_FORMATS:
        raise DatasetError(f"unknown segmentation format {fmt!r}; choose from {', '.join(SEGMENTATION_FORMATS)}")
    if root is None or not Path(root).is_dir():
        raise DatasetError(f"{fmt} data folder {root} does not exist (give --data-dir)")
    reader = {"voc": _voc, "cityscapes": _cityscapes, "folder": _folder}[fmt]
    out = reader(Path(root), split)
    if not out.images:
        raise DatasetError(f"the {split} split of {out.root} is empty")
    _check_pairs(out, check_masks)
    return out


def _voc(root: Path, split: str) -> SegSplit:
    if not (root / "JPEGImages").is_dir() and (root / "VOCdevkit" / "VOC2012").is_dir():
        root = root / "VOCdevkit" / "VOC2012"
    if not (root / "JPEGImages").is_dir():
        raise DatasetError(
            f"{root} is not a PASCAL VOC folder (no JPEGImages/); `ghostnet segment train --download` gets it"
        )
    list_file = root / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not list_file.is_file():
        raise DatasetError(f"the split file {list_file} is missing")
    # "2007_000032", or the augmented lists' "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png"
    ids = [Path(line.split()[0]).stem for line in list_file.read_text().splitlines() if line.strip()]
    aug = split.endswith("_aug")  # SBD's augmented lists (train_aug.txt) use its masks
    mask_dir = root / ("SegmentationClassAug" if aug else "SegmentationClass")
    return SegSplit(
        images=[root / "JPEGImages" / f"{i}.jpg" for i in ids],
        masks=[mask_dir / f"{i}.png" for i in ids],
        classes=list(VOC_CLASSES),
        format="voc",
        root=root,
        palette_masks=not aug,  # SBD's converted masks are grayscale PNGs of the same values
        valid_values={*range(len(VOC_CLASSES)), IGNORE_INDEX},
    )


def _cityscapes(root: Path, split: str) -> SegSplit:
    for sub in ("leftImg8bit", "gtFine"):
        if not (root / sub).is_dir():
            raise DatasetError(
                f"{root} is not a Cityscapes folder: {sub}/ is missing (both leftImg8bit/ and gtFine/ are needed)"
            )
    images = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))
    masks = [
        root / "gtFine" / split / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        for p in images
    ]
    return SegSplit(
        images=images,
        masks=masks,
        classes=list(CITYSCAPES_CLASSES),
        format="cityscapes",
        root=root,
        lut=cityscapes_lut(),
        valid_values={*range(_CITYSCAPES_MAX_ID + 1), IGNORE_INDEX},
    )


def _folder(root: Path, split: str) -> SegSplit:
    class_file = root / "classes.txt"
    if not class_file.is_file():
        raise DatasetError(f"{class_file} is missing: a folder dataset lists its classes there, one a line")
    classes = [line.strip() for line in class_file.read_text().splitlines() if line.strip()]
    if not 2 <= len(classes) <= IGNORE_INDEX:
        raise DatasetError(f"{class_file} must list 2..255 classes, got {len(classes)}")
    image_dir, mask_dir = root / split / "images", root / split / "masks"
    if not image_dir.is_dir():
        raise DatasetError(f"the {split} split is missing: no folder {image_dir}")
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
    return SegSplit(
        images=images,
        masks=[mask_dir / f"{p.stem}.png" for p in images],
        classes=classes,
        format="folder",
        root=root,
        valid_values={*range(len(classes)), IGNORE_INDEX},
    )
