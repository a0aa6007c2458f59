"""A small real-image detection set in COCO format: real object images pasted onto real photographs.

Objects are Fashion-MNIST (or scikit-learn's handwritten digits) images, scaled, tinted and alpha-blended
(the object's own intensity is its alpha) onto random crops of scikit-learn's two bundled photographs.
Each box is the tight box around the pasted object's visible pixels. Training objects come from the source's
training split and validation objects from its test split, so validation objects are unseen instances.

    python scripts/make_detection_set.py data/det --source fashion_mnist --train 800 --val 200
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...data.synth import check_set_settings, clear_output_dir, random_background, sample_backgrounds, scaled_object

__all__ = ["make_detection_set"]


def _iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _compose(
    bg: np.ndarray,
    objects: np.ndarray,
    labels: np.ndarray,
    n_objects: int,
    size_range: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[tuple[list[float], int]]]:
    size = bg.shape[0]
    img = bg.copy()
    placed: list[tuple[list[float], int]] = []
    for _ in range(n_objects):
        for _try in range(30):
            s = int(rng.integers(size_range[0], size_range[1] + 1))
            y, x = int(rng.integers(0, size - s + 1)), int(rng.integers(0, size - s + 1))
            i = int(rng.integers(len(objects)))
            gray = scaled_object(objects[i], s)
            alpha = np.clip(gray * 1.6, 0, 1)
            ys, xs = np.nonzero(alpha > 0.25)
            if len(ys) == 0:
                continue
            box = [float(x + xs.min()), float(y + ys.min()), float(x + xs.max() + 1), float(y + ys.max() + 1)]
            if any(_iou(box, b) > 0.1 for b, _ in placed):
                continue
            color = rng.uniform(0.35, 1.0, size=3) if rng.random() < 0.7 else np.full(3, rng.uniform(0.0, 0.2))
            region = img[y : y + s, x : x + s]
            shade = (0.35 + 0.65 * gray)[..., None] * color  # keeps the object's own texture
            img[y : y + s, x : x + s] = region * (1 - alpha[..., None]) + shade * alpha[..., None]
            placed.append((box, int(labels[i])))
            break
    return img, placed


def make_detection_set(
    out_dir: str | os.PathLike,
    n_train: int = 800,
    n_val: int = 200,
    image_size: int = 320,
    objects_per_image: tuple[int, int] = (1, 4),
    object_size: tuple[int, int] = (40, 112),
    source: str = "fashion_mnist",
    data_dir: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``train/``, ``val/`` (JPEG) and ``annotations/instances_{train,val}.json`` under `out_dir`.

    Args:
        source: the object images: ``fashion_mnist`` (10 clothing classes), ``mnist`` or ``digits``.
        objects_per_image: inclusive range of objects per image.
        object_size: inclusive range of the pasted square's side in pixels.

    Returns:
        ``{"out_dir", "classes", "train": {"images", "boxes"}, "val": {...}}``.
    """
    from ...data.load import load_dataset

    check_set_settings(n_train, n_val, image_size, objects_per_image, object_size)
    out = Path(out_dir)
    clear_output_dir(out, overwrite)
    data = load_dataset(source, data_dir)
    rng = np.random.default_rng(seed)
    photos = sample_backgrounds()
    categories = [{"id": i + 1, "name": name, "supercategory": source} for i, name in enumerate(data.classes)]
    summary: dict[str, Any] = {"out_dir": str(out), "classes": list(data.classes)}
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split, n, objs in (("train", n_train, data.train), ("val", n_val, data.test)):
        objects = objs.images[:, 0].numpy()  # (N, H, W) uint8, the first channel
        images, anns = _write_images(
            out / split, n, photos, objects, objs.labels.numpy(), image_size, objects_per_image, object_size, rng
        )
        coco = {
            "info": {"description": f"{source} objects on scikit-learn's sample photographs, seed {seed}"},
            "images": images,
            "annotations": anns,
            "categories": categories,
        }
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        summary[split] = {"images": n, "boxes": len(anns)}
    return summary


def _write_images(
    folder: Path,
    n: int,
    photos: list[np.ndarray],
    objects: np.ndarray,
    labels: np.ndarray,
    image_size: int,
    objects_per_image: tuple[int, int],
    object_size: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Compose `n` images into a new `folder` (``000000.jpg``, ...): their COCO 'images' and 'annotations' entries."""
    from PIL import Image

    folder.mkdir()
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for k in range(n):
        bg = random_background(photos, image_size, rng)
        n_objects = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        img, placed = _compose(bg, objects, labels, n_objects, object_size, rng)
        name = f"{k:06d}.jpg"
        Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / name, quality=92)
        images.append({"id": k + 1, "file_name": name, "width": image_size, "height": image_size})
        for box, label in placed:
            anns.append(_annotation(len(anns) + 1, k + 1, box, label))
    return images, anns


def _annotation(ann_id: int, image_id: int, box: list[float], label: int) -> dict[str, Any]:
    """A COCO annotation of the object of class `label` (0-based) in `box` (x0, y0, x1, y1)."""
    w, h = box[2] - box[0], box[3] - box[1]
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": label + 1,
        "bbox": [box[0], box[1], w, h],
        "area": w * h,
        "iscrowd": 0,
    }
