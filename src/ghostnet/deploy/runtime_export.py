"""Export to an edge runtime (OpenVINO, ExecuTorch, LiteRT, ncnn), checked in that runtime's own interpreter.

report = export_to_runtime(fuse_bn(model.eval()), "m.pte", "executorch", (224, 224))
report = export_to_runtime(model, "m.xml", "openvino", (224, 224), calibration=images)   # int8

The file is written into a temporary folder beside its destination, run by the runtime on real photographs (or
the images given) and compared with PyTorch: largest absolute difference and top-1 agreement (per pixel for a
segmenter). A float32 export must match PyTorch to `tolerance` (or be within float32 rounding of the float64
answer, `float32_noise`); an int8 one is reported as measured. Only then
are its files moved into place, so a failed or interrupted export leaves nothing where the file is expected.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import IMAGENET_MEAN, IMAGENET_STD
from .export import check_parity, export_write_failure, max_abs_diff
from .runtimes import RUNTIMES, convert_quietly, require

__all__ = [
    "RuntimeExportReport",
    "export_to_runtime",
    "sample_photos",
    "check_runtime_output",
    "single_images",
    "compare_with_torch",
    "float32_noise",
]


@dataclass
class RuntimeExportReport:
    """What `export_to_runtime` wrote and what the runtime's own interpreter gave on the check images."""

    path: str
    runtime: str
    precision: str  # "fp32" or "int8"
    files: list[str]
    size_bytes: int
    input_shape: list[int]
    max_abs_diff: float
    top1_agreement: float  # fraction of check images (pixels, for a segmenter) whose argmax matches PyTorch's
    images: int
    calibration_images: int = 0
    notes: list[str] = field(default_factory=list)


def check_runtime_output(path: str | os.PathLike, runtime: str, force: bool = False) -> Path:
    """`path` as a Path if it can take `runtime`'s file: the runtime's suffix, an existing folder, and no file
    there unless `force`. Checked before any work."""
    path, suffix = Path(path), RUNTIMES[runtime].suffix
    if not path.name.endswith(suffix) or path.name == suffix:
        raise ValueError(f"{runtime} exports are {suffix} files; got {path.name}")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist")
    if path.exists() and not force:
        raise ValueError(f"{path} exists; pass --force to replace it, or choose another --output")
    return path


def sample_photos(
    n: int, size: tuple[int, int], in_chans: int = 3, seed: int = 0, mean=IMAGENET_MEAN, std=IMAGENET_STD
) -> torch.Tensor:
    """`n` random crops of scikit-learn's two bundled photographs at (H, W), normalised: (n, C, H, W)
    (grayscale when `in_chans` is 1). Real images for parity checks and calibration where no dataset is given."""
    import torch.nn.functional as F

    from ..data.synth import random_background, sample_backgrounds

    photos, rng = sample_backgrounds(), np.random.default_rng(seed)
    side = max(size)
    crops = torch.stack([torch.from_numpy(random_background(photos, side, rng).copy()) for _ in range(n)])
    x = F.interpolate(crops.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False)
    if in_chans == 1:
        x = x.mean(dim=1, keepdim=True)
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    return ((x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)).contiguous()


def single_images(batches: Iterable[torch.Tensor], limit: int | None = None) -> list[torch.Tensor]:
    """The images of `batches` (NCHW tensors) one by one, as (1, C, H, W) tensors, at most `limit` of them."""
    out: list[torch.Tensor] = []
    for b in batches:
        out += [img[None] for img in b]
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def export_to_runtime(
    model: nn.Module,
    path: str | os.PathLike,
    runtime: str,
    input_size: tuple[int, int] = (224, 224),
    in_chans: int = 3,
    *,
    images: torch.Tensor | None = None,
    calibration: list[torch.Tensor] | None = None,
    force: bool = False,
    tolerance: float = 1e-4,
) -> RuntimeExportReport:
    """Write `model` (eval mode, in the form to deploy) for `runtime` at `path`, taking batch 1 at `input_size`.

    Args:
        runtime: a name in `RUNTIMES` (``openvino``, ``executorch``, ``tflite``, ``ncnn``); its extra must be
            installed.
        images: real, normalised (N, C, H, W) images for the parity check; default 8 crops of two photographs.
        calibration: (1, C, H, W) images to calibrate an int8 export on; without them the export is float32.
            Refused for a runtime without int8 (``RUNTIMES[runtime].int8``).
        force: replace an existing file at `path`.
        tolerance: largest float32 difference from PyTorch (relative where outputs exceed 1).

    Raises:
        ValueError: unknown or missing runtime, wrong suffix, existing file, empty calibration, a model the
            converter refuses, or a float32 file that disagrees with PyTorch.
    """
    backend = require(runtime)
    path = check_runtime_output(path, runtime, force)
    if calibration is not None and not RUNTIMES[runtime].int8:
        raise ValueError(f"{runtime} exports are float32 only: {RUNTIMES[runtime].no_int8}")
    if calibration is not None and not calibration:
        raise ValueError("an int8 export needs calibration images; none were given")
    images = sample_photos(8, input_size, in_chans) if images is None else images
    if tuple(images.shape[1:]) != (in_chans, *input_size):
        raise ValueError(f"check images are {tuple(images.shape[1:])}, the export takes {(in_chans, *input_size)}")
    model = model.eval()
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        try:
            staged = Path(tmp) / path.name
            diff, agreement = _convert_and_compare(backend, model, staged, images, calibration, tolerance)
            notes = backend.notes(staged)
            placed = move_into_place(backend.files(staged), path.parent, force)
        except BaseException as e:
            failure = export_write_failure(e, path, model)
            if failure is None:
                raise
            raise failure from None
    kind = "int8" if calibration is not None else "fp32"
    size = sum(p.stat().st_size for p in placed)
    return RuntimeExportReport(
        str(path), runtime, kind, [str(p) for p in placed], size, [1, in_chans, *input_size], diff, agreement,
        len(images), len(calibration or []), notes,
    )  # fmt: skip


def _convert_and_compare(
    backend: ModuleType,
    model: nn.Module,
    staged: Path,
    images: torch.Tensor,
    calibration: list[torch.Tensor] | None,
    tolerance: float,
) -> tuple[float, float]:
    """Convert `model` to `staged` and compare the runtime's outputs with PyTorch's on `images`: (max abs diff,
    top-1 agreement)."""
    convert_quietly(backend, model, images[:1], staged, calibration)
    return compare_with_torch(model, backend.load(staged, None), images, calibration is None, tolerance)


@torch.no_grad()
def compare_with_torch(
    model: nn.Module, run: Callable[[np.ndarray], list[np.ndarray]], images: torch.Tensor, fp32: bool, tolerance: float
) -> tuple[float, float]:
    """(max abs diff, top-1 agreement) of the runtime's outputs against PyTorch's on `images`, one at a time.
    Any export must give finite outputs of PyTorch's shapes; a float32 one must match within `tolerance`, or be
    within float32 rounding of the model's float64 outputs (`float32_noise`)."""
    refs: list[torch.Tensor] = []
    diff, agree, worst = 0.0, [], None
    for img in images:
        ref_list, outs = _outputs(model(img[None])), _outputs(run(img[None].numpy()))
        if [o.shape for o in outs] != [r.shape for r in ref_list]:
            shapes = lambda ts: ", ".join("x".join(map(str, t.shape)) for t in ts)  # noqa: E731
            raise ValueError(f"the runtime gives outputs of shape {shapes(outs)}; PyTorch gives {shapes(ref_list)}")
        if not all(bool(torch.isfinite(o).all()) for o in outs):
            raise ValueError("the runtime gives non-finite outputs (inf or nan)")
        if (d := max_abs_diff(ref_list, outs)) > diff:
            diff, worst = d, (img, outs)
        refs += ref_list
        if ref_list[0].ndim >= 2:
            agree.append((ref_list[0].argmax(1) == outs[0].argmax(1)).float().mean())
    if fp32 and worst is not None and not float32_noise(model, *worst, tolerance):
        check_parity(diff, tolerance, refs)
    return diff, float(torch.stack(agree).mean()) if agree else float("nan")


def _outputs(y: Any) -> list[torch.Tensor]:
    """A model's or a runtime's outputs (one or several, tensors or arrays) as a list of float32 tensors."""
    return [torch.as_tensor(np.asarray(t, dtype=np.float32)) for t in (y if isinstance(y, (list, tuple)) else [y])]


@torch.no_grad()
def float32_noise(model: nn.Module, image: torch.Tensor, outs: list[torch.Tensor], tolerance: float) -> bool:
    """Whether a runtime's float32 outputs `outs` for `image` are within float32 rounding of the exact answer:
    no further from `model`'s float64 outputs than 4x PyTorch's own float32 outputs are, plus `tolerance`.

    Deep nets with random weights (large logits, long chains of layers) can differ between two correct float32
    implementations by more than a fixed tolerance; measured against float64, PyTorch is then as far off. Two
    correct implementations sum in different orders, so their errors differ by a small factor (XNNPACK's was
    2.3x PyTorch's on a random GhostNetV3 1.3x whose logits reach 115); a wrong op is off by the output's size."""
    exact = _outputs(copy.deepcopy(model).double()(image[None].double()))
    own = max_abs_diff(exact, _outputs(model(image[None])))
    return max_abs_diff(exact, outs) <= 4 * own + tolerance * max(1.0, max(float(t.abs().max()) for t in exact))


def move_into_place(files: list[Path], folder: Path, force: bool) -> list[Path]:
    """Move an export's staged files into `folder` (refusing, before moving any, a file there unless `force`),
    the first one last: it is the file users open, so it never appears without the rest."""
    targets = [folder / f.name for f in files]
    if not force and (taken := [t for t in targets if t.exists()]):
        raise ValueError(f"{taken[0]} exists; pass --force to replace it, or choose another --output")
    for f, t in reversed(list(zip(files, targets))):
        os.replace(f, t)
    return targets
