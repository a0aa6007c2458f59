"""Training configuration: one dataclass, loadable from YAML, overridable from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["TrainConfig", "DetectConfig", "load_config", "recipe_path", "list_recipes", "add_config_arguments", "config_from_args"]

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved as config.yaml in every run directory."""

    # --- data
    dataset: str = "digits"  # digits | fashion_mnist | mnist | cifar10 | cifar100 | imagefolder
    data_dir: str | None = None  # where to look first (imagefolder: the folder holding train/ and val/)
    download: bool = False  # fetch CIFAR / (Fashion-)MNIST when missing (checksum-verified)
    image_size: int | None = None  # input resolution; None = the dataset's own (224 for image folders)
    augment: str | None = None  # crop_flip | crop | none | imagenet; None = the dataset's default
    color_jitter: float = 0.0  # image folders: ColorJitter strength (0.4 in one ImageNet reproduction)
    in_chans: int | None = None  # model input channels; None = the dataset's; 3 on grayscale data replicates it
    num_workers: int = 2  # DataLoader workers (image folders only; in-memory data needs none)
    train_subset: int | None = None  # train on the first N training images only (quick, reduced experiments)
    # --- model
    model: str = "ghostnet_small_050"  # a registered model name (`ghostnet list`)
    width: float | None = None  # width multiplier, for the model 'ghostnet'
    ratio: int | None = None  # Ghost ratio s, for models that take one (ghostnet, ghost_vgg16, ghost_resnet56)
    dw_size: int | None = None  # Ghost cheap-operation kernel d, for the same models
    drop_rate: float = 0.2  # dropout before the classifier
    init_checkpoint: str | None = None  # start from these weights (classifier skipped if num_classes differs)
    # --- optimisation
    epochs: int = 10
    batch_size: int = 128  # global batch, split evenly across ranks
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # peak learning rate for the global batch
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4  # not applied to BN weights and biases
    schedule: str = "cosine"  # cosine | multistep | constant (all per step)
    warmup_epochs: float = 0.0  # linear warm-up from 0, in epochs
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # multistep: fractions of training
    gamma: float = 0.1  # multistep: lr factor at each milestone
    label_smoothing: float = 0.0
    clip_grad: float | None = None  # max gradient norm; None = no clipping
    amp: str = "none"  # none | bf16 | fp16 (CUDA only)
    channels_last: bool = False  # NHWC memory format (CUDA)
    ema_decay: float | None = None  # keep an EMA of the weights (e.g. 0.9998); evaluated and saved alongside
    sync_bn: bool = False  # SyncBatchNorm across ranks (CUDA/NCCL only)
    # --- run
    seed: int = 0
    deterministic: bool = False  # deterministic kernels; with a fixed seed, runs and resumes are bit-identical on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    output_dir: str = "runs"
    name: str | None = None  # run folder name; None = <dataset>-<model>-<time>
    resume: bool = False  # continue the run in output_dir/name from its newest complete checkpoint
    overwrite: bool = False  # replace an existing run folder of the same name (its files are deleted)
    save_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at the end of each epoch only)
    eval_batch_size: int = 256
    max_steps: int | None = None  # stop after this many optimizer steps (smoke tests)
    progress: bool = True  # tqdm progress bars

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first nonsensical field."""
        checks = [
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
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.clip_grad is None or self.clip_grad > 0, "clip_grad must be > 0"),
            (self.amp in ("none", "bf16", "fp16"), "amp must be none, bf16 or fp16"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be in (0, 1)"),
            (0 <= self.drop_rate < 1, "drop_rate must be in [0, 1)"),
            (self.augment in (None, "crop_flip", "crop", "none", "imagenet"), "augment must be crop_flip, crop, none or imagenet"),
            (self.save_every_steps >= 0, "save_every_steps must be >= 0"),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (self.num_workers >= 0, "num_workers must be >= 0"),
            (self.train_subset is None or self.train_subset >= 1, "train_subset must be >= 1"),
            (self.image_size is None or self.image_size >= 8, "image_size must be >= 8"),
            (self.in_chans in (None, 1, 3), "in_chans must be 1 or 3"),
            (self.ratio is None or self.ratio >= 1, "ratio must be >= 1"),
            (self.dw_size is None or (self.dw_size >= 1 and self.dw_size % 2 == 1), "dw_size must be a positive odd integer"),
            (self.name is None or ("/" not in self.name and self.name not in (".", "..")), "name must be a plain folder name"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class DetectConfig(TrainConfig):
    """A detection run (`ghostnet detect-train`): the classification fields plus the detector's and COCO data's.

    `model` names the detector and `width` its GhostNet backbone; `dataset` is always a COCO-format folder.
    """

    # --- data (COCO format)
    dataset: str = "coco"  # COCO-format data: an images folder + an instances JSON per split
    train_images: str | None = None  # training images folder; None = DATA_DIR/train* (beside annotations/instances_train*.json)
    train_annotations: str | None = None  # training instances JSON; None = DATA_DIR/annotations/instances_train*.json
    val_images: str | None = None  # validation images folder; None = DATA_DIR/val*
    val_annotations: str | None = None  # validation instances JSON; None = DATA_DIR/annotations/instances_val*.json
    bad_annotations: str = "skip"  # skip (drop them and report the count) | error (refuse the dataset)
    min_size: int = 800  # images are resized to this short side ...
    max_size: int = 1333  # ... unless the long side would pass this
    flip: bool = True  # random horizontal flip in training
    # --- detector
    model: str = "retinanet_ghostnet"  # retinanet_ghostnet | fasterrcnn_ghostnet
    width: float | None = 1.1  # GhostNet backbone width (1.1 in the paper)
    out_indices: list[int] = field(default_factory=lambda: [2, 3, 4])  # backbone levels fed to the FPN (2, 3, 4 = strides 8, 16, 32)
    fpn_channels: int = 256  # FPN (and head) width
    trainable_layers: int | None = None  # backbone stages trained, deepest first (0-10; 10 = all); None = 3 with backbone_weights, else all
    frozen_bn: bool | None = None  # FrozenBatchNorm2d in the backbone; None = frozen when backbone_weights are given
    backbone_weights: str | None = None  # ImageNet classification weights for the backbone (official/timm .pth or ours)
    rois_per_image: int = 512  # Faster R-CNN: RoIs sampled per image for the box head in training
    # --- optimisation (torchvision's detection recipe, scaled to batch 4)
    epochs: int = 12
    batch_size: int = 4
    lr: float = 0.005
    weight_decay: float = 1e-4
    schedule: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [0.67, 0.89])
    warmup_epochs: float = 0.1
    eval_batch_size: int = 4

    def validate(self) -> None:
        super().validate()
        from .detection import DETECTORS

        checks = [
            (self.model in DETECTORS, f"model must be one of {', '.join(DETECTORS)} for detection, got {self.model!r}"),
            (self.dataset == "coco", "dataset must be coco for detection (a COCO-format folder or explicit JSON/images paths)"),
            (self.bad_annotations in ("skip", "error"), "bad_annotations must be skip or error"),
            (self.min_size >= 32, "min_size must be >= 32"),
            (self.max_size >= self.min_size, "max_size must be >= min_size"),
            (self.width is not None and self.width > 0, "width must be > 0"),
            (len(self.out_indices) > 0 and self.out_indices == sorted(set(self.out_indices)) and all(0 <= i <= 4 for i in self.out_indices),
             "out_indices must be increasing levels in 0..4"),
            (self.fpn_channels >= 8, "fpn_channels must be >= 8"),
            (self.trainable_layers is None or 0 <= self.trainable_layers <= 10, "trainable_layers must be in 0..10"),
            (self.rois_per_image >= 1, "rois_per_image must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# TrainConfig fields that mean nothing to a detector (left out of `ghostnet detect-train`'s options).
DETECT_UNUSED = ("dataset", "download", "augment", "color_jitter", "in_chans", "image_size", "ratio", "dw_size", "drop_rate", "label_smoothing",
                 "channels_last", "ema_decay", "sync_bn")


def _field_types(cls: type = TrainConfig) -> dict[str, Any]:
    return typing.get_type_hints(cls)


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


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None, cls: type = TrainConfig) -> Any:
    """Defaults, then the YAML file at `path` (a recipe name or a file), then `overrides`.

    Unknown keys and wrongly typed values raise `ValueError` naming them.
    """
    values: dict[str, Any] = {}
    if path is not None:
        p = recipe_path(path)
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


def list_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """A YAML file path, or the path of a bundled recipe by name (``cifar``, ``imagenet``, ``digits``...)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    bundled = RECIPES_DIR / f"{name_or_path}.yaml"
    if bundled.is_file():
        return bundled
    raise ValueError(f"config {name_or_path!r} is neither a file nor a bundled recipe ({', '.join(list_recipes())})")


def add_config_arguments(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = (), cls: type = TrainConfig) -> None:
    """One ``--field`` option per field of `cls` (help from its comment); only the ones given override."""
    comments = _field_comments(cls)
    types_ = _field_types(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        flag = "--" + f.name.replace("_", "-")
        tp = types_[f.name]
        helptext = comments.get(f.name, "")
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=helptext)
        elif typing.get_origin(tp) is list:
            parser.add_argument(flag, nargs="+", default=argparse.SUPPRESS, help=helptext)
        else:
            parser.add_argument(flag, default=argparse.SUPPRESS, help=helptext, metavar=f.name.upper())


def config_from_args(args: argparse.Namespace, config: str | None = None, cls: type = TrainConfig) -> Any:
    """A TrainConfig from a recipe/YAML file plus the ``--field`` options present in `args`.

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
            return load_config(saved, overrides, cls)
    return load_config(config, overrides, cls)


def _field_comments(cls: type = TrainConfig) -> dict[str, str]:
    """The trailing ``# comment`` of each field of `cls` (or of the config it extends), used as --help text."""
    import inspect

    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # installed without sources: options keep their names, without help text
            continue
        for line in source.splitlines():
            line = line.strip()
            if ":" in line and "#" in line and not line.startswith("#"):
                name = line.split(":", 1)[0].strip()
                if name.isidentifier():
                    out[name] = line.split("#", 1)[1].strip().replace("%", "%%")
    return out
