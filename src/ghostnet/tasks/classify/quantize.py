"""int8 of a trained classifier in ONNX Runtime (`ghostnet classify quantize`): calibrated on its own training
images, measured (top-1 and batch-1 latency, fp32 vs int8) on its test split."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ...deploy.export import export_model, onnx_session
from ...deploy.quantize import (
    KEEPABLE,
    check_quantize_options,
    evaluate_onnx,
    loader_images,
    onnx_latency,
    quantize_onnx,
)
from ...nn.surgery import fuse_bn

if TYPE_CHECKING:
    from ...data import DataBundle, FolderLoader, TensorLoader
    from .config import TrainConfig

__all__ = ["CheckpointData", "QuantizeReport", "calibration_loader", "checkpoint_data", "quantize_checkpoint"]


@dataclass
class QuantizeReport:
    """The int8 model and what it cost: accuracy on the test split and batch-1 latency, fp32 vs int8 (both ORT)."""

    fp32_path: str
    int8_path: str
    dataset: str
    calibration_images: int
    fp32_top1: float
    int8_top1: float
    fp32_ms: float
    int8_ms: float
    fp32_mib: float
    int8_mib: float
    kept_fp32: tuple[str, ...] = ()
    calibration: str = "minmax"

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.int8_top1

    @property
    def speedup(self) -> float:
        return self.fp32_ms / self.int8_ms


@dataclass
class CheckpointData:
    """A trained checkpoint's model with its own dataset: calibration images (the training split, in file order,
    preprocessed as for evaluation: no augmentation) and the test split, preprocessed as in training."""

    model: torch.nn.Module
    in_chans: int
    data: Any
    calibration: Any
    test: Any


def checkpoint_data(checkpoint: str | os.PathLike, data_dir: str | None = None) -> CheckpointData:
    """Load one of our checkpoints (eval mode) and the loaders of the dataset it was trained on."""
    from ...data import load_dataset
    from ...engine.distributed import Dist
    from .config import TrainConfig
    from .evaluate import load_model
    from .task import build_loaders

    model, prep, trained = load_model(checkpoint)
    if not trained.get("dataset"):
        raise ValueError(f"{checkpoint} does not say which dataset it was trained on; quantize needs one of ours")
    data = load_dataset(trained["dataset"], data_dir or trained.get("data_dir"), False, trained.get("image_size"))
    cfg = TrainConfig(dataset=data.name, batch_size=32, eval_batch_size=256)
    _, test_loader = build_loaders(cfg, data, Dist(), torch.device("cpu"), prep.in_chans)
    return CheckpointData(model.eval(), prep.in_chans, data, calibration_loader(cfg, data, prep.in_chans), test_loader)


def calibration_loader(cfg: TrainConfig, data: DataBundle, in_chans: int) -> TensorLoader | FolderLoader:
    """The training split of `data` read the way evaluation reads a split, in batches of ``cfg.batch_size``: in
    file order and never augmented (an image folder's files resized and centre-cropped, not randomly cropped,
    flipped or jittered). That is the loader `build_loaders` makes for a test split; turning off `train` on its
    training loader is not enough, since an image folder's transforms are fixed when its loader is built."""
    from ...engine.distributed import Dist
    from .task import build_loaders

    as_test = dataclasses.replace(data, test=data.train)
    cfg = dataclasses.replace(cfg, eval_batch_size=cfg.batch_size)
    _, loader = build_loaders(cfg, as_test, Dist(), torch.device("cpu"), in_chans)
    return loader


def quantize_checkpoint(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    calibration_images: int = 512,
    data_dir: str | None = None,
    threads: int | None = None,
    latency_runs: int = 50,
    keep_fp32: tuple[str, ...] = KEEPABLE,
    calibration: str = "minmax",
) -> QuantizeReport:
    """Export a trained checkpoint (BN folded) to ONNX, quantize it to int8 with calibration on its own
    dataset's training images, and measure both on the test split.

    Args:
        checkpoint: our checkpoint (it names the model, dataset and preprocessing).
        output: the int8 ``.onnx`` to write (the fp32 one goes beside it as ``*.fp32.onnx``).
        calibration_images: how many training images the calibrator sees.
        data_dir: where the dataset is, if not where it was at training time.
        threads: ONNX Runtime intra-op threads for the latency measurement.
        keep_fp32: layers left in fp32: ``"stem"`` (quantizing the first conv's raw-image input cost 1.3 points
            of Fashion-MNIST top-1 on its own) and ``"classifier"``.
        calibration: how activation ranges are chosen: ``minmax``, ``percentile`` (99.999) or ``entropy``.
    """
    check_quantize_options(keep_fp32, calibration)
    output = Path(output)
    if output.exists():
        raise ValueError(f"{output} exists; remove it or choose another --output")
    fp32_path = output.with_name(output.name.removesuffix(".onnx") + ".fp32.onnx")
    if fp32_path.exists():
        raise ValueError(f"{fp32_path} exists; remove it or choose another --output")
    d = checkpoint_data(checkpoint, data_dir)
    hw = (d.data.image_size, d.data.image_size)
    export_model(fuse_bn(d.model), fp32_path, "onnx", hw, d.in_chans, dynamic_batch=True)
    out = output.with_name(f".{output.name}.tmp")
    try:
        quantize_onnx(fp32_path, out, loader_images(d.calibration, calibration_images), tuple(keep_fp32), calibration)
        os.replace(out, output)  # whole or not at all: a failed run leaves no int8 file behind
    except BaseException:
        out.unlink(missing_ok=True)
        fp32_path.unlink(missing_ok=True)  # nor its fp32 half, which would block the next try
        raise
    fp32, int8 = onnx_session(fp32_path, threads), onnx_session(output, threads)
    shape = (1, d.in_chans, *hw)
    return QuantizeReport(
        str(fp32_path),
        str(output),
        d.data.name,
        calibration_images,
        evaluate_onnx(fp32, d.test),
        evaluate_onnx(int8, d.test),
        onnx_latency(fp32, shape, latency_runs),
        onnx_latency(int8, shape, latency_runs),
        fp32_path.stat().st_size / 2**20,
        output.stat().st_size / 2**20,
        tuple(keep_fp32),
        calibration,
    )
