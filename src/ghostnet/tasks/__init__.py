"""The tasks, one package each: classification (`classify`), detection (`detect`), semantic segmentation
(`segment`) and face recognition (`face`). A task package holds everything particular to its task (config,
`Task`, data pieces, metrics, prediction and export specifics, heads, commands) and exposes one `TaskSpec`;
the generic layers below (`nn`, `models`, `data`, `engine`, `deploy`, `bench`, `analysis`) import no task.

Importing this package registers every task's models in the one model registry.
"""

from __future__ import annotations

from .classify import SPEC as CLASSIFY
from .detect import SPEC as DETECT
from .face import SPEC as FACE
from .segment import SPEC as SEGMENT
from .spec import Mode, TaskSpec

__all__ = ["TASKS", "Mode", "TaskSpec", "task_spec"]

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (CLASSIFY, DETECT, SEGMENT, FACE)}


def task_spec(name: str) -> TaskSpec:
    """The `TaskSpec` of task `name`; `ValueError` naming the tasks when there is none."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(TASKS)}")
    return TASKS[name]
