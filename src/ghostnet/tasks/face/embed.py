"""Using a trained embedding model on image files: embeddings of a folder (`ghostnet face embed`) and 1:1
verification of two images (`ghostnet face verify`), preprocessed as the model was trained."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.images import Preprocess, open_image
from ...models.files import write_atomically
from .loaders import flip_sum_embeddings

__all__ = ["check_embeddings_path", "embed_files", "save_embeddings", "verify_images"]


@torch.no_grad()
def embed_files(
    model: nn.Module, prep: Preprocess, files: list[Path], batch_size: int = 64, flip: bool = True
) -> torch.Tensor:
    """L2-normalised embeddings (N, E) of image files: each image's plus its mirror image's, normalised."""
    transform = prep.transform()
    device = next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(files), batch_size):
        x = torch.stack([transform(open_image(f, prep.image_mode)) for f in files[i : i + batch_size]]).to(device)
        out.append(flip_sum_embeddings(model, x, flip).cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def check_embeddings_path(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """`path` as a Path if embeddings may be written there (before any are computed).

    Raises:
        ValueError: it does not end in ``.npz``, or it exists and not `overwrite`.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"the embeddings file must end in .npz, got {path}")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --overwrite to replace it")
    return path


def save_embeddings(
    path: str | os.PathLike, files: list[Path], embeddings: torch.Tensor, overwrite: bool = False
) -> Path:
    """Write ``{"paths", "embeddings"}`` as a NumPy ``.npz`` (atomically); refuses to replace a file unless `overwrite`."""
    path = check_embeddings_path(path, overwrite)
    buf = io.BytesIO()
    np.savez(buf, paths=np.array([str(f) for f in files]), embeddings=embeddings.numpy().astype(np.float32))
    data = buf.getvalue()
    return write_atomically(path, lambda f: f.write(data), lambda: len(data))


def verify_images(model: nn.Module, prep: Preprocess, a: Path, b: Path, threshold: float | None) -> dict[str, Any]:
    """Whether two images show one identity: their embeddings' cosine against `threshold`.

    Raises:
        ValueError: no threshold (the checkpoint carries none and none was given).
    """
    if threshold is None or not math.isfinite(threshold):
        raise ValueError("no calibrated threshold in the checkpoint; give one with --threshold (see face-eval)")
    e = embed_files(model, prep, [a, b])
    similarity = float((e[0] * e[1]).sum())
    return {"a": str(a), "b": str(b), "similarity": similarity, "threshold": threshold, "same": similarity > threshold}
