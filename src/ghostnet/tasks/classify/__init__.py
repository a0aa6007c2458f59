"""Image classification: GhostNet V1/V2/V3 and the paper's CIFAR models trained, evaluated, used on image files, exported and quantized.

Its models are registered under the task tag ``classify`` (``list_models(task="classify")``); its commands are
``ghostnet classify <mode>`` (`SPEC`).
"""

from ..spec import TaskSpec
from .cli import MODES
from .config import TrainConfig, load_recipe
from .task import ClassificationTask, train

__all__ = ["SPEC", "ClassificationTask", "TrainConfig", "load_recipe", "train"]

SPEC = TaskSpec("classify", "train, evaluate, predict with, export and quantize image classifiers", TrainConfig, MODES)
