"""Detection on image files: the boxes, labels and scores of a trained detector, drawn onto the images
(`ghostnet detect predict`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...data.images import output_targets, read_image, save_png

__all__ = ["detect_images", "draw_detections"]


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
