"""Running trained models on image files: top-k classes, and detections drawn as labelled boxes.

model, prep, _ = load_model("runs/RUN/best.pth")
predict_images(model, prep, ["photo.jpg", "folder/"], topk=3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.coco import read_image
from ..data.images import Preprocess, collect_images, open_image

__all__ = ["predict_images", "detect_images", "draw_detections", "output_targets", "save_png"]


@torch.no_grad()
def predict_images(
    model: nn.Module, prep: Preprocess, paths: list[str], topk: int = 5, batch_size: int = 32
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for image files (or every image under folders).

    Returns:
        One ``{"path", "top": [(class name, probability), ...]}`` per image, in input order.
    """
    files = collect_images(paths)
    tf = prep.transform()
    device = next(model.parameters()).device
    results = []
    for i in range(0, len(files), batch_size):
        chunk = files[i : i + batch_size]
        tensors = [tf(open_image(f, prep.image_mode)) for f in chunk]  # DatasetError naming an unreadable one
        probs = model(torch.stack(tensors).to(device)).softmax(dim=1)
        k = min(topk, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        for f, vs, ix in zip(chunk, values.tolist(), indices.tolist()):
            names = [prep.classes[j] if j < len(prep.classes) else str(j) for j in ix]
            results.append({"path": str(f), "top": list(zip(names, vs))})
    return results


_PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#800000",
    "#aaffc3",
    "#808000",
    "#000075",
]


def draw_detections(image: torch.Tensor, det: dict[str, torch.Tensor], classes: list[str]) -> torch.Tensor:
    """`image` (float (3, H, W) in [0, 1]) with its boxes drawn and labelled ``class score``: uint8 (3, H, W)."""
    from torchvision.utils import draw_bounding_boxes

    img = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    if len(det["boxes"]) == 0:
        return img
    labels = det["labels"].tolist()
    text = [
        f"{classes[i - 1] if 1 <= i <= len(classes) else i} {s:.2f}" for i, s in zip(labels, det["scores"].tolist())
    ]
    colors = [_PALETTE[i % len(_PALETTE)] for i in labels]
    width = max(2, round(min(img.shape[1:]) / 200))
    return draw_bounding_boxes(img, det["boxes"].float(), text, colors=colors, width=width)


@torch.no_grad()
def detect_images(
    model: nn.Module,
    classes: list[str],
    paths: list[Path],
    output_dir: str | os.PathLike | None,
    score_threshold: float = 0.5,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run `model` on image files; with `output_dir`, write each image with its labelled boxes drawn (PNG).

    Refuses to replace an existing output file unless `overwrite`, and never writes over an input.
    """
    device = next(model.parameters()).device
    out_dir = Path(output_dir) if output_dir is not None else None
    targets = output_targets(paths, out_dir, overwrite) if out_dir is not None else {}
    results = []
    for p in paths:
        x = read_image(p)  # DatasetError naming the file if it is unreadable
        det = model([x.to(device)])[0]
        keep = det["scores"] >= score_threshold
        det = {k: v[keep].cpu() for k, v in det.items()}
        boxes = [
            {
                "label": classes[i - 1] if 1 <= i <= len(classes) else str(i),
                "score": round(s, 4),
                "box_xyxy": [round(v, 1) for v in b],
            }
            for b, s, i in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist())
        ]
        row: dict[str, Any] = {"path": str(p), "detections": boxes}
        if out_dir is not None:
            save_png(draw_detections(x, det, classes).permute(1, 2, 0).numpy(), targets[p])
            row["output"] = str(targets[p])
        results.append(row)
    return results


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
