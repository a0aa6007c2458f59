"""The models `ghostnet bench` measures: ours (a registered model, a checkpoint's, ``ghostify:NAME``), its
concat-free deploy form, and the peers each is timed against."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Builders = dict[str, Callable[[], nn.Module]]
GHOSTIFY_PREFIX = "ghostify:"  # ``ghostify:resnet50``: torchvision's resnet50 through `nn.ghostify`, timed against it
CIFAR_BASELINES = {"ghost_resnet56": "resnet56", "ghost_vgg16": "vgg16"}  # our Ghost CIFAR models' own baselines


def build_ours(model_name: str) -> nn.Module:
    """Our model to time: a registered model, a segmenter returning its logits, or ``ghostify:NAME`` (torchvision's
    NAME with its convs made Ghost modules)."""
    from ..models import create_model
    from ..nn.ghostify import ghostify

    if (segmenter := task_model(model_name)) is not None:
        return segmenter
    if (tv_name := ghostified_torchvision(model_name)) is not None:
        import torchvision.models as tvm

        return ghostify(tvm.get_model(tv_name), inplace=True)
    return create_model(model_name)


# Segmenters are found through the registry's task tag: the bench imports no task.
def task_model(model_name: str) -> nn.Module | None:
    """A segmenter (21 classes, as VOC) returning its logits; None for any other model."""
    from ..models import create_model, list_models
    from ..nn.surgery import SegmentationLogits

    segmenters = list_models(task="segment")
    return SegmentationLogits(create_model(model_name, num_classes=21)) if model_name in segmenters else None


def segment_peers(model_name: str) -> Builders | None:
    """Beside one of our segmenters: our other head, then torchvision's LR-ASPP and DeepLabV3 on MobileNetV3-Large
    (21 classes, no auxiliary head), all returning their logits; None beside any other model."""
    from torchvision.models import segmentation as tvs

    from ..models import list_models
    from ..nn.surgery import SegmentationLogits

    if model_name not in list_models(task="segment"):
        return None
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


def default_baseline(model_name: str, peers: bool) -> str:
    """The baseline a model's ratios are taken against when none is named ("" = the report's own choice)."""
    return "tv lraspp_mobilenet_v3_large / eager" if peers and segment_peers(model_name) is not None else ""


def ghostified_torchvision(model_name: str) -> str | None:
    """The torchvision model that ``ghostify:NAME`` names (``NAME``), or None for any other model name; refuses a
    NAME torchvision has no classification model for."""
    if not model_name.startswith(GHOSTIFY_PREFIX):
        return None
    import torchvision.models as tvm

    name = model_name[len(GHOSTIFY_PREFIX) :]
    if name not in tvm.list_models(module=tvm):
        raise ValueError(f"torchvision has no classification model {name!r} to ghostify (e.g. ghostify:resnet50)")
    return name


def is_ghost_pair(model_name: str) -> bool:
    """Whether `model_name` is a Ghost model timed against the network it was made from (Ghost-ResNet-56 /
    ResNet-56, Ghost-VGG-16 / VGG-16, ``ghostify:NAME`` / NAME): then that baseline gets every form ours gets."""
    return model_name in CIFAR_BASELINES or model_name.startswith(GHOSTIFY_PREFIX)


def peer_builders(model_name: str = "ghostnet_100", *, inference: bool = True) -> Builders:
    """The peers beside `model_name`, by name: a segmenter's (`segment_peers`), a Ghost pair's baseline, or timm's
    model of the same name (its GhostNet 1.0x when timm has no such model) and RepGhostNet 1.0x, then torchvision's
    MobileNetV3-Large, MobileNetV2 and ResNet-18. With `inference`, timm's re-parameterisable models are folded."""
    import torchvision.models as tvm

    if (segment := segment_peers(model_name)) is not None:
        return segment
    if model_name in CIFAR_BASELINES:
        return {CIFAR_BASELINES[model_name]: lambda: build_ours(CIFAR_BASELINES[model_name])}
    if (tv_name := ghostified_torchvision(model_name)) is not None:
        return {f"tv {tv_name}": lambda: tvm.get_model(tv_name)}
    peers: Builders = {}
    try:
        import timm
        from timm.utils.model import reparameterize_model

        form = (lambda m: reparameterize_model(m.eval())) if inference else (lambda m: m)
        timm_name = model_name if model_name in timm.list_models("ghostnet*") else "ghostnet_100"
        peers[f"timm {timm_name}"] = lambda: form(timm.create_model(timm_name))
        if "repghostnet_100" in timm.list_models("repghostnet*"):  # GhostNet without the concat, folded
            peers["timm repghostnet_100"] = lambda: form(timm.create_model("repghostnet_100"))
    except ImportError:
        pass
    for name in ("mobilenet_v3_large", "mobilenet_v2", "resnet18"):
        peers[f"tv {name}"] = lambda name=name: tvm.get_model(name)  # type: ignore[misc]
    return peers


def concat_free_form(model: nn.Module, name: str) -> nn.Module:
    """`model`'s concat-free deploy form (`nn.ghost_deploy_form`); refuses a model where it would change nothing."""
    from ..nn.ghost_deploy import ghost_deploy_form

    form = ghost_deploy_form(model.eval())
    if not form.ghost_deploy_modules:
        raise ValueError(f"{name}: no Ghost module of this model can be rewritten without its concat")
    return form


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
