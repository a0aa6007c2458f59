"""Image files: reading any of them faithfully, finding them, and the preprocessing a trained model expects.

Every reader of image files (prediction, image-folder training and evaluation, detection) goes through
`open_image` / `convert_image`, so that a 16-bit, palette, alpha or CMYK file is scaled, not clipped:

- 16-bit grayscale (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, and ``I`` holding 0..65535) maps its full range
  to 0..255 (``round(v / 257)``); 32-bit float ``F`` is taken as 0..1; values outside those ranges are refused.
- palette images become RGB (RGBA first when they have a transparent colour);
- images with alpha (``LA``, ``RGBA``, ``PA``, premultiplied ``La``/``RGBa``) are composited over white;
- CMYK becomes RGB as ``(255 - c) * (255 - k) / 255``.

A mode that cannot be converted faithfully (e.g. ``LAB``) is refused with `ImageReadError` naming the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .datasets import IMAGENET_MEAN, IMAGENET_STD, DatasetError

__all__ = [
    "IMAGE_SUFFIXES",
    "ConvertMode",
    "ImageReadError",
    "Preprocess",
    "check_image_file",
    "collect_images",
    "convert_image",
    "open_image",
    "output_targets",
    "read_image",
    "save_png",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_WITH_ALPHA = ("LA", "La", "RGBA", "RGBa", "PA")
_AS_IS = ("1", "L", "RGB", "RGBX", "YCbCr", "HSV")  # PIL converts these to RGB / L exactly
# the first bytes of the formats PIL reads that image folders hold (JPEG, PNG, GIF, BMP, TIFF, WebP, JPEG 2000, Netpbm)
_SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"\xffO\xffQ",
    *(b"P%d" % i for i in range(1, 8)),
)


class ImageReadError(DatasetError):
    """An image file that cannot be read, or whose pixels cannot be converted faithfully; the message names it."""


def convert_image(image: Any, mode: str, name: Any = None) -> Any:
    """A new PIL image in `mode` ("RGB" or "L") with the pixels of `image`, scaled rather than clipped.

    `name` (default: the image's file name) is what an `ImageReadError` calls the image.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"convert_image makes RGB or L images, not {mode!r}")
    name = name if name is not None else (getattr(image, "filename", "") or "image")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _SIXTEEN_BIT or image.mode == "F":
        image = _to_8bit(image, name)
    elif image.mode in _WITH_ALPHA:
        image = _over_white(image)
    elif image.mode == "CMYK":
        image = _cmyk_to_rgb(image)
    elif image.mode not in _AS_IS:
        raise ImageReadError(f"{name}: cannot convert an image of mode {image.mode} to {mode} faithfully")
    return image.convert(mode)  # a copy even when the mode is already right


def _to_8bit(image: Any, name: Any) -> Any:
    """A 16-bit (0..65535) or float (0..1) grayscale image as 8-bit "L", by its full range."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    top = 1.0 if image.mode == "F" else 65535
    if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= top):
        raise ImageReadError(
            f"{name}: cannot convert an image of mode {image.mode} faithfully: its values span {np.nanmin(arr)}..{np.nanmax(arr)}, "
            f"outside 0..{top}"
        )
    scaled = np.rint(arr.astype(np.float64) * (255 / top))
    return Image.fromarray(scaled.astype(np.uint8), "L")


def _over_white(image: Any) -> Any:
    """An image with an alpha channel composited over a white background, as RGB."""
    from PIL import Image

    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _cmyk_to_rgb(image: Any) -> Any:
    """CMYK as RGB: each channel ``(255 - c) * (255 - k) / 255``, rounded."""
    import numpy as np
    from PIL import Image

    cmyk = np.asarray(image).astype(np.float64)
    rgb = (255 - cmyk[..., :3]) * (255 - cmyk[..., 3:]) / 255
    return Image.fromarray(np.rint(rgb).astype(np.uint8), "RGB")


def open_image(path: str | os.PathLike, mode: str = "RGB") -> Any:
    """The image file at `path` as a PIL image in `mode` ("RGB" or "L"), converted as `convert_image` does.

    Raises:
        ImageReadError: the file is missing, not an image, truncated or corrupt, or in a mode we cannot convert.
    """
    from PIL import Image

    if mode not in ("RGB", "L"):
        raise ValueError(f"open_image reads images as RGB or L, not {mode!r}")
    try:
        with Image.open(path) as im:
            return convert_image(im, mode, path)
    except ImageReadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{path} is not a readable image: {e}") from None


def check_image_file(path: str | os.PathLike) -> str | None:
    """Why `path` is certainly not an image (empty, or not starting like any image format we read); None if it may be.

    Cheap: reads the first bytes only, so a whole ImageNet can be checked before training; a file that starts
    right but is truncated or corrupt is only found when it is decoded.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if not head:
        return "is an empty file"
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return None
    return f"is not an image file (it starts with {head[:8]!r})"


class ConvertMode:
    """PIL image -> the same image in `mode` ("RGB", "L") by `convert_image`; a class, not a lambda, so DataLoader
    workers can pickle it."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        return convert_image(image, self.mode)

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

    @property
    def image_mode(self) -> str:
        """The PIL mode images are read in: "L" for grayscale data, else "RGB"."""
        return "L" if self.data_chans == 1 else "RGB"

    def transform(self) -> Any:
        """The torchvision transform from a PIL image to the model's normalised (C, H, W) input."""
        from torchvision import transforms as T

        ops: list[Any] = [ConvertMode(self.image_mode)]
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


def read_image(path: str | os.PathLike) -> Any:
    """An image file as float RGB (3, H, W) in [0, 1], read by `images.open_image` (16-bit, palette, alpha and
    CMYK scaled, not clipped); `images.ImageReadError` (a `DatasetError`) naming the file if it cannot be read."""
    import numpy as np
    import torch

    arr = np.asarray(open_image(path, "RGB"), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255)


def output_targets(paths: list[Path], out_dir: Path, overwrite: bool) -> dict[Path, Path]:
    """``OUT_DIR/STEM.png`` for each input; refuses two inputs sharing a target, a target that is one of the
    inputs (even with `overwrite`), and an existing target unless `overwrite`. Creates `out_dir`."""
    inputs = {q.resolve() for q in paths}
    targets: dict[Path, Path] = {}
    for p in paths:
        dest = out_dir / f"{p.stem}.png"
        if dest in targets.values():
            raise ValueError(f"two inputs would both be written to {dest}; run them separately")
        if dest.resolve() in inputs:
            raise ValueError(f"{dest} is one of the input images; choose another --output-dir")
        if dest.exists() and not overwrite:
            raise ValueError(f"{dest} exists; pass --overwrite to replace it or choose another --output-dir")
        targets[p] = dest
    out_dir.mkdir(parents=True, exist_ok=True)
    return targets


def save_png(rgb: Any, dest: Path) -> None:
    """Write an (H, W, 3) uint8 array as PNG through a temporary file, so `dest` is never left half-written."""
    from PIL import Image

    tmp = dest.with_name(f".{dest.name}.tmp.png")
    try:
        Image.fromarray(rgb).save(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
