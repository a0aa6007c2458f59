"""The training engine: one loop (`loop`) with a part per task (`classification`, `detection`), the config
dataclasses, run folders, distributed helpers, evaluation of checkpoints and the ablation sweep.

    from ghostnet.engine import load_config, train
    train(load_config("digits", {"epochs": 3}))
"""

from .classification import ClassificationTask, train
from .config import DetectConfig, TrainConfig, load_config
from .loop import TrainingDiverged, run_training
from .runs import RunDirError
from .task import Task

__all__ = [
    "ClassificationTask",
    "DetectConfig",
    "RunDirError",
    "Task",
    "TrainConfig",
    "TrainingDiverged",
    "load_config",
    "run_training",
    "train",
]
