"""Using a trained segmenter: colour overlays of image files, and ONNX export with any height and width.

segment_images(model, classes, files, "overlays")             # IMAGE_STEM.png: the image under its class colours
export_segmenter(model, "seg.onnx", input_size=(512, 512))    # logits (1, C, H, W) for any H, W; checked in ORT
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.images import output_targets, read_image, save_png
from ...deploy.export import ExportReport, check_output_path, max_abs_diff, onnx_opset, onnx_session, written_whole
from ...nn.surgery import SegmentationLogits
from .data import CITYSCAPES_CLASSES, CITYSCAPES_COLORS, normalize, voc_palette

__all__ = ["colorize", "export_segmenter", "segment_images"]


def colorize(labels: np.ndarray, classes: list[str] | None = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8: Cityscapes' colours for its 19 classes, else VOC's (255, ignore,
    is VOC's cream)."""
    palette = np.asarray(voc_palette(), dtype=np.uint8).reshape(256, 3)
    if classes is not None and tuple(classes) == CITYSCAPES_CLASSES:
        palette[: len(CITYSCAPES_COLORS)] = CITYSCAPES_COLORS
    return palette[labels]


@torch.no_grad()
def segment_images(
    model: nn.Module,
    classes: list[str],
    files: list[Path],
    output_dir: str | os.PathLike | None,
    overwrite: bool = False,
    alpha: float = 0.5,
) -> list[dict[str, Any]]:
    """Segment each image file at its own size; with `output_dir`, write ``STEM.png``: the image blended (`alpha`)
    with its predicted classes' colours. Returns per file ``{"path", "classes": {name: % of pixels}, "output"?}``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (the overlay's opacity) must be in [0, 1], got {alpha}")
    out_dir = Path(output_dir) if output_dir is not None else None
    targets = output_targets(files, out_dir, overwrite) if out_dir is not None else {}
    # Class 0 is left uncoloured only where it is the background (VOC, the folder sets); Cityscapes' 0 is road.
    first = 1 if classes and classes[0].strip("_").lower() == "background" else 0
    device = next(model.parameters()).device
    results = []
    for f in files:
        image = read_image(f)  # (3, H, W) in [0, 1]
        pred = model(normalize(image)[None].to(device))["out"].argmax(1)[0].cpu().numpy()  # (H, W)
        counts = np.bincount(pred.ravel(), minlength=len(classes))
        share = {classes[c]: round(100 * float(counts[c]) / pred.size, 2) for c in np.nonzero(counts)[0]}
        r: dict[str, Any] = {"path": str(f), "classes": dict(sorted(share.items(), key=lambda kv: -kv[1]))}
        if out_dir is not None:
            rgb = image.permute(1, 2, 0).numpy() * 255
            blended = np.where(pred[..., None] >= first, (1 - alpha) * rgb + alpha * colorize(pred, classes), rgb)
            save_png(blended.round().clip(0, 255).astype(np.uint8), targets[f])
            r["output"] = str(targets[f])
        results.append(r)
    return results


def export_segmenter(
    model: nn.Module,
    path: str | os.PathLike,
    input_size: tuple[int, int] = (512, 512),
    opset: int = 18,
    check_sizes: tuple[tuple[int, int], ...] | None = None,
    force: bool = False,
) -> ExportReport:
    """ONNX with a dynamic batch, height and width, returning the logits; checked in ONNX Runtime at `input_size` and
    at a second size: max abs difference <= 1e-4 (relative past |1|) and the same argmax on >= 99.9% of the pixels."""
    import onnx

    path = check_output_path(path, force)
    net = SegmentationLogits(model.eval()).eval()
    h, w = input_size
    sizes = check_sizes or ((h, w), (max(33, h * 3 // 4 + 7), max(33, w + 13)))  # the second: no multiple of 32
    tmp = path.with_name(f".{path.stem}.tmp.onnx")
    with written_whole(tmp, path, net):
        axes = {0: "batch", 2: "height", 3: "width"}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer notices about shape arithmetic (traced as ONNX shape ops)
            torch.onnx.export(
                net,
                (torch.randn(1, 3, h, w),),
                str(tmp),
                input_names=["input"],
                output_names=["logits"],
                opset_version=opset,
                dynamic_axes={"input": axes, "logits": axes},
                dynamo=False,
            )
        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        diff, agree = _parity(net, tmp, sizes)
    return ExportReport(
        str(path),
        "onnx",
        path.stat().st_size,
        ["input"],
        ["logits"],
        diff,
        opset=onnx_opset(proto, opset),
        dynamic_batch=True,
        checks=[
            "onnx.checker",
            f"onnxruntime at {', '.join(f'{a}x{b}' for a, b in sizes)} (argmax agrees on {agree:.3f}%)",
        ],
        input_shape=["batch", 3, "height", "width"],
    )


def _parity(net: nn.Module, path: Path, sizes: tuple[tuple[int, int], ...]) -> tuple[float, float]:
    """(max abs difference, % of pixels whose argmax agrees) between `net` and its ONNX file, over `sizes`; refuses
    the file past 1e-4 (relative past |1|) or below 99.9% agreement."""
    sess = onnx_session(path)
    diff, agree, total = 0.0, 0, 0
    for h, w in sizes:
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = net(x)
        got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
        d = max_abs_diff(ref, got)
        if not d <= 1e-4 * max(1.0, float(ref.abs().max())):
            raise ValueError(f"the exported segmenter disagrees with PyTorch at {h}x{w}: max abs diff {d:.2e}")
        diff = max(diff, d)
        agree += int((ref.argmax(1) == got.argmax(1)).sum())
        total += h * w
    pct = 100 * agree / total
    if pct < 99.9:
        raise ValueError(f"the exported segmenter's argmax agrees with PyTorch on only {pct:.3f}% of the pixels")
    return diff, pct
