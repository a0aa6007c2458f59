"""Semantic-segmentation metrics from one confusion matrix, the standard way (VOC / Cityscapes).

Pixels labelled 255 are left out. IoU of class c = TP / (TP + FP + FN); mIoU is their mean over the classes that
occur in the ground truth or the predictions (a class absent from both has no IoU and is not averaged);
pixel accuracy = the diagonal over all counted pixels; mean accuracy = the mean per-class recall.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["confusion_matrix", "segmentation_metrics"]


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted, over pixels not ignored.

    Args:
        pred: predicted class indices, any shape.
        target: true class indices, the same shape; `ignore_index` marks pixels left out.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    keep = target != ignore_index
    t, p = target[keep].long(), pred[keep].long()
    if t.numel() and int(t.max()) >= num_classes:
        raise ValueError(f"target holds class {int(t.max())}, but there are {num_classes} classes")
    return torch.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes).cpu()


def segmentation_metrics(cm: torch.Tensor, classes: list[str]) -> dict[str, Any]:
    """mIoU, pixel accuracy, mean accuracy (all in %), per-class IoU (None where a class has no pixel in either the
    truth or the predictions) and the matrix itself as nested lists."""
    cm = cm.double()
    tp = cm.diag()
    gt, predicted = cm.sum(1), cm.sum(0)
    union = gt + predicted - tp
    iou = [float(100 * tp[c] / union[c]) if union[c] > 0 else None for c in range(len(classes))]
    present = [v for v in iou if v is not None]
    recall = [float(100 * tp[c] / gt[c]) for c in range(len(classes)) if gt[c] > 0]
    total = float(cm.sum())
    return {
        "miou": sum(present) / len(present) if present else math.nan,
        "pixel_acc": 100 * float(tp.sum()) / total if total else math.nan,
        "mean_acc": sum(recall) / len(recall) if recall else math.nan,
        "per_class_iou": dict(zip(classes, iou)),
        "confusion": cm.long().tolist(),
        "pixels": int(total),
    }
