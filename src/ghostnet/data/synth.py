"""Real-image pieces for the generated detection and segmentation sets: crops of scikit-learn's two bundled
photographs as backgrounds, object images scaled to size, the sets' settings check and output-folder clearing.
The sets themselves are built in their tasks (`ghostnet.tasks.detect.synth`, `ghostnet.tasks.segment.data.synth`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

__all__ = [
    "check_set_settings",
    "clear_output_dir",
    "random_background",
    "sample_backgrounds",
    "scaled_object",
]


def sample_backgrounds() -> list[np.ndarray]:
    """scikit-learn's two bundled photographs (427 x 640 RGB uint8)."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def random_background(photos: list[np.ndarray], size: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of a random photo at a random scale, maybe mirrored: float (size, size, 3) in [0, 1]."""
    import torch
    import torch.nn.functional as F

    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    crop = int(rng.uniform(0.45, 1.0) * min(h, w))
    y, x = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
    patch = torch.from_numpy(photo[y : y + crop, x : x + crop].astype(np.float32) / 255).permute(2, 0, 1)[None]
    out = (
        F.interpolate(patch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        .permute(1, 2, 0)
        .numpy()
    )
    return out[:, ::-1] if rng.random() < 0.5 else out


def scaled_object(obj: np.ndarray, size: int) -> np.ndarray:
    """A uint8 object image scaled to `size` x `size`, float in [0, 1]."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(obj.astype(np.float32) / 255)[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)[0, 0].numpy()


def check_set_settings(
    n_train: int, n_val: int, image_size: int, objects_per_image: tuple[int, int], object_size: tuple[int, int]
) -> None:
    if n_train < 1 or n_val < 1:
        raise ValueError(f"need at least one training and one validation image, got {n_train} and {n_val}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32, got {image_size}")
    if not (1 <= objects_per_image[0] <= objects_per_image[1]):
        raise ValueError(f"objects_per_image must be an increasing range starting at >= 1, got {objects_per_image}")
    if not (8 <= object_size[0] <= object_size[1] <= image_size):
        raise ValueError(f"object_size must be an increasing range in 8..image_size ({image_size}), got {object_size}")


def clear_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty `out` unless `overwrite`, in which case it is removed."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out} exists and is not empty; pass overwrite=True (--overwrite) or choose another folder"
            )
        shutil.rmtree(out)
