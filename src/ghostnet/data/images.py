"""Image files for inference: finding them, and the preprocessing a trained model expects."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets import IMAGENET_MEAN, IMAGENET_STD, DatasetError

__all__ = ["IMAGE_SUFFIXES", "ConvertMode", "Preprocess", "collect_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


class ConvertMode:
    """PIL image -> the same image in `mode` ("RGB", "L"); a class, not a lambda, so DataLoader workers can pickle it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        return image.convert(self.mode)

    def __repr__(self) -> str:
        return f"ConvertMode({self.mode!r})"


@dataclass
class Preprocess:
    """How the model's inputs were made: resolution, channels, normalisation, class names."""

    image_size: int = 224
    in_chans: int = 3  # the model's input channels
    data_chans: int = 3  # the images' own channels (1 = grayscale, replicated when in_chans is 3)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    classes: tuple[str, ...] = ()
    center_crop: bool = True  # ImageNet-style: resize the short side to size*256/224, then centre crop

    def transform(self) -> Any:
        """The torchvision transform from a PIL image to the model's normalised (C, H, W) input."""
        from torchvision import transforms as T

        ops: list[Any] = [ConvertMode("L" if self.data_chans == 1 else "RGB")]
        if self.center_crop:
            ops += [T.Resize(int(round(self.image_size * 256 / 224))), T.CenterCrop(self.image_size)]
        else:
            ops.append(T.Resize((self.image_size, self.image_size)))
        mean, std = list(self.mean), list(self.std)
        if self.data_chans == 1 and self.in_chans == 3:
            ops.append(ConvertMode("RGB"))
            mean, std = mean * (3 // len(mean)), std * (3 // len(std))
        ops += [T.ToTensor(), T.Normalize(mean, std)]
        return T.Compose(ops)


def collect_images(paths: list[str]) -> list[Path]:
    """The image files named in `paths`, folders expanded (recursively, sorted); `DatasetError` if one is missing."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {p}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise DatasetError(f"image not found: {p}")
    return files
