"""GhostNet in PyTorch: Ghost modules, GhostNet at any width, training, complexity analysis and deployment."""

from .checkpoint import CheckpointError, load_weights, save_weights
from .layers import GhostBottleneck, GhostModule, SqueezeExcite, make_divisible
from .models import GhostNet, create_model, list_models

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "GhostBottleneck",
    "GhostModule",
    "GhostNet",
    "SqueezeExcite",
    "create_model",
    "list_models",
    "load_weights",
    "make_divisible",
    "save_weights",
]
