"""Post-training static int8 quantization with ONNX Runtime, calibrated on real images of the target dataset.

ONNX Runtime's quantizer is used rather than torch.ao's because, at the same accuracy, its int8 model ran
8.5x faster (benchmarks/int8_backends.py, docs/BENCHMARKS.md: 0.07 points lost by both on Fashion-MNIST, 7.3 vs
62 ms at batch 1), and the model it quantizes is the same validated ONNX file `ghostnet export` writes.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..nn.surgery import fuse_bn
from .export import export_model, onnx_session

if TYPE_CHECKING:
    from ..data import DataBundle, FolderLoader, TensorLoader
    from ..engine.config import TrainConfig

__all__ = [
    "QuantizeReport",
    "CheckpointData",
    "checkpoint_data",
    "loader_images",
    "calibration_loader",
    "quantize_onnx",
    "quantize_checkpoint",
    "evaluate_onnx",
    "onnx_latency",
]


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


def evaluate_onnx(session: Any, loader: Any) -> float:
    """Top-1 (%) of an ONNX Runtime session over a loader's batches."""
    correct = total = 0
    name = session.get_inputs()[0].name
    for x, y in loader.batches():
        logits = session.run(None, {name: x.numpy()})[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
        total += len(y)
    return 100.0 * correct / max(1, total)


def onnx_latency(session: Any, shape: tuple[int, ...], runs: int = 50, warmup: int = 5) -> float:
    """Median wall time (ms) of one run of an ONNX Runtime session on a random input of `shape`."""
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        session.run(None, {name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


class _Feed:
    """ONNX Runtime's calibration-data reader over an iterable of input batches."""

    def __init__(self, batches: Iterable[Any], input_name: str) -> None:
        self._batches, self.name = iter(batches), input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {self.name: np.asarray(x, dtype=np.float32)}


def loader_images(loader: Any, limit: int) -> Iterator[torch.Tensor]:
    """The first `limit` images of one of our loaders, batch by batch."""
    left = limit
    for x, _ in loader.batches():
        if left <= 0:
            return
        yield x[:left]
        left -= len(x[:left])


KEEPABLE = ("stem", "classifier")
CALIBRATIONS = ("minmax", "percentile", "entropy")


def fp32_nodes(onnx_path: str | os.PathLike, keep: tuple[str, ...]) -> list[str]:
    """Names of the nodes to leave in fp32: the stem (the first conv, on the raw image) and/or the classifier
    (every Gemm/MatMul)."""
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    names = []
    if "stem" in keep:
        first = next((n for n in graph.node if n.op_type == "Conv"), None)
        names += [first.name] if first is not None else []
    if "classifier" in keep:
        names += [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    return names


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
    from ..data import load_dataset
    from ..engine.classification import build_loaders
    from ..engine.config import TrainConfig
    from ..engine.distributed import Dist
    from ..engine.evaluate import load_model

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
    from ..engine.classification import build_loaders
    from ..engine.distributed import Dist

    as_test = dataclasses.replace(data, test=data.train)
    cfg = dataclasses.replace(cfg, eval_batch_size=cfg.batch_size)
    _, loader = build_loaders(cfg, as_test, Dist(), torch.device("cpu"), in_chans)
    return loader


def _check_options(keep_fp32: Iterable[str], calibration: str) -> None:
    if unknown := [k for k in keep_fp32 if k not in KEEPABLE]:
        raise ValueError(f"keep_fp32 takes {', '.join(KEEPABLE)}, not {', '.join(unknown)}")
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")


def quantize_onnx(
    fp32_path: str | os.PathLike,
    output: str | os.PathLike,
    batches: Iterable[Any],
    keep_fp32: tuple[str, ...] = KEEPABLE,
    calibration: str = "minmax",
    input_name: str = "input",
    also_fp32: Callable[[Any], bool] | None = None,
) -> None:
    """Static int8 of an fp32 ONNX file, the way `ghostnet quantize` makes it: QDQ, per-channel int8 weights,
    uint8 activations whose ranges come from running `batches` (arrays or tensors), `keep_fp32` layers left
    in fp32, and any node for which `also_fp32(node)` is true. Writes `output` as it goes
    (`quantize_checkpoint` gives it a temporary name)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    _check_options(keep_fp32, calibration)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        exclude = fp32_nodes(pre, tuple(keep_fp32))
        if also_fp32 is not None:
            import onnx

            exclude += [n.name for n in onnx.load(str(pre)).graph.node if also_fp32(n)]
        quantize_static(
            str(pre),
            str(output),
            _Feed(batches, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method[calibration],
            nodes_to_exclude=exclude,
        )


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
    _check_options(keep_fp32, calibration)
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
