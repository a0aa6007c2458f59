"""GhostNet in PyTorch: Ghost modules, GhostNet at any width, training, complexity analysis and deployment."""

from .models import GhostNet, create_model, list_models
from .models.checkpoint import CheckpointError, load_weights, save_weights
from .nn import GhostBottleneck, GhostModule, SqueezeExcite, ghostify, make_divisible
from .tasks import TASKS  # registers every task's models (detectors, segmenters, face nets)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "GhostBottleneck",
    "GhostModule",
    "GhostNet",
    "SqueezeExcite",
    "TASKS",
    "create_model",
    "ghostify",
    "list_models",
    "load_weights",
    "make_divisible",
    "save_weights",
]
