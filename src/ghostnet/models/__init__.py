"""Registered models and the registry that builds them."""

from .cifar import VGG, CifarResNet, ghost_resnet56, ghost_vgg16, resnet56, vgg16
from .ghostnet import GHOSTNET_STAGES, GhostNet, ghostnet, ghostnet_050, ghostnet_100, ghostnet_130
from .registry import ModelEntry, create_model, list_models, model_entry, model_spec, register_model

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
    "create_model",
    "ghostnet",
    "ghostnet_050",
    "ghostnet_100",
    "ghostnet_130",
    "list_models",
    "model_entry",
    "model_spec",
    "register_model",
]
