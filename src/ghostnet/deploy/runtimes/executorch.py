"""ExecuTorch with the XNNPACK delegate: a `.pte` program for phones and microcontroller-class CPUs.

How it converts: `torch.export.export` gives an ExportedProgram; for int8, its graph module goes through
torchao's PT2E flow (`prepare_pt2e` with executorch's `XNNPACKQuantizer`: per-channel symmetric int8 weights,
static per-tensor int8 activations; every calibration image through the prepared model; `convert_pt2e`) and is
exported again. `executorch.exir.to_edge_transform_and_lower(..., partitioner=[XnnpackPartitioner()])` hands
every op XNNPACK supports to its delegate, `.to_executorch().buffer` is the file. `load` runs it in
`executorch.runtime.Runtime` (the C++ runtime's Python bindings).

Traps it handles:

- XNNPACK has no nearest-neighbour resize, so `aten.upsample_nearest2d` (GhostNetV2's DFC gate, FPN-style
  upsampling) would run on the slow portable kernel between two layout conversions. Before lowering, each one
  is rewritten into the same copy made of slices, reshapes and concatenations, which XNNPACK runs: the source
  row of every output row is read from PyTorch's own operator (run on an index ramp), so the result is
  identical. A concatenation of one tensor with itself is not delegated either (the partitioner counts distinct
  inputs), so every copy is its own reshape.
- Ops XNNPACK refuses stay in the program on portable kernels; `notes` names them with counts, read back from
  the written file (its operator table and the XNNPACK graph inside it), as are the int8 convolutions. The
  one leftover in GhostNets is `_to_dim_order_copy` on the 0-d constant of each hard-sigmoid (`x + 3`): a cast
  of one scalar per call, the add itself runs in XNNPACK.
- XNNPACK's threads come from ExecuTorch's one process-wide thread pool. Its Python bindings can resize it only
  through `_unsafe_reset_threadpool` (experimental), and a resize after an XNNPACK method was initialised crashes
  the process (a segmentation fault, even after re-initialising the method). So `run` sizes the pool before it
  initialises its method, only while no method has run in this process; a different count later is a
  ValueError, never a crash. `ghostnet bench` times every ExecuTorch form at the same thread count.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import nearest_sources, stacked

__all__ = ["convert", "load", "files", "notes", "nearest_copy", "nearest_sources", "thread_count"]

_NEAREST = ("upsample_nearest2d.vec", "upsample_nearest2d.default")


def convert(model: nn.Module, example: torch.Tensor, path: Path, calibration: list[torch.Tensor] | None) -> None:
    """Write `model` as an ExecuTorch program at `path`: fp32, or int8 calibrated on `calibration`; XNNPACK runs
    every op it supports. Raises ValueError naming the construct torch.export or the lowering refuses."""
    from executorch.backends.xnnpack import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    graph = _exported_module(model, example)
    if calibration is not None:
        graph = _quantized(graph, calibration, example.shape[0])
    program = _export(graph, example)
    try:
        edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        buffer = edge.to_executorch().buffer
    except Exception as e:  # the lowering's own errors have no common base class
        raise ValueError(f"executorch cannot convert this model: {_first_line(e)}") from e
    path.write_bytes(buffer)


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _export(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    try:
        return torch.export.export(module, (example,))
    except Exception as e:  # torch.export raises several unrelated types (Unsupported, UserError, ...)
        raise ValueError(f"executorch cannot convert this model: torch.export failed: {_first_line(e)}") from e


def _exported_module(model: nn.Module, example: torch.Tensor) -> torch.fx.GraphModule:
    """`model` exported and unlifted to a graph module, its nearest upsamplings rewritten into copies."""
    graph = _export(model, example).module()
    assert isinstance(graph, torch.fx.GraphModule)
    for node in list(graph.graph.nodes):
        if node.op == "call_function" and any(str(node.target).endswith(n) for n in _NEAREST):
            x = node.args[0]
            rows, cols = nearest_sources(tuple(x.meta["val"].shape), node.target, node.args[1:])
            with graph.graph.inserting_before(node):
                copy = graph.graph.call_function(nearest_copy, (x, rows, cols))
            node.replace_all_uses_with(copy)
            graph.graph.erase_node(node)
    graph.graph.lint()
    graph.recompile()
    return graph


def nearest_copy(x: torch.Tensor, rows: tuple[int, ...], cols: tuple[int, ...]) -> torch.Tensor:
    """`x` (N, C, H, W) -> (N, C, len(rows), len(cols)), output row i being input row rows[i] (columns alike),
    made only of slices, reshapes and concatenations: nearest upsampling in ops XNNPACK runs."""
    x = _repeat_along(x, rows, 2)
    return _repeat_along(x, cols, 3)


def _repeat_along(x: torch.Tensor, sources: tuple[int, ...], dim: int) -> torch.Tensor:
    """Output index i along `dim` (2 or 3) is input index sources[i]; `sources` is non-decreasing, each index
    repeated some times: runs of indices repeated equally often become one slice repeated by reshapes."""
    if sources == tuple(range(x.shape[dim])):
        return x
    counts = [(index, len(list(group))) for index, group in itertools.groupby(sources)]
    pieces = []
    for times, run in itertools.groupby(counts, key=lambda c: c[1]):
        indices = [index for index, _ in run]
        part = x.narrow(dim, indices[0], len(indices))
        pieces.append(_repeat_each(part, times, dim))
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim)


def _repeat_each(x: torch.Tensor, times: int, dim: int) -> torch.Tensor:
    """Each index of `x` along `dim` (2 or 3) repeated `times` times in place (1 2 -> 1 1 2 2)."""
    if times == 1:
        return x
    n, c, h, w = x.shape
    if dim == 3:  # (N, C, H*W, 1) copies side by side -> (N, C, H, W*times)
        copies = [x.reshape(n, c, h * w, 1) for _ in range(times)]
        return torch.cat(copies, 3).reshape(n, c, h, w * times)
    copies = [x.reshape(n * c, h, 1, w) for _ in range(times)]  # stacked row by row -> (N, C, H*times, W)
    return torch.cat(copies, 2).reshape(n, c, h * times, w)


torch.fx.wrap("nearest_copy")


def _quantized(graph: torch.fx.GraphModule, calibration: list[torch.Tensor], batch_size: int) -> torch.fx.GraphModule:
    """`graph` through PT2E static int8 quantization for XNNPACK, calibrated on every image of `calibration`
    (stacked to the batch `graph` was exported at)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if not calibration:
        raise ValueError("executorch int8 needs at least one calibration image")
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for batch in stacked(calibration, batch_size):
            prepared(batch)
    return convert_pt2e(prepared)


def load(path: Path, threads: int | None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """The program at `path` in ExecuTorch's runtime: run(NCHW float32 array) -> its outputs as float32 arrays.
    `threads` sizes ExecuTorch's process-wide thread pool (which XNNPACK uses); that is possible only until the
    first program runs in this process, a later different count raises ValueError."""
    from executorch.runtime import Runtime

    if threads is not None and threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    program = Runtime.get().load_program(Path(path))
    loaded: list = []  # the method, initialised on the first call

    def run(x: np.ndarray) -> list[np.ndarray]:
        if not loaded:
            if threads is not None and thread_count() != threads:
                _resize_pool(threads)
            method = program.load_method("forward")
            if method is None:
                raise ValueError(f"{path}: no 'forward' method in this ExecuTorch program")
            loaded.append(method)
            _POOL_IN_USE[0] = True
        outputs = loaded[0].execute([torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))])
        return [o.detach().numpy().astype(np.float32, copy=False) for o in outputs]

    return run


_POOL_IN_USE = [False]  # whether an XNNPACK method holds ExecuTorch's thread pool in this process


def _resize_pool(threads: int) -> None:
    from executorch.extension.pybindings import portable_lib

    if _POOL_IN_USE[0]:
        raise ValueError(
            f"ExecuTorch's thread pool is process-wide and already runs programs with {thread_count()} threads; "
            f"it cannot be resized to {threads} in this process"
        )
    portable_lib._unsafe_reset_threadpool(threads)


def thread_count() -> int:
    """The size of ExecuTorch's process-wide thread pool, which XNNPACK runs on."""
    from executorch.extension.pybindings import portable_lib

    return int(portable_lib._threadpool_get_thread_count())


def files(path: Path) -> list[Path]:
    """The export is one self-contained file (weights inside)."""
    return [Path(path)]


def notes(path: Path) -> list[str]:
    """What the file holds: which ops are not delegated to XNNPACK, and the precision of its convolutions."""
    plan, payloads = _read_program(Path(path))
    outside = {k: v for k, v in plan.items() if k != "executorch_call_delegate"}
    if not payloads:
        said = ["no op delegated to XNNPACK"]
    elif outside:
        said = ["not delegated: " + ", ".join(f"{op} (x{n})" for op, n in sorted(outside.items()))]
    else:
        said = ["every op delegated to XNNPACK"]
    precision = Counter[str]()
    for payload in payloads:
        precision.update(_layer_precisions(payload))
    int8, fp32 = precision["int8"], precision["fp32"]
    said.append(f"int8: {int8} convs/linears, {fp32} kept fp32" if int8 else "weights fp32")
    return said


def _read_program(path: Path) -> tuple[Counter[str], list[bytes]]:
    """The operators the program calls outside delegates (name -> calls) and its XNNPACK payloads."""
    # no public API reads a program's operator table back; this is the reader ExecuTorch's own tools use
    from executorch.exir._serialize._program import deserialize_pte_binary  # noqa: PLC2701

    program = deserialize_pte_binary(path.read_bytes()).program
    plan = program.execution_plan[0]
    calls: Counter[str] = Counter()
    for chain in plan.chains:
        for instruction in chain.instructions:
            op_index = getattr(instruction.instr_args, "op_index", None)
            if op_index is not None:
                op = plan.operators[op_index]
                calls[f"{op.name}.{op.overload}" if op.overload else op.name] += 1
            elif hasattr(instruction.instr_args, "delegate_index"):
                calls["executorch_call_delegate"] += 1
    payloads = [
        bytes(program.backend_delegate_data[d.processed.index].data) for d in plan.delegates if d.id == "XnnpackBackend"
    ]
    return calls, payloads


def _layer_precisions(payload: bytes) -> Counter[str]:
    """ "int8"/"fp32" -> the number of convolutions and fully connected layers of one XNNPACK graph whose weights
    have that precision, read from its flatbuffer with the flatc and the schema ExecuTorch ships."""
    import executorch.exir

    root = Path(executorch.exir.__file__).parent.parent
    start, size = int.from_bytes(payload[10:14], "little"), int.from_bytes(payload[14:18], "little")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "graph.bin").write_bytes(payload[start : start + size])
        schema = root / "backends/xnnpack/serialization/schema.fbs"
        flatc = [str(root / "data/bin/flatc"), "--json", "--strict-json", "--raw-binary", "-o", tmp]
        subprocess.run([*flatc, str(schema), "--", str(Path(tmp) / "graph.bin")], check=True, capture_output=True)
        text = (Path(tmp) / "graph.json").read_text()
    graph = json.loads(re.sub(r"(:\s*)(-?)inf\b", r"\1\2Infinity", re.sub(r"(:\s*)-?nan\b", r"\1NaN", text)))
    dtypes = {}
    for value in graph["xvalues"]:
        tensor = value["xvalue_union"].get("tensor_value", value["xvalue_union"])
        dtypes[tensor.get("id_out", 0)] = tensor.get("datatype", "")  # flatc leaves out zeros
    found: Counter[str] = Counter()
    for node in graph["xnodes"]:
        if node["xnode_union_type"] in ("XNNConv2d", "XNNDepthwiseConv2d", "XNNFullyConnected"):
            weight = dtypes.get(node["xnode_union"].get("filter_id", 0), "")
            found["int8" if weight in ("xnn_datatype_qcint8", "xnn_datatype_qint8") else "fp32"] += 1
    return found
