"""scikit-learn's bundled handwritten digits, read from its data file without importing scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .datasets import DatasetError, ImageData

__all__ = ["load_digits"]


def load_digits(image_size: int = 32, test_fraction: float = 0.2) -> tuple[ImageData, ImageData, str]:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 scans, UCI), upscaled; a fixed stratified split.

    Needs no download, so the project's demo runs anywhere.
    """
    pixels, target = _read_sklearn_digits()
    images = torch.from_numpy(pixels.reshape(-1, 1, 8, 8) / 16.0)  # (N, 1, 8, 8) in [0, 1]
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.from_numpy(target)
    # Stratified split with a fixed generator: every 5th sample of each class (in file order) is test.
    test_mask = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        test_mask[idx[:: int(round(1 / test_fraction))]] = True
    train = ImageData(images[~test_mask], labels[~test_mask])
    test = ImageData(images[test_mask], labels[test_mask])
    return train, test, "scikit-learn bundled digits (UCI optdigits test set)"


def _read_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as float32 pixels (N, 64) in 0..16 and int64 labels, read from scikit-learn's data file.

    Reading the bundled CSV directly skips importing scikit-learn itself (seconds on a small machine).
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read scikit-learn's digits file {path}: {e}") from None
    if table.ndim != 2 or table.shape[1] != 65:
        raise DatasetError(f"{path}: expected 65 columns (64 pixels + label), found {table.shape}")
    return np.ascontiguousarray(table[:, :64]), table[:, 64].astype(np.int64)
