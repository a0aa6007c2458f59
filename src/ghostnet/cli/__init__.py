"""The `ghostnet` command line: ``ghostnet <task> <mode>`` generated from the task specs (`ghostnet.tasks`), and
the model-level commands (``list``, ``profile``, ``ghostify``, ``ablate``, ``visualize``, ``bench``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from ..tasks import TASKS, TaskSpec
from ..tasks.options import CommandParser, UsageError

__all__ = ["main", "build_parser", "UsageError"]


def build_parser() -> argparse.ArgumentParser:
    from . import bench, models

    parser = argparse.ArgumentParser(
        prog="ghostnet",
        description="GhostNet: build, train, analyse, compress and deploy GhostNet models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CommandParser)
    sub.required = True
    for spec in TASKS.values():
        _add_task(sub, spec)
    models.add_parsers(sub)
    bench.add_parsers(sub)
    return parser


def _add_task(sub: argparse._SubParsersAction, spec: TaskSpec) -> None:
    """``ghostnet <task>`` with one sub-command per mode; ``args.command`` reads ``<task> <mode>`` in errors."""
    task = sub.add_parser(spec.name, help=spec.help, description=f"{spec.help[0].upper()}{spec.help[1:]}.")
    modes = task.add_subparsers(dest="mode", metavar="MODE", parser_class=CommandParser)
    modes.required = True
    for mode in spec.modes:
        p = modes.add_parser(mode.name, help=mode.help, description=mode.description)
        mode.arguments(p)
        p.set_defaults(func=mode.run, command=f"{spec.name} {mode.name}")


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    from ..engine.loop import TrainingDiverged
    from ..models.checkpoint import CheckpointWriteError

    try:
        return func(args)
    except ValueError as e:  # bad input (UsageError, CheckpointError, DatasetError, RunDirError are ValueErrors)
        parser.exit(2, f"ghostnet {args.command}: error: {e}\n")
    except CheckpointWriteError as e:  # disk full or an I/O error while saving or exporting: not a crash
        print(f"ghostnet {args.command}: error: {e}", file=sys.stderr)
        return 1
    except TrainingDiverged as e:
        print(f"ghostnet {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"interrupted {e}" if str(e) else "interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
