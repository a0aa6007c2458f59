"""Exporting a trained detector: its backbone + FPN (any export format), or the whole detector (ONNX).

The whole detector takes one image (3, H, W) of any size, float in [0, 1], and returns ``boxes`` (n, 4, xyxy
in input pixels), ``scores`` (n,) and ``labels`` (n,): torchvision's resizing, normalisation, anchors and
NMS are inside the graph (torchvision supports this through ONNX opset >= 11).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from ...deploy.export import (
    ExportReport,
    check_output_path,
    export_model,
    onnx_opset,
    onnx_session,
    written_whole,
)

__all__ = ["BackboneMaps", "DetectorForExport", "export_detector", "match_detections"]

PARTS = ("backbone", "detector")
DETECTOR_OUTPUTS = ("boxes", "scores", "labels")


class BackboneMaps(nn.Module):
    """GhostNet + FPN returning its pyramid as a tuple of maps (finest first), for export."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(x).values())


class DetectorForExport(nn.Module):
    """A torchvision detector on one image: (boxes, scores, labels)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector([image])[0]
        return out["boxes"], out["scores"], out["labels"]


def match_detections(ref: tuple, got: list) -> float:
    """The largest difference between two detection lists, pairing each reference box with the closest box of
    the same label (ties in score may come out in another order); inf when the counts differ.

    Detections within 1e-4 of the lowest score kept by either list are left out: whether a candidate at the
    score threshold (or at the detections-per-image cap) survives may flip with rounding.
    """
    boxes, scores, labels = (torch.as_tensor(t).float() for t in ref)
    g_boxes, g_scores, g_labels = (torch.as_tensor(t).float() for t in got)
    if len(scores) and len(g_scores):
        floor = max(float(scores.min()), float(g_scores.min())) + 1e-4
        keep, g_keep = scores > floor, g_scores > floor
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        g_boxes, g_scores, g_labels = g_boxes[g_keep], g_scores[g_keep], g_labels[g_keep]
    if len(boxes) != len(g_boxes):
        return float("inf")
    if len(boxes) == 0:
        return 0.0
    worst = float((scores.sort().values - g_scores.sort().values).abs().max())
    for b, lab in zip(boxes, labels):
        same = g_labels == lab
        if not same.any():
            return float("inf")
        worst = max(worst, float((g_boxes[same] - b).abs().max(dim=1).values.min()))
    return worst


def export_detector(
    detector: nn.Module,
    path: str | os.PathLike,
    part: str = "backbone",
    fmt: str = "onnx",
    input_size: tuple[int, int] = (512, 512),
    dynamic_batch: bool = False,
    opset: int = 18,
    check_image: torch.Tensor | None = None,
    force: bool = False,
) -> ExportReport:
    """Export `detector`'s backbone + FPN (``part="backbone"``) or the whole detector (``"detector"``, ONNX only).

    The whole detector is checked in ONNX Runtime on `check_image` (random if None) and on a second image size:
    the same number of detections, scores and boxes within 1e-3 (boxes in pixels).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    detector = detector.eval()
    if part == "backbone":
        backbone = BackboneMaps(cast(nn.Module, detector.backbone)).eval()
        return export_model(backbone, path, fmt, input_size, 3, dynamic_batch, opset)
    if fmt != "onnx":
        raise ValueError("the whole detector exports to onnx only; use --detector-part backbone for other formats")
    if dynamic_batch:
        raise ValueError("the whole detector takes one image of any size; --dynamic-batch applies to the backbone")
    path = check_output_path(path, force)
    model = DetectorForExport(detector).eval()
    h, w = input_size
    images = [check_image if check_image is not None else torch.rand(3, h, w), torch.rand(3, max(32, h * 3 // 4), w)]
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    with written_whole(tmp, path, model):  # a full disk or Ctrl-C: one line, and no partial file
        proto = _write_detector_onnx(model, images[0], tmp, opset)
        diff = _detections_diff(model, tmp, images)
        if not diff <= 1e-3:
            raise ValueError(f"the exported detector disagrees with PyTorch: max difference {diff:.2e} > 1e-3")
    return ExportReport(
        str(path),
        "onnx",
        path.stat().st_size,
        ["image"],
        list(DETECTOR_OUTPUTS),
        diff,
        opset=onnx_opset(proto, opset),
        dynamic_batch=False,
        checks=["onnx.checker", "onnxruntime (detections matched)"],
        input_shape=[3, "height", "width"],  # one image of any size: the detector resizes it itself
    )


def _write_detector_onnx(model: DetectorForExport, image: torch.Tensor, path: Path, opset: int) -> Any:
    """Trace `model` on `image` to an ONNX file at `path` (any image height and width, any number of detections)
    and return its proto, once `onnx.checker` accepts it."""
    import onnx

    names = list(DETECTOR_OUTPUTS)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing notices about shape-dependent Python code in torchvision
        torch.onnx.export(
            model,
            (image,),
            str(path),
            input_names=["image"],
            output_names=names,
            opset_version=opset,
            dynamic_axes={"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in names}},
            dynamo=False,
        )
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    return proto


def _detections_diff(model: DetectorForExport, path: Path, images: list[torch.Tensor]) -> float:
    """The largest difference (see `match_detections`) between `model` and its ONNX file at `path` in ONNX
    Runtime, over `images`."""
    sess = onnx_session(path)
    diff = 0.0
    with torch.no_grad():
        for im in images:
            diff = max(diff, match_detections(model(im), sess.run(None, {"image": im.numpy()})))
    return diff
