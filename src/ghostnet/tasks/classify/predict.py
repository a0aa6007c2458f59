"""Running trained models on image files: top-k classes, and detections drawn as labelled boxes.

model, prep, _ = load_model("runs/RUN/best.pth")
predict_images(model, prep, ["photo.jpg", "folder/"], topk=3)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...data.images import Preprocess, collect_images, open_image

__all__ = ["predict_images"]


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
