"""LiteRT (TensorFlow Lite): a `.tflite` flatbuffer, run on CPU by the LiteRT interpreter and its XNNPACK delegate.

How it converts: float32 is `litert_torch.convert(model, (example,))` (torch.export, then a lowering to the
TFLite dialect through StableHLO) and `.export(path)`. int8 follows the PT2E route litert-torch documents: the
model is exported with `torch.export.export(...).module()`, torchao's `prepare_pt2e` inserts the observers of
litert-torch's `PT2EQuantizer` (`get_symmetric_quantization_config(is_per_channel=True)`: per-channel symmetric
int8 weights, static per-tensor int8 activations), every calibration image goes through it, `convert_pt2e`
(`fold_quantize=False`) leaves quantize/dequantize pairs, and `litert_torch.convert(...,
quant_config=QuantConfig(pt2e_quantizer=...))` turns them into int8 kernels. `load` runs the file in
`ai_edge_litert.interpreter.Interpreter`, which hands the ops it can to XNNPACK.

Traps it handles:

- Layout: the converter computes in NHWC but keeps PyTorch's NCHW at the input and at feature-map outputs (it
  adds the TRANSPOSE ops), so arrays go in and come out exactly as PyTorch's.
- Output order: a multi-output model's outputs are read by their signature names (`output_0`, `output_1`, ...,
  sorted by number), not in the interpreter's tensor order, which need not follow the model's.
- int8 input and output: the static int8 conversion folds the quantize at the input and the dequantize at the
  output into the file's signature, so the file takes and gives int8. `load` quantizes the float32 input with
  the input's scale and zero point and dequantizes the outputs, so the runner still maps float32 to float32;
  `notes` says so.
- int8 GhostNetV2: the converter turns each padding TFLite's SAME cannot express (PyTorch pads both sides alike)
  into a PAD of its own, after PT2E's observers, and in V2 one sat between two int8 scales: "'tfl.pad' op
  quantization parameters violate the same scale constraint", and no file. On that refusal the conversion is
  redone with those paddings made graph nodes before quantizing, so the quantizer gives them one scale.
- int8 with a batch larger than one: the exported graph has a fixed batch, so calibration images are stacked
  into batches of the example's size (cycling through them to fill the last), every image calibrated.
- Threads: the Python binding runs on ONE thread when `num_threads` is left out (whatever its docstring says),
  so `load(path, None)` asks for every core this process may use.
- Nearest upsampling by a non-integer factor (a DFC gate on an odd-sized map: 7x7 pooled to 3x3 and back, as in
  GhostNetV2 at 224x224 or GhostFaceNet V2 at 112x112) is lowered to a RESIZE_NEAREST_NEIGHBOR that copies
  other pixels than PyTorch does (errors of order 1). Before converting, each such upsampling in the exported
  graph is replaced by two index selections (GATHER_ND) whose indices come from PyTorch's own operator run on an
  index ramp; integer factors, which agree, are left alone.
- Delegation: XNNPACK takes no nearest-neighbour resize, so GhostNetV2/V3's DFC gates (avg pool, convs, sigmoid,
  nearest upsampling) leave one RESIZE_NEAREST_NEIGHBOR per gate on LiteRT's own kernel, between two XNNPACK
  partitions. The file is still correct; `notes` names every op left out, read from the interpreter's nodes.
- litert-torch draws a progress tree on stdout for every conversion, and the converter logs a hundred or more
  MLIR info lines to the process's stderr; while `convert` runs the first is switched off (through its
  environment variable) and the second held in a temporary file, shown only if the conversion fails.
- Refusals: torch.export's errors (data-dependent control flow) and the lowering's (no lowering for an op) have
  no common type and span many lines; they become one ValueError naming the op or the source line.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import nearest_sources, stacked

__all__ = ["convert", "load", "files", "notes"]

_PROGRESS_ENV = "LITERT_TORCH_SHOW_PROGRESS"
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def convert(model: nn.Module, example: torch.Tensor, path: Path, calibration: list[torch.Tensor] | None) -> None:
    """Write `model` as a LiteRT flatbuffer at `path` for inputs shaped like `example`: float32, or int8 calibrated
    on every tensor of `calibration`. Raises ValueError naming the op or construct the converter refuses."""
    import litert_torch

    if calibration is not None and not calibration:
        raise ValueError("tflite int8 needs at least one calibration image")
    with _quiet_converter():
        try:
            if calibration is None:
                graph, changed = _exact_nearest(model, example)
                edge = litert_torch.convert(graph if changed else model, (example,))
            else:
                edge = _convert_int8(model, example, calibration)
        except Exception as e:  # torch.export and the lowering raise many unrelated types
            raise ValueError(f"tflite cannot convert this model: {_refusal(e)}") from e
        edge.export(str(path))


def _convert_int8(model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor]) -> Any:
    """`model` through PT2E static int8 quantization (litert-torch's quantizer), then converted; if the converter
    refuses a PAD it added between two scales, again with every such padding a node of its own
    (`_explicit_padding`). Not first: those nodes trip the converter's layout pass in some other graphs."""
    try:
        return _quantized_and_converted(model, example, calibration, explicit_padding=False)
    except Exception as e:  # the converter's errors have no type of their own
        if "same scale constraint" not in str(e):
            raise
    return _quantized_and_converted(model, example, calibration, explicit_padding=True)


def _quantized_and_converted(
    model: nn.Module, example: torch.Tensor, calibration: list[torch.Tensor], explicit_padding: bool
) -> Any:
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    graph, _ = _exact_nearest(model, example)
    if explicit_padding:
        _explicit_padding(graph)
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in stacked(calibration, example.shape[0]):
            prepared(batch)
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    for module in quantized.modules():  # eval() is refused on exported modules; litert-torch reads the flag
        module.training = False
    return litert_torch.convert(quantized, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _exact_nearest(model: nn.Module, example: torch.Tensor) -> tuple[torch.fx.GraphModule, bool]:
    """`model` exported, each nearest upsampling by a non-integer factor replaced by two index selections (rows,
    columns) that copy exactly the pixels PyTorch's operator copies; and whether there was one."""
    graph = torch.export.export(model, (example,)).module()
    assert isinstance(graph, torch.fx.GraphModule)
    changed = False
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or not str(node.target).startswith("aten.upsample_nearest2d"):
            continue
        (h, w), (out_h, out_w) = node.args[0].meta["val"].shape[-2:], node.meta["val"].shape[-2:]
        if out_h % h == 0 and out_w % w == 0:
            continue  # integer factors: LiteRT's resize copies the same pixels
        sources = nearest_sources(tuple(node.args[0].meta["val"].shape), node.target, node.args[1:], node.kwargs)
        rows, cols = (torch.tensor(s, dtype=torch.long) for s in sources)
        x = node.args[0]
        with graph.graph.inserting_before(node):
            for dim, index in ((2, rows), (3, cols)):
                name = f"nearest_index_{len(list(graph.buffers()))}"
                graph.register_buffer(name, index)
                x = graph.graph.call_function(torch.ops.aten.index_select.default, (x, dim, graph.graph.get_attr(name)))
        node.replace_all_uses_with(x)
        graph.graph.erase_node(node)
        changed = True
    if changed:
        graph.graph.lint()
        graph.recompile()
    return graph, changed


def _explicit_padding(graph: torch.fx.GraphModule) -> None:
    """Give each convolution whose padding TFLite's SAME or VALID cannot express (PyTorch pads both sides alike,
    SAME puts the odd pixel after) its padding as a `constant_pad_nd` node of its own, in place.

    The converter would add that PAD itself; added after PT2E's observers, it can sit between two different
    scales, which the int8 PAD refuses (GhostNetV2, where a strided block's input feeds both its DFC gate and a
    5x5 stride-2 shortcut). Added before, the quantizer gives it its input's scale."""
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.conv2d.default:
            continue
        args = list(node.args) + [None, 1, 0, 1, 1][len(node.args) - 2 :]  # bias, stride, padding, dilation, groups
        stride, padding, dilation = (_pair(a) for a in args[3:6])
        kernel = node.args[1].meta["val"].shape[-2:]
        size = node.args[0].meta["val"].shape[-2:]
        if padding == (0, 0) or all(map(_same_as_tflite, size, kernel, stride, padding, dilation)):
            continue
        (ph, pw) = padding
        with graph.graph.inserting_before(node):
            padded = graph.graph.call_function(torch.ops.aten.constant_pad_nd.default, (args[0], [pw, pw, ph, ph], 0.0))
        node.args = (padded, args[1], args[2], list(stride), [0, 0], list(dilation), args[6])
    graph.graph.lint()
    graph.recompile()


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def _same_as_tflite(size: int, kernel: int, stride: int, pad: int, dilation: int) -> bool:
    """Whether PyTorch's padding `pad` on both sides of one axis is what TFLite's SAME padding adds there."""
    span = dilation * (kernel - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return total == 2 * pad and (size + 2 * pad - span) // stride + 1 == out


@contextmanager
def _quiet_converter() -> Iterator[None]:
    """litert-torch's progress tree off (its environment variable, restored afterwards), and the converter's C++
    log (a hundred or more MLIR info lines per model, written to file descriptor 2) held in a temporary file: on
    success it is dropped, on failure its last lines are written out before the error, as they may say why."""
    before = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "n"
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as log:
            os.dup2(log.fileno(), 2)
            try:
                yield
            except BaseException:
                os.dup2(saved, 2)
                log.seek(0)
                tail = log.read().decode(errors="replace").splitlines()[-20:]
                sys.stderr.write("".join(f"{line}\n" for line in tail))
                raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if before is None:
            del os.environ[_PROGRESS_ENV]
        else:
            os.environ[_PROGRESS_ENV] = before


def _refusal(e: BaseException) -> str:
    """One line out of a conversion error: the op it stopped at (or the source line) and the error's first line."""
    text = str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = f"{type(e).__name__}: {lines[0] if lines else ''}"
    op = re.search(r"target=torch\.ops\.([\w.]+)", text)
    code = _source_line(lines)
    where = f" at `{code}`" if code else ""
    if op:
        return f"{op.group(1)} is not supported ({first}){where}"
    if "converter passes" in text:  # torch.export succeeded; the TFLite lowering refused (e.g. an int8 constraint)
        return f"the LiteRT converter failed ({first}){where}"
    return f"torch.export failed ({first}){where}"


def _source_line(lines: list[str]) -> str | None:
    """The model's source line a PyTorch error quotes after its `File "...", line N, in forward` line."""
    for i, line in enumerate(lines[:-1]):
        if line.startswith("File ") and ", line " in line:
            code = lines[i + 1]
            if not code.startswith(("File ", "Use ", "The ")):
                return code
    return None


def load(path: Path, threads: int | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The file at `path` in LiteRT's interpreter (XNNPACK delegate on): run(NCHW float32 array) -> its outputs,
    float32, in the model's order. `threads` pins the interpreter's threads; None means every core we may use."""
    from ai_edge_litert.interpreter import Interpreter

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    interpreter = Interpreter(model_path=str(path), num_threads=threads or _usable_cores())
    interpreter.allocate_tensors()
    signature = interpreter.get_signature_runner()
    inputs, outputs = signature.get_input_details(), signature.get_output_details()
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected a model with one input, this one has {len(inputs)}")
    (source,) = inputs.values()
    order = [outputs[name] for name in sorted(outputs, key=_output_number)]
    shape = tuple(int(d) for d in source["shape"])

    def run(x: np.ndarray) -> list[np.ndarray]:
        if tuple(x.shape) != shape:
            raise ValueError(f"{path} takes inputs of shape {shape}, got {tuple(x.shape)}")
        interpreter.set_tensor(source["index"], _to_tensor(np.asarray(x, dtype=np.float32), source))
        interpreter.invoke()
        return [_to_float(interpreter.get_tensor(o["index"]), o) for o in order]

    return run


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _output_number(name: str) -> tuple[int, str]:
    digits = re.search(r"(\d+)$", name)
    return (int(digits.group(1)) if digits else -1, name)


def _to_tensor(x: np.ndarray, detail: dict) -> np.ndarray:
    """`x` in the input's type: float32 as is, int8 quantized with the input's scale and zero point."""
    if detail["dtype"] == np.float32:
        return np.ascontiguousarray(x)
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])


def _to_float(y: np.ndarray, detail: dict) -> np.ndarray:
    if y.dtype == np.float32:
        return y.copy()  # the interpreter's buffer is overwritten by the next call
    scale, zero = detail["quantization"]
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def files(path: Path) -> list[Path]:
    """The export is one self-contained file (weights inside)."""
    return [Path(path)]


def notes(path: Path) -> list[str]:
    """What the file holds: the precision of its weighted layers and its input/output, the ops that ran in float
    in an int8 file, and which ops the XNNPACK delegate leaves to LiteRT's own kernels."""
    ops, weights, io = _read_model(Path(path))
    said = []
    int8, fp32 = weights["int8"], weights["float32"]
    if int8:
        said.append(f"int8: {int8} convs/linears, {fp32} kept fp32")
        island = Counter({op: n for (op, out), n in ops.items() if out == "float32" and op != "DEQUANTIZE"})
        if island:
            said.append("ran in float: " + _counts(island))
    else:
        said.append("weights fp32")
    if any(t != "float32" for t in io):
        said.append(f"input/output {'/'.join(io)} in the file (the runner quantizes and dequantizes)")
    said.append(_delegation(Path(path)))
    return said


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{op} (x{n})" for op, n in sorted(counter.items()))


def _read_model(path: Path) -> tuple[Counter[tuple[str, str]], Counter[str], list[str]]:
    """The main graph of the flatbuffer at `path`: (op name, type of its first output) -> count, the weight type
    of its convolutions and fully connected layers -> count, and the types of its input and output."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = model.subgraphs[0]
    ops: Counter[tuple[str, str]] = Counter()
    weights: Counter[str] = Counter()
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")
        out = types[graph.tensors[op.outputs[0]].type] if len(op.outputs) else "none"
        ops[(name, out)] += 1
        if name in _WEIGHTED:
            weights[types[graph.tensors[op.inputs[1]].type]] += 1
    io = [types[graph.tensors[graph.inputs[0]].type], types[graph.tensors[graph.outputs[0]].type]]
    return ops, weights, io


def _delegation(path: Path) -> str:
    """Which ops the XNNPACK delegate takes: the nodes each delegate kernel replaced are found by walking back
    from its outputs to its inputs through the original nodes, which the interpreter keeps in its node list."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()  # the one view of the node list the binding gives
    delegates = [n for n in nodes if n["op_name"] == "DELEGATE"]
    originals = [n for n in nodes if n["op_name"] != "DELEGATE"]
    producer = {int(t): n["index"] for n in originals for t in n["outputs"]}
    taken: set[int] = set()
    for kernel in delegates:
        stop = {int(t) for t in kernel["inputs"]}
        todo = [int(t) for t in kernel["outputs"]]
        while todo:
            tensor = todo.pop()
            if tensor in stop or tensor not in producer or producer[tensor] in taken:
                continue
            taken.add(producer[tensor])
            todo.extend(int(t) for t in nodes[producer[tensor]]["inputs"] if t >= 0)
    left = Counter(n["op_name"] for n in originals if n["index"] not in taken)
    if not taken:
        return "no op delegated to XNNPACK"
    if not left:
        return f"every op delegated to XNNPACK ({len(taken)} ops, {len(delegates)} partition(s))"
    return "not delegated to XNNPACK: " + _counts(left)
