"""What every command shares: the usage-error type, argparse value checks and help format, and the train mode."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..engine.config import RunConfig

__all__ = ["CommandParser", "HelpFormatter", "UsageError", "positive_float", "positive_int", "run_train_command"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with each option's default, except the uninformative ones (None, False, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: its --help shows the options' defaults (`HelpFormatter`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit code 2."""


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def run_train_command(args: argparse.Namespace, config_cls: type[RunConfig], train_fn: Callable[[Any], Any]) -> int:
    """Every task's train mode: resolve the config (recipe/YAML file, then the options given) and train."""
    from ..engine.config import config_from_args

    train_fn(config_from_args(args, config_cls, args.config))
    return 0
