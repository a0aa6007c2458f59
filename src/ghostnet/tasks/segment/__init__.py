"""Semantic segmentation: LR-ASPP and DeepLabV3 heads on a GhostNet backbone, on VOC, Cityscapes or image/mask folders.

Its models are registered under the task tag ``segment`` (``list_models(task="segment")``); its commands are
``ghostnet segment predict <mode>`` (`SPEC`).
"""

from ..spec import TaskSpec
from . import models as models  # registers the task's models
from .cli import MODES
from .config import SegmentConfig
from .task import SegmentationTask, train_segmenter

__all__ = ["SPEC", "SegmentConfig", "SegmentationTask", "train_segmenter"]

SPEC = TaskSpec("segment", "train, evaluate, run and export LR-ASPP / DeepLabV3 on GhostNet", SegmentConfig, MODES)
