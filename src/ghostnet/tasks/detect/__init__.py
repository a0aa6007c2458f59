"""Object detection: RetinaNet and Faster R-CNN on a GhostNet + FPN backbone, on COCO-format data.

Its models are registered under the task tag ``detect`` (``list_models(task="detect")``); its commands are
``ghostnet detect predict <mode>`` (`SPEC`).
"""

from ..spec import TaskSpec
from . import models as models  # registers the task's models
from .cli import MODES
from .config import DetectConfig
from .task import DetectionTask, train_detector

__all__ = ["SPEC", "DetectConfig", "DetectionTask", "train_detector"]

SPEC = TaskSpec(
    "detect", "train, evaluate, run and export RetinaNet / Faster R-CNN on GhostNet + FPN", DetectConfig, MODES
)
