"""COCO-format detection data: an images folder plus an instances JSON, checked before training starts.

Every annotation is checked when the split is read: a box with no area, one wholly outside its image, an
unknown image or category id, or an image file that is missing or unreadable is either dropped and counted
(``bad="skip"``) or makes the whole split refused (``bad="error"``) with a message naming the first
problems. Boxes that stick out of their image are clipped to it (and counted). Crowd regions are left out
of training targets and kept for evaluation, as COCO's own evaluation does.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...data.datasets import DatasetError
from ...data.images import read_image
from ...data.loaders import rank_batches, sample_seed

__all__ = ["CocoSplit", "DetectionLoader", "find_coco_split", "load_coco_split", "require_pycocotools"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def require_pycocotools():
    try:
        import pycocotools.coco  # noqa: F401
        import pycocotools.cocoeval  # noqa: F401
    except ImportError:
        raise DatasetError(
            "detection needs pycocotools: pip install 'ghostnet-pytorch[detection]' (or pip install pycocotools)"
        ) from None
    return pycocotools


@dataclass
class CocoSplit:
    """One checked split: its images (with their training targets) and a pycocotools COCO object for evaluation.

    Labels are contiguous, 1..K in the order of the category ids (0 is the detectors' background);
    ``category_ids[label - 1]`` maps a label back to the file's category id.
    """

    images_dir: Path
    annotations: Path
    images: list[dict[str, Any]]  # {"id", "file", "width", "height", "boxes" (n, 4) xyxy, "labels" (n,)}
    category_ids: list[int]
    classes: list[str]
    coco: Any  # pycocotools.coco.COCO over the kept images and annotations
    problems: Counter[str] = field(default_factory=Counter)  # what was skipped or clipped, by reason

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        """Classes including the background, as torchvision's detectors count them."""
        return len(self.classes) + 1

    def report(self) -> str:
        """One line: what was kept and what was dropped or clipped."""
        n_boxes = sum(len(im["labels"]) for im in self.images)
        line = f"{self.annotations.name}: {len(self.images):,} images, {n_boxes:,} boxes, {len(self.classes)} classes"
        if self.problems:
            line += "; " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.problems.items()))
        return line


def find_coco_split(
    data_dir: str | os.PathLike | None, split: str, images: str | None = None, annotations: str | None = None
) -> tuple[Path, Path]:
    """The (images folder, instances JSON) of `split`: explicit paths, or COCO's layout under `data_dir`.

    COCO's layout: ``data_dir/annotations/instances_<split>*.json`` with the images in ``data_dir/<split>*``
    named like the JSON (``instances_val2017.json`` -> ``val2017/``).
    """
    if annotations:
        ann = Path(annotations)
    else:
        if data_dir is None:
            raise DatasetError(f"no {split} annotations: give --data-dir (COCO layout) or --{split}-annotations")
        found = sorted((Path(data_dir) / "annotations").glob(f"instances_{split}*.json"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise DatasetError(
                f"{what} {Path(data_dir) / 'annotations'}/instances_{split}*.json found; give --{split}-annotations explicitly"
            )
        ann = found[0]
    if images:
        img_dir = Path(images)
    else:
        if data_dir is None:
            raise DatasetError(f"no {split} images folder: give --data-dir or --{split}-images")
        img_dir = Path(data_dir) / ann.stem.removeprefix("instances_")
    if not ann.is_file():
        raise DatasetError(f"annotation file {ann} does not exist")
    if not img_dir.is_dir():
        raise DatasetError(f"images folder {img_dir} does not exist")
    return img_dir, ann


def load_coco_split(
    images_dir: str | os.PathLike,
    annotations: str | os.PathLike,
    bad: str = "skip",
    categories: list[int] | None = None,
) -> CocoSplit:
    """Read and check one split.

    Args:
        bad: ``"skip"`` drops bad annotations/images and counts them; ``"error"`` raises `DatasetError`.
        categories: the category ids of the training split, to give evaluation data the same labels
            (annotations of other categories count as unknown).
    """
    require_pycocotools()
    images_dir, annotations = Path(images_dir), Path(annotations)
    raw = _read_instances(annotations)
    cats = _read_categories(raw["categories"], annotations)
    category_ids = sorted(cats) if categories is None else list(categories)
    problems = _Problems()
    kept_images = _check_images(raw["images"], images_dir, problems)
    listed_ids = {im.get("id") for im in raw["images"] if isinstance(im, dict)}
    # an annotation's label is its category's place in `category_ids`, for the categories this file defines
    label_of = {c: i + 1 for i, c in enumerate(category_ids) if c in cats}
    kept_anns: list[dict[str, Any]] = []
    for ann in raw["annotations"]:
        checked = _check_annotation(ann, kept_images, listed_ids, label_of, category_ids, problems)
        if checked is not None:
            kept_anns.append(_add_annotation(ann, *checked, kept_anns))
    problems.raise_if_refused(annotations, bad, any_kept=bool(kept_images))
    return _make_split(images_dir, annotations, kept_images, kept_anns, cats, category_ids, problems.counts)


# fixed, or dropped for a reason already counted against their image: never a reason to refuse a split
_NEVER_REFUSED = ("boxes clipped to their image", "annotations of skipped images")


@dataclass
class _Problems:
    """What a split's checks dropped or clipped, counted by reason, with the first few examples for messages."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, detail: str | None = None) -> None:
        self.counts[reason] += 1
        if detail is not None and len(self.examples) < 5:
            self.examples.append(detail)

    def raise_if_refused(self, annotations: Path, bad: str, any_kept: bool) -> None:
        """Raise `DatasetError` when ``bad="error"`` and something was dropped, or when no image is left."""
        refusable = {r: n for r, n in self.counts.items() if r not in _NEVER_REFUSED}
        if bad == "error" and refusable:
            counts = ", ".join(f"{n} {r}" for r, n in sorted(refusable.items()))
            raise DatasetError(
                f"{annotations}: {counts} (first: {self.examples[0]}); fix the file or use bad_annotations=skip"
            )
        if not any_kept:
            raise DatasetError(
                f"{annotations}: no usable images" + (f" (first problem: {self.examples[0]})" if self.examples else "")
            )


def _read_instances(annotations: Path) -> dict[str, list[Any]]:
    """The instances JSON, refused unless it holds 'images', 'annotations' and 'categories' lists."""
    try:
        raw = json.loads(annotations.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{annotations} is not a readable JSON file: {e}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise DatasetError(
            f"{annotations} is not a COCO instances file (needs 'images', 'annotations' and 'categories' lists)"
        )
    return raw


def _read_categories(entries: list[Any], annotations: Path) -> dict[int, str]:
    """Category id -> name; every entry must have both, and there must be at least one."""
    try:
        cats = {int(c["id"]): str(c["name"]) for c in entries}
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{annotations}: every category needs an integer 'id' and a 'name'") from None
    if not cats:
        raise DatasetError(f"{annotations} defines no categories")
    return cats


def _check_images(entries: list[Any], images_dir: Path, problems: _Problems) -> dict[int, dict[str, Any]]:
    """The usable 'images' entries by id, each with empty "boxes" and "labels" lists for its targets."""
    kept: dict[int, dict[str, Any]] = {}
    for im in entries:
        image = _check_image(im, images_dir, problems)
        if image is not None:
            kept[image["id"]] = image
    return kept


def _check_image(im: Any, images_dir: Path, problems: _Problems) -> dict[str, Any] | None:
    """One 'images' entry as a kept image, or None (counted) when it is malformed or its file is missing or wrong."""
    from PIL import Image, UnidentifiedImageError

    try:
        image_id, file_name, w, h = int(im["id"]), str(im["file_name"]), int(im["width"]), int(im["height"])
    except (KeyError, TypeError, ValueError):
        problems.add("images without id/file_name/width/height", f"image entry {str(im)[:80]}")
        return None
    path = images_dir / file_name
    if not path.is_file():
        problems.add("images with a missing file", f"image {image_id}: {path} does not exist")
        return None
    try:
        with Image.open(path) as f:
            size = f.size
    except (OSError, UnidentifiedImageError):
        problems.add("images that cannot be read", f"image {image_id}: {path} is not a readable image")
        return None
    if size != (w, h):
        problems.add(
            "images whose size differs from the JSON",
            f"image {image_id}: {path} is {size[0]}x{size[1]}, the JSON says {w}x{h}",
        )
        return None
    return {"id": image_id, "file": file_name, "width": w, "height": h, "boxes": [], "labels": []}


def _check_annotation(
    ann: Any,
    images: dict[int, dict[str, Any]],
    listed_ids: set[Any],
    label_of: dict[int, int],
    category_ids: list[int],
    problems: _Problems,
) -> tuple[dict[str, Any], int, tuple[float, float, float, float]] | None:
    """(its image, its label, its box x0 y0 x1 y1 clipped to the image), or None (counted) when it is unusable."""
    try:
        image_id, cat = int(ann["image_id"]), int(ann["category_id"])
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (KeyError, TypeError, ValueError):
        problems.add("annotations without image_id/category_id/bbox [x, y, w, h]", f"annotation {str(ann)[:80]}")
        return None
    if image_id not in images:
        if image_id in listed_ids:
            problems.add("annotations of skipped images")
        else:
            problems.add(
                "annotations with an unknown image id",
                f"annotation {ann.get('id')}: image id {image_id} is not in 'images'",
            )
        return None
    if cat not in label_of:
        problems.add(
            "annotations with an unknown category id",
            f"annotation {ann.get('id')}: category id {cat} is not among {category_ids[:10]}",
        )
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):  # NaN/inf would be "clipped" into a full-image box
        problems.add("annotations with a non-finite box", f"annotation {ann.get('id')}: bbox {ann['bbox']}")
        return None
    if not (w > 0 and h > 0):
        problems.add("annotations with zero area", f"annotation {ann.get('id')}: bbox {ann['bbox']} has no area")
        return None
    im = images[image_id]
    x0, y0, x1, y1 = max(0.0, x), max(0.0, y), min(float(im["width"]), x + w), min(float(im["height"]), y + h)
    if x1 - x0 < 1 or y1 - y0 < 1:
        problems.add(
            "annotations outside their image",
            f"annotation {ann.get('id')}: bbox {ann['bbox']} is outside the {im['width']}x{im['height']} image",
        )
        return None
    if (x0, y0, x1, y1) != (x, y, x + w, y + h):
        problems.add("boxes clipped to their image")
    return im, label_of[cat], (x0, y0, x1, y1)


def _add_annotation(
    ann: dict[str, Any],
    im: dict[str, Any],
    label: int,
    box: tuple[float, float, float, float],
    kept: list[dict[str, Any]],
) -> dict[str, Any]:
    """The annotation as evaluation keeps it (clipped box, defaults filled in); a non-crowd one also becomes a target."""
    x0, y0, x1, y1 = box
    clean = {
        **ann,
        "id": int(ann.get("id", len(kept) + 1)),
        "bbox": [x0, y0, x1 - x0, y1 - y0],
        "area": float(ann.get("area", (x1 - x0) * (y1 - y0))),
        "iscrowd": int(ann.get("iscrowd", 0)),
    }
    if not clean["iscrowd"]:
        im["boxes"].append([x0, y0, x1, y1])
        im["labels"].append(label)
    return clean


def _make_split(
    images_dir: Path,
    annotations: Path,
    kept_images: dict[int, dict[str, Any]],
    kept_anns: list[dict[str, Any]],
    cats: dict[int, str],
    category_ids: list[int],
    problems: Counter[str],
) -> CocoSplit:
    """The split: targets as tensors, and a pycocotools COCO index over exactly what was kept."""
    from pycocotools.coco import COCO

    images = []
    for im in kept_images.values():
        im["boxes"] = torch.tensor(im["boxes"], dtype=torch.float32).reshape(-1, 4)
        im["labels"] = torch.tensor(im["labels"], dtype=torch.int64)
        images.append(im)
    clean = {
        "images": [
            {"id": im["id"], "file_name": im["file"], "width": im["width"], "height": im["height"]} for im in images
        ],
        "annotations": kept_anns,
        "categories": [{"id": c, "name": cats.get(c, str(c))} for c in category_ids],
    }
    coco = COCO()
    coco.dataset = clean
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return CocoSplit(
        images_dir, annotations, images, category_ids, [cats.get(c, str(c)) for c in category_ids], coco, problems
    )


class _Images(torch.utils.data.Dataset):
    """Sample i of a split: (image, target), flipped or not by (seed, epoch, i) so that resumes are exact."""

    def __init__(self, split: CocoSplit, flip: bool, seed: int) -> None:
        self.split, self.flip, self.seed, self.epoch = split, flip, seed, 0

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        im = self.split.images[i]
        x = read_image(self.split.images_dir / im["file"])  # DatasetError if the file changed since it was checked
        boxes = im["boxes"].clone()
        if self.flip and sample_seed(self.seed, self.epoch, i) % 2:
            x = x.flip(-1)
            boxes[:, [0, 2]] = im["width"] - boxes[:, [2, 0]]
        return x, {"boxes": boxes, "labels": im["labels"].clone(), "image_id": im["id"]}


def _collate(batch):
    return [b[0] for b in batch], [b[1] for b in batch]


class DetectionLoader:
    """Batches of (images, targets) lists for torchvision's detectors, sharded per rank like the classification loaders."""

    def __init__(
        self,
        split: CocoSplit,
        batch_size: int,
        *,
        train: bool,
        flip: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 2,
        device: torch.device | str = "cpu",
    ) -> None:
        self.dataset = _Images(split, flip and train, seed)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.device = torch.device(device)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[list[torch.Tensor], list[dict[str, Any]]]]:
        mine = rank_batches(
            len(self.dataset), self.batch_size, self.seed, epoch, self.train, self.rank, self.world_size, start
        )
        self.dataset.epoch = epoch
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=mine,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
        )
        for images, targets in loader:
            images = [x.to(self.device, non_blocking=True) for x in images]
            targets = [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets]
            yield images, targets
