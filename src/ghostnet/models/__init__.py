"""The backbones and the one registry that builds every task's models: GhostNet V1/V2/V3 and the paper's CIFAR
models here; detectors, segmenters and face nets register from their task packages (``ghostnet.tasks``)."""

from .cifar import VGG, CifarResNet, ghost_resnet56, ghost_vgg16, resnet56, vgg16
from .ghostnet import GHOSTNET_STAGES, GhostNet, ghostnet, ghostnet_050, ghostnet_100, ghostnet_130
from .ghostnetv2 import ghostnetv2, ghostnetv2_100, ghostnetv2_130, ghostnetv2_160
from .ghostnetv3 import ghostnetv3, ghostnetv3_050, ghostnetv3_100, ghostnetv3_130, ghostnetv3_160
from .registry import ModelEntry, ModelSpec, create_model, list_models, model_entry, model_spec, register_model

__all__ = [
    "VGG",
    "CifarResNet",
    "ghost_resnet56",
    "ghost_vgg16",
    "resnet56",
    "vgg16",
    "GHOSTNET_STAGES",
    "GhostNet",
    "ModelEntry",
    "ModelSpec",
    "create_model",
    "ghostnet",
    "ghostnet_050",
    "ghostnet_100",
    "ghostnet_130",
    "ghostnetv2",
    "ghostnetv2_100",
    "ghostnetv2_130",
    "ghostnetv2_160",
    "ghostnetv3",
    "ghostnetv3_050",
    "ghostnetv3_100",
    "ghostnetv3_130",
    "ghostnetv3_160",
    "list_models",
    "model_entry",
    "model_spec",
    "register_model",
]
