"""The training engine every task shares: one loop (`loop`) over a `Task`, the config base (`config`), run
folders, distributed helpers, rebuilding a model from a checkpoint, the epoch report. Tasks live in
`ghostnet.tasks`; this package imports none of them.

    from ghostnet.tasks.classify import load_recipe, train
    train(load_recipe("digits", {"epochs": 3}))
"""

from .config import RunConfig, load_config
from .loop import TrainingDiverged, run_training
from .runs import RunDirError
from .task import Task

__all__ = [
    "RunConfig",
    "RunDirError",
    "Task",
    "TrainingDiverged",
    "load_config",
    "run_training",
]
