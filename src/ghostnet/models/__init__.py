"""Registered models and the registry that builds them."""

from .ghostnet import GHOSTNET_STAGES, GhostNet, ghostnet, ghostnet_050, ghostnet_100, ghostnet_130
from .registry import ModelEntry, create_model, list_models, model_entry, register_model

__all__ = [
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
    "register_model",
]
