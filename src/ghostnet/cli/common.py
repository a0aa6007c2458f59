"""What every command shares: the usage-error type and argparse value checks."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["CommandParser", "HelpFormatter", "UsageError", "positive_int", "positive_float"]


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
