"""Training configuration: one dataclass per task over a shared base, loadable from YAML, overridable from
the command line. Each field's help text is its ``option(..., help)`` metadata: ``--help`` reads it from there."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

C = TypeVar("C", bound="RunConfig")

__all__ = [
    "RunConfig",
    "add_config_arguments",
    "config_from_args",
    "first_failure",
    "list_recipes",
    "load_config",
    "option",
    "recipe_path",
]


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its help text: the one place the option's meaning is written (CLI --help reads it)."""
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass
class RunConfig:
    """What every training run has, whatever its task: the schedule, the optimizer, the run folder.

    Each task's config extends it (in the task's package: ``ghostnet.tasks.<task>.config``); each is loadable
    from YAML, overridable from the command line, and saved as config.yaml in every run folder. A task with
    bundled recipes (YAML files loadable by name) sets `recipes_dir`.
    """

    recipes_dir: ClassVar[Path | None] = None

    # --- data and model (every task)
    data_dir: str | None = option(None, "where to look for the data first")
    num_workers: int = option(2, "DataLoader worker processes for data read from files")
    model: str = option("ghostnet_small_050", "a registered model name (`ghostnet list`)")
    width: float | None = option(None, "width multiplier, for the models that take one (e.g. 'ghostnet')")
    init_checkpoint: str | None = option(
        None, "start from these weights (the classifier is skipped if num_classes differs)"
    )
    train_subset: int | None = option(None, "train on the first N training images only (quick, reduced experiments)")
    # --- optimisation
    epochs: int = option(10, "passes over the training split")
    batch_size: int = option(128, "global batch, split evenly across processes")
    optimizer: str = option("sgd", "sgd | adamw")
    lr: float = option(0.1, "peak learning rate for the global batch")
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(True, "Nesterov momentum (SGD)")
    weight_decay: float = option(5e-4, "L2 weight decay; not applied to BN weights and biases")
    schedule: str = option("cosine", "cosine | multistep | constant (all stepped per iteration)")
    warmup_epochs: float = option(0.0, "linear warm-up from 0, in epochs")
    milestones: list[float] = option(
        factory=lambda: [0.5, 0.75], help="multistep: when to decay, as fractions of training"
    )
    gamma: float = option(0.1, "multistep: lr factor at each milestone")
    clip_grad: float | None = option(None, "max gradient norm; None = no clipping")
    amp: str = option("none", "mixed precision: none | bf16 | fp16 (CUDA only)")
    ema_decay: float | None = option(None, "keep an EMA of the weights (e.g. 0.9998); evaluated and saved alongside")
    sync_bn: bool = option(False, "SyncBatchNorm across processes (CUDA/NCCL only)")
    # --- the run
    seed: int = option(0, "seeds weights, data order and augmentation")
    deterministic: bool = option(
        False, "deterministic kernels: with a fixed seed, runs and resumes are bit-identical on CPU"
    )
    device: str = option("auto", "auto | cpu | cuda | cuda:N")
    output_dir: str = option("runs", "where run folders are made")
    name: str | None = option(None, "run folder name; None = <data>-<model>-<time>")
    resume: bool = option(False, "continue the run OUTPUT_DIR/NAME from its newest complete checkpoint")
    overwrite: bool = option(False, "replace an existing run folder of the same name (its files are deleted)")
    save_every_steps: int = option(0, "also checkpoint every N optimizer steps (0: at the end of each epoch only)")
    eval_batch_size: int = option(256, "batch size for evaluation")
    max_steps: int | None = option(None, "stop after this many optimizer steps (smoke tests)")
    progress: bool = option(True, "progress bars")

    def __post_init__(self) -> None:
        self.validate()

    def data_name(self) -> str:
        """What the run trains on, for run-folder names and plot titles."""
        raise NotImplementedError

    def validate(self) -> None:
        """Raise `ValueError` naming the first nonsensical field."""
        _check_finite(self)
        first_failure(
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.optimizer in ("sgd", "adamw"), "optimizer must be sgd or adamw"),
            (self.schedule in ("cosine", "multistep", "constant"), "schedule must be cosine, multistep or constant"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (all(0 < m < 1 for m in self.milestones), "milestones must be fractions of training in (0, 1)"),
            (self.clip_grad is None or self.clip_grad > 0, "clip_grad must be > 0"),
            (self.amp in ("none", "bf16", "fp16"), "amp must be none, bf16 or fp16"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be in (0, 1)"),
            (self.save_every_steps >= 0, "save_every_steps must be >= 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.width is None or self.width > 0, "width must be > 0"),
            (self.train_subset is None or self.train_subset >= 1, "train_subset must be >= 1"),
            (
                self.name is None or ("/" not in self.name and self.name not in (".", "..")),
                "name must be a plain folder name",
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_finite(cfg: RunConfig) -> None:
    """Every number of the config is finite: inf or nan would train to the end and save NaN weights."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"{f.name} must be a finite number, got {value}")


def first_failure(*checks: tuple[bool, str]) -> None:
    """Raise `ValueError` with the message of the first check that fails."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def _field_types(cls: type[RunConfig]) -> dict[str, Any]:
    """The config's fields and their types (class-level settings such as `recipes_dir` are not fields)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, tp: Any) -> Any:
    """Convert a YAML or command-line value to the field's type, or raise ValueError naming the field."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is list:
        items = value if isinstance(value, list) else [v for v in str(value).replace(",", " ").split()]
        return [_coerce(name, v, args[0]) for v in items]
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if tp is str:
            if not isinstance(value, (str, int, float)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        pass
    else:
        return value
    raise ValueError(f"{name}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def load_config(cls: type[C], path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> C:
    """Defaults, then the YAML file at `path` (a recipe name or a file), then `overrides`.

    Unknown keys and wrongly typed values raise `ValueError` naming them.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = recipe_path(cls, path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{p} must hold a mapping of config fields")
        values.update(loaded)
    values.update(overrides or {})
    types_ = _field_types(cls)
    unknown = sorted(set(values) - set(types_))
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown}; known: {', '.join(types_)}")
    return cls(**{k: _coerce(k, v, types_[k]) for k, v in values.items()})


def list_recipes(cls: type[RunConfig]) -> list[str]:
    """The names of the recipes bundled with `cls`'s task (none for a task without `recipes_dir`)."""
    return sorted(p.stem for p in cls.recipes_dir.glob("*.yaml")) if cls.recipes_dir else []


def recipe_path(cls: type[RunConfig], name_or_path: str | Path) -> Path:
    """A YAML file path, or the path of one of `cls`'s bundled recipes by name (``cifar``, ``digits``, ...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = cls.recipes_dir / f"{name_or_path}.yaml" if cls.recipes_dir else None
    if bundled is not None and bundled.is_file():
        return bundled
    known = ", ".join(list_recipes(cls)) or "none for this task"
    raise ValueError(f"config {name_or_path!r} is neither a file nor a bundled recipe ({known})")


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[RunConfig], exclude: tuple[str, ...] = ()) -> None:
    """One ``--field`` option per field of `cls`, with its help and default; only the options given override."""
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default
        helptext = f.metadata.get("help", "").replace("%", "%%") + f" (default: {_show(default)})"
        flag, tp = "--" + f.name.replace("_", "-"), types_[f.name]
        if tp is bool or tp == bool | None:
            # --x / --no-x; an optional bool (None = decided automatically) stays None when neither is given
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=helptext)
        elif typing.get_origin(tp) is list:
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, help=helptext, metavar=f.name.upper())
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=helptext, metavar=f.name.upper())


def _show(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value))
    return str(value)


def config_from_args(args: argparse.Namespace, cls: type[C], config: str | None = None) -> C:
    """A `cls` config from a recipe/YAML file plus the ``--field`` options present in `args`.

    With ``--resume``, the run's own saved config.yaml is the base instead, so ``--resume --name RUN``
    alone continues the run as it was set up (options given beside it still override, e.g. ``--epochs``).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in names}
    if overrides.get("resume"):
        if not overrides.get("name"):
            raise ValueError("--resume needs --name: the run folder to continue")
        if config:
            raise ValueError("--resume continues a run with its saved config.yaml; do not pass --config")
        saved = Path(overrides.get("output_dir", cls.output_dir)) / overrides["name"] / "config.yaml"
        if saved.is_file():
            return load_config(cls, saved, overrides)
    return load_config(cls, config, overrides)
