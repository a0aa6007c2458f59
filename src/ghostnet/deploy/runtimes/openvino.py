"""OpenVINO: a model as an IR (``.xml`` graph + ``.bin`` weights), run by OpenVINO's CPU plugin.

How it converts: ``torch.export.export(model, (example,))`` gives an ExportedProgram, ``openvino.convert_model``
turns it into an ``openvino.Model``, ``Model.reshape`` pins the input to `example`'s shape, and for int8
``nncf.quantize`` (post-training quantization: statistics and full bias correction on every calibration image)
inserts FakeQuantize nodes and stores the conv/matmul weights as int8. ``openvino.save_model`` writes the pair.

Traps it handles:

- ``convert_model(model, example_input=...)`` traces with ``torch.jit.trace``, which bakes whichever branch the
  example took into the graph; ``torch.export`` refuses data-dependent control flow instead, and that refusal
  (or an op OpenVINO has no conversion rule for) becomes one ``ValueError`` line naming the construct or op.
- ``save_model`` compresses weights to fp16 by default; the float32 export is saved with
  ``compress_to_fp16=False``.
- On a CPU with AVX-512 BF16 or AMX the plugin may run in bf16 (differences near 2e-3); `load` compiles with
  ``INFERENCE_PRECISION_HINT=f32`` so the file runs as written.
- An ExportedProgram converts with a dynamic batch, height and width; the IR is pinned to `example`'s shape
  (an int8 one after calibrating image by image at batch 1, so a batch-32 file calibrates on every image).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import export_failure

__all__ = ["convert", "load", "files", "notes"]

_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")
# Nodes between a weight constant and the layer using it (NNCF's int8 weights: Constant -> Convert -> Subtract?
# -> Multiply; a grouped conv's weights also pass through a Reshape).
_WEIGHT_PATH = ("Convert", "Subtract", "Multiply", "Reshape", "FakeQuantize", "Transpose")


def convert(model: nn.Module, example: torch.Tensor, path: Path, calibration: list[torch.Tensor] | None) -> None:
    """Write `model` as an OpenVINO IR at `path` (``.xml``, its ``.bin`` beside it) taking inputs of exactly
    `example`'s shape: float32 weights, or int8 quantized by NNCF on `calibration` ((1, C, H, W) real images).

    Raises:
        ValueError: a model torch.export cannot capture or OpenVINO cannot convert, naming the construct or op.
    """
    import openvino as ov

    ov_model = _to_openvino(model, example)
    if calibration is not None:
        # calibrate image by image at batch 1, then give the quantized graph `example`'s batch
        ov_model.reshape({ov_model.input(0): ov.PartialShape([1, *example.shape[1:]])})
        ov_model = _quantize(ov_model, calibration)
    ov_model.reshape({ov_model.input(0): ov.PartialShape(list(example.shape))})
    ov.save_model(ov_model, str(path), compress_to_fp16=False)


def _to_openvino(model: nn.Module, example: torch.Tensor) -> Any:
    """`model` captured by torch.export, converted to an ``openvino.Model`` (batch, height and width left
    dynamic)."""
    import openvino as ov

    try:
        program = torch.export.export(model, (example,))
    except Exception as e:  # every torch.export failure means this model cannot be captured as a graph
        raise ValueError(f"openvino cannot convert this model: {export_failure(str(e))}") from e
    try:
        ov_model = ov.convert_model(program)
    except Exception as e:  # OpConversionFailure and its kin: the frontend lists what it could not convert
        raise ValueError(f"openvino cannot convert this model: {_conversion_failure(str(e))}") from e
    return ov_model


def _conversion_failure(message: str) -> str:
    """One line from an OpenVINO frontend error: the ops it has no conversion rule for, or those that failed."""
    if missing := re.search(r"No conversion rule found for operations: ([^\n]+)", message):
        return f"{missing[1].strip()} is not supported (no OpenVINO conversion rule)"
    if failed := re.search(r"Conversion is failed for: ([^\n]+)", message):
        return f"{failed[1].strip()} failed to convert"
    lines = [s.strip() for s in message.splitlines() if s.strip()]
    return lines[-1][:200] if lines else "the OpenVINO frontend failed"


def _quantize(ov_model: Any, calibration: list[torch.Tensor]) -> Any:
    """`ov_model` with NNCF's int8 post-training quantization, calibrated on every image in `calibration`."""
    import nncf

    if not calibration:
        raise ValueError("an int8 export needs calibration images; none were given")
    dataset = nncf.Dataset(calibration, _as_array)
    # full bias correction: NNCF's default fast one left a small digits model agreeing with its float32 self on
    # 82% of test images instead of 99.5%; it costs about 3x the calibration time
    return nncf.quantize(ov_model, dataset, subset_size=len(calibration), fast_bias_correction=False)


def _as_array(image: torch.Tensor) -> np.ndarray:
    return image.detach().cpu().float().numpy()


def load(path: Path, threads: int | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """OpenVINO's CPU plugin on the IR at `path`, in float32 precision (never bf16), latency mode, `threads`
    CPU threads when given: a function from one NCHW float32 array to the list of outputs (float32 arrays)."""
    compiled = compile_ir(path, threads)
    request = compiled.create_infer_request()
    outputs, shape = list(compiled.outputs), tuple(compiled.input(0).get_shape())

    def run(x: np.ndarray) -> list[np.ndarray]:
        if x.shape != shape:
            raise ValueError(f"{path.name} takes inputs of shape {shape}; got {x.shape}")
        result = request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.array(result[o], dtype=np.float32) for o in outputs]

    return run


def compile_ir(path: Path, threads: int | None) -> Any:
    """The ``openvino.CompiledModel`` `load` runs (its properties, e.g. ``INFERENCE_NUM_THREADS``, can be read
    back with ``get_property``)."""
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1; got {threads}")
        config["INFERENCE_NUM_THREADS"] = threads
    return ov.Core().compile_model(str(path), "CPU", config)


def files(path: Path) -> list[Path]:
    """The IR's graph (`path`, ``.xml``) and its weights (``.bin`` of the same stem)."""
    return [path, path.with_suffix(".bin")]


def notes(path: Path) -> list[str]:
    """The input shape, weight precision and, for an int8 IR, its FakeQuantize nodes and int8 layers."""
    import openvino as ov

    ov_model = ov.Core().read_model(str(path))
    shape = "x".join(str(d) for d in ov_model.input(0).get_partial_shape())
    ops = Counter(op.get_type_name() for op in ov_model.get_ops())
    weights = weight_types(ov_model)
    int8 = sum(t == "i8" for t in weights)
    facts = [f"input {shape} f32, run with INFERENCE_PRECISION_HINT f32"]
    if ops["FakeQuantize"] or int8:
        kept = len(weights) - int8
        facts.append(
            f"int8: {ops['FakeQuantize']} FakeQuantize nodes, {int8} conv/matmul weights int8, {kept} kept fp32"
        )
    else:
        kinds = Counter(weights)
        facts.append("weights " + ", ".join(f"{_PRECISION.get(k, k)} ({n} conv/matmul)" for k, n in kinds.items()))
    return facts


_PRECISION = {"f32": "fp32", "f16": "fp16", "i8": "int8", "u8": "uint8"}


def weight_types(ov_model: Any) -> list[str]:
    """The element type (``f32``, ``f16``, ``i8``...) of the stored weights of each conv and matmul of
    `ov_model`, found by walking back from its second input through converts, scales and reshapes."""
    return [
        t
        for t in (
            _stored_type(op.input_value(1).get_node())
            for op in ov_model.get_ordered_ops()
            if op.get_type_name() in _WEIGHTED
        )
        if t
    ]


def _stored_type(node: Any) -> str | None:
    """The element type of the Constant behind `node`, or None when the input is computed (e.g. a matmul of two
    activations)."""
    for _ in range(8):
        kind = node.get_type_name()
        if kind == "Constant":
            return node.get_output_element_type(0).get_type_name()
        if kind not in _WEIGHT_PATH:
            return None
        node = node.input_value(0).get_node()
    return None
