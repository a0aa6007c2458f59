"""What `ghostnet bench` times: the forms of one model (eager, BN folded + channels_last, bf16, CUDA graph,
compiled, ONNX Runtime fp32 and int8) as callables on an NCHW batch, which forms each model gets, and the peers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nn.surgery import fuse_bn
from .export import export_model, onnx_session

__all__ = [
    "ReportFailure",
    "TimedForm",
    "model_settings",
    "onnx_forms",
    "peer_builders",
    "planned_forms",
    "as_trained",
    "build_ours",
    "concat_free_form",
    "error_line",
    "concat_free_name",
    "is_ghost_pair",
    "ghostified_torchvision",
    "torch_forms",
]

ReportFailure = Callable[[str, str, Exception], None]  # (model, form, error): a form that could not be made or run


def error_line(e: BaseException) -> str:
    """How a failed form or model is reported: the error's type and the first line of its message."""
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


@dataclass
class TimedForm:
    """One model in one form, ready to time: `fn` takes a tensor, or with `numpy_input` an array, of `in_chans`
    channels; `runtime` is what runs it (``torch``, ``ort``, or an edge runtime's name)."""

    model: str
    form: str
    fn: Callable[[Any], Any]
    macs: int
    numpy_input: bool
    in_chans: int = 3
    runtime: str = "torch"


GHOSTIFY_PREFIX = "ghostify:"  # ``ghostify:resnet50``: torchvision's resnet50 through `nn.ghostify`, timed against it
CIFAR_BASELINES = {"ghost_resnet56": "resnet56", "ghost_vgg16": "vgg16"}  # our Ghost CIFAR models' own baselines


def concat_free_name(model_name: str) -> str:
    """The name `ghostnet bench --concat-free` times ours' concat-free deploy form under."""
    return f"{model_name} concat-free"


def concat_free_form(model: nn.Module, name: str) -> nn.Module:
    """`model`'s concat-free deploy form (`nn.ghost_deploy_form`); refuses a model where it would change nothing."""
    from ..nn.ghost_deploy import ghost_deploy_form

    form = ghost_deploy_form(model.eval())
    if not form.ghost_deploy_modules:
        raise ValueError(f"{name}: no Ghost module of this model can be rewritten without its concat")
    return form


def is_ghost_pair(model_name: str) -> bool:
    """Whether `model_name` is a Ghost model timed against the network it was made from (Ghost-ResNet-56 /
    ResNet-56, Ghost-VGG-16 / VGG-16, ``ghostify:NAME`` / NAME): then that baseline gets every form ours gets."""
    return model_name in CIFAR_BASELINES or model_name.startswith(GHOSTIFY_PREFIX)


def ghostified_torchvision(model_name: str) -> str | None:
    """The torchvision model that ``ghostify:NAME`` names (``NAME``), or None for any other model name.

    Raises:
        ValueError: torchvision has no classification model called ``NAME``.
    """
    if not model_name.startswith(GHOSTIFY_PREFIX):
        return None
    import torchvision.models as tvm

    name = model_name[len(GHOSTIFY_PREFIX) :]
    known = tvm.list_models(module=tvm)
    if name not in known:
        raise ValueError(f"torchvision has no classification model {name!r} to ghostify (e.g. ghostify:resnet50)")
    return name


def build_ours(model_name: str) -> nn.Module:
    """Our model to time: a registered classifier, a segmenter (21 classes, as VOC) returning its logits, or
    ``ghostify:NAME``, torchvision's NAME with its convs made Ghost modules (`ghostify`, s=2, d=3)."""
    from ..models import create_model
    from ..nn.ghostify import ghostify
    from ..tasks.segment.models import SEGMENTERS, create_segmenter
    from ..tasks.segment.predict import SegmentationLogits

    if model_name in SEGMENTERS:
        return SegmentationLogits(create_segmenter(model_name, 21))
    if (tv_name := ghostified_torchvision(model_name)) is not None:
        import torchvision.models as tvm

        return ghostify(tvm.get_model(tv_name), inplace=True)
    return create_model(model_name)


def _segmentation_peers(model_name: str) -> dict[str, Callable[[], nn.Module]]:
    """Beside one of our segmenters: our other head, then torchvision's LR-ASPP and DeepLabV3 on MobileNetV3-Large
    (21 classes, output stride 16, no auxiliary head), all returning their logits."""
    from torchvision.models import segmentation as tvs

    from ..tasks.segment.predict import SegmentationLogits

    other = "deeplabv3_ghostnet_100" if model_name.startswith("lraspp") else "lraspp_ghostnet_100"
    return {
        other: lambda: build_ours(other),
        "tv lraspp_mobilenet_v3_large": lambda: SegmentationLogits(
            tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
        ),
        "tv deeplabv3_mobilenet_v3_large": lambda: SegmentationLogits(
            tvs.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, aux_loss=False)
        ),
    }


def peer_builders(model_name: str = "ghostnet_100", *, inference: bool = True) -> dict[str, Callable[[], nn.Module]]:
    """The peers to time beside `model_name`, by name: timm's model of the same name (its GhostNet 1.0x when timm
    has no such model; with `inference`, a GhostNetV3 in its folded inference form) and RepGhostNet 1.0x (folded
    likewise), then torchvision's models; beside a segmenter,
    the segmentation peers (`_segmentation_peers`); beside Ghost-ResNet-56 / Ghost-VGG-16, ResNet-56 / VGG-16;
    beside ``ghostify:NAME``, torchvision's NAME. Without `inference`, every peer is built as it is trained."""
    import torchvision.models as tvm

    from ..tasks.segment.models import SEGMENTERS

    if model_name in SEGMENTERS:
        return _segmentation_peers(model_name)
    if model_name in CIFAR_BASELINES:  # a Ghost model against the model it was made from, nothing else
        return {CIFAR_BASELINES[model_name]: lambda: build_ours(CIFAR_BASELINES[model_name])}
    if (tv_name := ghostified_torchvision(model_name)) is not None:
        return {f"tv {tv_name}": lambda: tvm.get_model(tv_name)}
    peers: dict[str, Callable[[], nn.Module]] = {}
    try:
        import timm

        form = _timm_inference_form if inference else (lambda m: m)
        timm_name = model_name if model_name in timm.list_models("ghostnet*") else "ghostnet_100"
        peers[f"timm {timm_name}"] = lambda: form(timm.create_model(timm_name))
        if "repghostnet_100" in timm.list_models("repghostnet*"):  # GhostNet without the concat, folded
            peers["timm repghostnet_100"] = lambda: form(timm.create_model("repghostnet_100"))
    except ImportError:
        pass
    peers["tv mobilenet_v3_large"] = lambda: tvm.mobilenet_v3_large()
    peers["tv mobilenet_v2"] = lambda: tvm.mobilenet_v2()
    peers["tv resnet18"] = lambda: tvm.resnet18()
    return peers


@torch.no_grad()
def as_trained(model: nn.Module, size: int | tuple[int, int]) -> nn.Module:
    """`model` in eval mode with BN statistics measured on random batches, as after training: untrained
    statistics let a deep multi-branch model's activations grow to 1e7, where no export check can pass."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the passes below
    model.train()
    hw = (size, size) if isinstance(size, int) else size
    for _ in range(2):
        model(torch.randn(4, 3, *hw))
    return model.eval()


def _timm_inference_form(model: nn.Module) -> nn.Module:
    """timm's model as it is deployed: re-parameterisable branches (GhostNetV3) folded."""
    from timm.utils.model import reparameterize_model

    return reparameterize_model(model.eval())


def _cl(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _with_bf16(fn: Callable[[torch.Tensor], Any], device_type: str) -> Callable[[torch.Tensor], Any]:
    """`fn` under bf16 autocast (no weight-cast cache, so the form can also be captured in a CUDA graph)."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False):
            return fn(x)

    return run


def _cuda_graphed(fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
    """`fn` captured once per input shape into a CUDA graph and replayed: one launch instead of one per kernel.

    The input is copied into the graph's static buffer and the graph's own output tensor is returned (it is
    overwritten by the next replay), which is what a serving loop does.
    """
    graphs: dict[tuple[int, ...], tuple[Any, torch.Tensor, Any]] = {}

    def run(x: torch.Tensor) -> Any:
        key = tuple(x.shape)
        if key not in graphs:
            static_x = x.clone()
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):  # warm up on a side stream, as capture requires
                for _ in range(3):
                    fn(static_x)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_y = fn(static_x)
            graphs[key] = (graph, static_x, static_y)
        graph, static_x, static_y = graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_y

    return run


def torch_forms(
    model: nn.Module, device: str, *, deploy: bool = True, compile: bool = False, bf16: bool = False
) -> dict[str, Callable[[torch.Tensor], Any]]:
    """The PyTorch forms of one model to time: name -> callable on an NCHW batch.

    ``eager`` is the model as built (fp32). With `deploy`: ``fused+cl`` (BN folded, channels_last, fp32; ``cl``
    where a BN cannot be folded), with `bf16` the same under bf16 autocast, and on CUDA that form replayed
    from a CUDA graph (``... graph``). With `compile`: ``compiled``, the deploy form through `torch.compile`
    (bf16 if `bf16`; on CUDA in "reduce-overhead" mode, which replays the compiled kernels from CUDA graphs).
    """
    forms: dict[str, Callable[[torch.Tensor], Any]] = {"eager": model}
    if not deploy:
        return forms
    try:
        lean, name = fuse_bn(model), "fused+cl"
    except ValueError:  # a BN that no conv feeds directly (timm's BatchNormAct2d, say): time it unfolded
        lean, name = copy.deepcopy(model), "cl"
    lean = lean.to(memory_format=torch.channels_last)
    fp32 = lambda x: lean(_cl(x))  # noqa: E731
    cuda = device.startswith("cuda")
    names = _deploy_names(name, cuda, compile, bf16)
    forms[names["fp32"]] = fp32
    best = _with_bf16(fp32, "cuda" if cuda else "cpu") if bf16 else fp32
    if "bf16" in names:
        forms[names["bf16"]] = best
    if "graph" in names:
        forms[names["graph"]] = _cuda_graphed(best)
    if "compiled" in names:
        compiled = torch.compile(lean, mode="reduce-overhead" if cuda else None)
        run = lambda x: compiled(_cl(x))  # noqa: E731
        forms[names["compiled"]] = _with_bf16(run, "cuda" if cuda else "cpu") if bf16 else run
    return forms


def _deploy_names(base: str, cuda: bool, compile: bool, bf16: bool) -> dict[str, str]:
    """The names of a model's deploy forms by role (fp32, bf16, graph, compiled); `base` is ``fused+cl`` or ``cl``."""
    names = {"fp32": base}
    if bf16:
        names["bf16"] = f"{base} bf16"
    if cuda:
        names["graph"] = f"{base}{' bf16' if bf16 else ''} graph"
    if compile:
        names["compiled"] = "compiled bf16" if bf16 else "compiled"
    return names


def model_settings(ours: bool, cuda: bool, compile: bool) -> dict[str, bool]:
    """Which PyTorch forms a model gets (`torch_forms`'s `deploy` and `compile`): ours (and the baseline of a Ghost
    pair, `is_ghost_pair`) every one; peers only eager on a CPU (with ONNX Runtime beside it), and the same forms
    as ours on CUDA."""
    return {"deploy": ours or cuda, "compile": compile and (ours or cuda)}


def planned_forms(
    ours: bool, device: str, compile: bool, bf16: bool, onnx: bool, int8: bool, pytorch: bool = True
) -> set[str]:
    """The form names a run will time for one model (ours or a peer), as `torch_forms` (if `pytorch`) and the ONNX
    Runtime forms name them; both ``fused+cl`` and ``cl`` are listed, since which one a model gets is known only
    once its BN folding has been tried. (The edge runtimes' forms: `bench_runtimes.edge_form_names`.)"""
    cuda = device.startswith("cuda")
    settings = model_settings(ours, cuda, compile)
    forms = {"eager"} if pytorch else set()
    if pytorch and settings["deploy"]:
        for base in ("fused+cl", "cl"):
            forms |= set(_deploy_names(base, cuda, settings["compile"], bf16).values())
    if onnx and not cuda:
        forms |= {"ort-fp32", "ort-int8"} if ours and int8 else {"ort-fp32"}
    return forms


def onnx_forms(
    name: str,
    model: nn.Module,
    ours: bool,
    tmp: Path,
    *,
    size: int | tuple[int, int],
    threads: int,
    int8: bool,
    fail: ReportFailure,
    in_chans: int = 3,
    calibration: list[np.ndarray] | None = None,
) -> dict[str, Callable[[np.ndarray], Any]]:
    """A model's ONNX Runtime forms (name -> callable on an NCHW array): ``ort-fp32``, and for ours ``ort-int8``
    if `int8`, calibrated on `calibration` (batches of real images) or else on random inputs; the ONNX files go
    under `tmp`. One that cannot be made is reported to `fail` and left out."""
    path = tmp / f"{name.replace(' ', '_')}.onnx"
    size = (size, size) if isinstance(size, int) else size
    try:  # ours is exported BN-folded (as `ghostnet classify export --fuse`); peers as they are (ORT folds BN itself)
        export_model(fuse_bn(model.cpu()) if ours else model.cpu(), path, "onnx", size, in_chans, dynamic_batch=True)
        fp32 = onnx_session(path, threads)
    except Exception as e:  # noqa: BLE001
        fail(name, "ort-fp32", e)
        return {}
    forms = {"ort-fp32": _ort_call(fp32)}
    if int8 and ours:
        try:
            quantized = onnx_session(_quantize(path, tmp, size, in_chans, calibration), threads)
        except Exception as e:  # noqa: BLE001
            fail(name, "ort-int8", e)
            return forms
        forms["ort-int8"] = _ort_call(quantized)
    return forms


def _ort_call(session: Any) -> Callable[[np.ndarray], Any]:
    """One run of an ONNX Runtime session on an NCHW array."""
    return lambda a: session.run(None, {"input": a})


def _quantize(
    fp32: Path, tmp: Path, size: tuple[int, int], in_chans: int, calibration: list[np.ndarray] | None
) -> Path:
    """int8 as `ghostnet classify quantize` makes it, calibrated on `calibration`, or else on random inputs: right for
    timing, not for accuracy."""
    from .quantize import quantize_onnx

    out = tmp / "int8.onnx"
    rng = (np.random.default_rng(i).standard_normal((1, in_chans, *size)).astype(np.float32) for i in range(4))
    quantize_onnx(fp32, out, rng if calibration is None else calibration)
    return out
