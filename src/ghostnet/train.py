"""Deprecated path, kept so that existing imports work: use `ghostnet.engine` instead."""

import warnings

from .engine.classification import ClassificationTask, build_loaders, build_model_for_data, evaluate, subset, train
from .engine.loop import Task, TrainingDiverged, lr_factor, param_groups, run_training

__all__ = [
    "ClassificationTask",
    "Task",
    "TrainingDiverged",
    "build_loaders",
    "build_model_for_data",
    "evaluate",
    "lr_factor",
    "param_groups",
    "run_training",
    "subset",
    "train",
]

warnings.warn("ghostnet.train is deprecated; import from ghostnet.engine", DeprecationWarning, stacklevel=2)
