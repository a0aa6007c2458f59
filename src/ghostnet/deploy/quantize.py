"""Post-training static int8 quantization with ONNX Runtime, calibrated on real images of the target dataset.

ONNX Runtime's quantizer is used rather than torch.ao's because, at the same accuracy, its int8 model ran
8.5x faster (benchmarks/int8_backends.py, docs/BENCHMARKS.md: 0.07 points lost by both on Fashion-MNIST, 7.3 vs
62 ms at batch 1), and the model it quantizes is the same validated ONNX file `ghostnet classify export` writes.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    pass

__all__ = [
    "CALIBRATIONS",
    "KEEPABLE",
    "check_quantize_options",
    "evaluate_onnx",
    "fp32_nodes",
    "loader_images",
    "onnx_latency",
    "quantize_onnx",
]


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


def check_quantize_options(keep_fp32: Iterable[str], calibration: str) -> None:
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
    """Static int8 of an fp32 ONNX file, the way `ghostnet classify quantize` makes it: QDQ, per-channel int8 weights,
    uint8 activations whose ranges come from running `batches` (arrays or tensors), `keep_fp32` layers left
    in fp32, and any node for which `also_fp32(node)` is true. Writes `output` as it goes
    (`quantize_checkpoint` gives it a temporary name)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    check_quantize_options(keep_fp32, calibration)
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
