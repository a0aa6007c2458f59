"""A small real-image segmentation set in the folder format, built as the detection set is (`tasks.detect.synth`).

Fashion-MNIST (or digits) objects are scaled, tinted and alpha-blended (their own intensity is the alpha) onto
random crops of scikit-learn's two bundled photographs. Each object's pixels (alpha > 0.5) take its class
(1..10; 0 is the background); the soft rim (alpha 0.15-0.5) is marked 255 and ignored, as VOC marks object
boundaries. Training objects come from the source's training split, validation objects from its test split.

    python -c "from ghostnet.tasks.segment.data import make_segmentation_set; make_segmentation_set('data/seg')"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ....data.synth import check_set_settings, clear_output_dir, random_background, sample_backgrounds, scaled_object
from .formats import IGNORE_INDEX, voc_palette

__all__ = ["make_segmentation_set"]


def _paste(img: np.ndarray, mask: np.ndarray, obj: np.ndarray, label: int, size: int, rng: np.random.Generator) -> bool:
    """Blend one object of class `label` (1-based) into `img` and `mask` at a random free place; False if none."""
    side = img.shape[0]
    for _try in range(20):
        y, x = int(rng.integers(0, side - size + 1)), int(rng.integers(0, side - size + 1))
        window = mask[y : y + size, x : x + size]
        if (window != 0).mean() > 0.1:  # mostly over other objects: try elsewhere
            continue
        gray = scaled_object(obj, size)
        alpha = np.clip(gray * 1.6, 0, 1)
        color = rng.uniform(0.35, 1.0, size=3) if rng.random() < 0.7 else np.full(3, rng.uniform(0.0, 0.2))
        region = img[y : y + size, x : x + size]
        shade = (0.35 + 0.65 * gray)[..., None] * color  # keeps the object's own texture
        img[y : y + size, x : x + size] = region * (1 - alpha[..., None]) + shade * alpha[..., None]
        window[(alpha > 0.15) & (alpha <= 0.5)] = IGNORE_INDEX
        window[alpha > 0.5] = label
        return True
    return False


def make_segmentation_set(
    out_dir: str | os.PathLike,
    n_train: int = 600,
    n_val: int = 150,
    image_size: int = 160,
    objects_per_image: tuple[int, int] = (1, 3),
    object_size: tuple[int, int] = (40, 96),
    source: str = "fashion_mnist",
    data_dir: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``classes.txt`` and ``{train,val}/images/*.jpg`` + ``{train,val}/masks/*.png`` (palette PNGs) under
    `out_dir`; returns ``{"out_dir", "classes", "train": {"images", "object_pixels"}, "val": {...}}``.

    Args: as `ghostnet.tasks.detect.synth.make_detection_set`.
    """
    from ....data.load import load_dataset

    check_set_settings(n_train, n_val, image_size, objects_per_image, object_size)
    out = Path(out_dir)
    clear_output_dir(out, overwrite)
    data = load_dataset(source, data_dir)
    rng = np.random.default_rng(seed)
    photos = sample_backgrounds()
    classes = ["background", *data.classes]
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(classes) + "\n")
    summary: dict[str, Any] = {"out_dir": str(out), "classes": classes}
    for split, n, objs in (("train", n_train, data.train), ("val", n_val, data.test)):
        objects, labels = objs.images[:, 0].numpy(), objs.labels.numpy()  # (N, H, W) uint8, the first channel
        counts = np.zeros(len(classes), dtype=np.int64)
        for sub in ("images", "masks"):
            (out / split / sub).mkdir(parents=True)
        for k in range(n):
            img, mask = _compose(photos, objects, labels, image_size, objects_per_image, object_size, rng)
            _write_pair(out / split, f"{k:06d}", img, mask)
            counts += np.bincount(mask[mask != IGNORE_INDEX], minlength=len(classes))
        summary[split] = {"images": n, "class_pixels": dict(zip(classes, counts.tolist()))}
    return summary


def _compose(
    photos: list[np.ndarray],
    objects: np.ndarray,
    labels: np.ndarray,
    image_size: int,
    objects_per_image: tuple[int, int],
    object_size: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One image (H, W, 3) float in [0, 1] and its mask (H, W) uint8."""
    img = random_background(photos, image_size, rng).copy()
    mask = np.zeros((image_size, image_size), dtype=np.uint8)
    for _ in range(int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))):
        i = int(rng.integers(len(objects)))
        size = int(rng.integers(object_size[0], object_size[1] + 1))
        _paste(img, mask, objects[i], int(labels[i]) + 1, size, rng)
    return img, mask


def _write_pair(folder: Path, stem: str, img: np.ndarray, mask: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray((img * 255).round().astype(np.uint8)).save(folder / "images" / f"{stem}.jpg", quality=92)
    m = Image.fromarray(mask, mode="P")
    m.putpalette(voc_palette())
    m.save(folder / "masks" / f"{stem}.png")
