"""What a task package declares: its `TaskSpec` (name, config class, models, modes), from which the command line
``ghostnet <task> <mode>`` is generated."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from ..engine.config import RunConfig
from ..models.registry import TaskName, list_models

__all__ = ["Mode", "TaskSpec"]


@dataclass(frozen=True)
class Mode:
    """One command of a task (``ghostnet <task> <name>``): its help, its arguments and what it runs.

    `run` takes the parsed arguments and returns the exit code; bad input is raised as `ValueError`, which the
    command line prints as one line with exit code 2.
    """

    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class TaskSpec:
    """A task: its name (the registry's task tag), the config class of its training runs, and its modes."""

    name: TaskName
    help: str
    config: type[RunConfig]
    modes: tuple[Mode, ...]

    def models(self) -> list[str]:
        """The registered models built for this task."""
        return list_models(task=self.name)
