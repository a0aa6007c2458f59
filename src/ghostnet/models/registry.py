"""The model registry: every named model of every task, built by `create_model(name, **kwargs)`.

Each entry carries its task tag (``classify``, ``detect``, ``segment``, ``face``) and what a checkpoint needs to
rebuild and fine-tune it (the layers that follow ``num_classes``, the keyword arguments worth saving). Nothing is
attached to the modules it builds: `model_spec(name, kwargs, model)` gives what to save beside the weights.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from .hub import PUBLISHED_WEIGHTS, Weights, find_weights

__all__ = [
    "IMAGE_TASKS",
    "TASK_NAMES",
    "ModelEntry",
    "ModelSpec",
    "TaskName",
    "create_model",
    "list_models",
    "model_entry",
    "model_spec",
    "register_model",
]

TaskName = Literal["classify", "detect", "segment", "face"]
TASK_NAMES: tuple[TaskName, ...] = ("classify", "detect", "segment", "face")
# The tasks whose models take an image and return one tensor (logits, an embedding): what the generic tools
# (profile table, export and runtime sweeps) cover; detectors and segmenters go through their tasks.
IMAGE_TASKS: tuple[TaskName, ...] = ("classify", "face")
SpecHook = Callable[[dict[str, Any], nn.Module], dict[str, Any]]


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder and the defaults it is known by. Its published weights are in
    `ghostnet.models.hub.PUBLISHED_WEIGHTS` (see `weights`)."""

    name: str
    builder: Callable[..., nn.Module]
    default_cfg: dict[str, Any] = field(default_factory=dict)
    task: TaskName = "classify"
    # The parameter prefixes whose shapes follow num_classes (left as initialised when fine-tuning to other
    # classes); None: the model's own ``classifier.``/``fc.``/``head.``.
    classifier_prefixes: tuple[str, ...] | None = None
    # What to save to rebuild a built model: (the keyword arguments it was built with, the model) -> the ones to
    # save (e.g. without a backbone weights path, with what the builder decided); None: the arguments as given.
    spec: SpecHook | None = None

    @property
    def weights(self) -> dict[str, Weights]:
        """The published ImageNet weights of this exact configuration, by source (empty when there are none)."""
        return dict(PUBLISHED_WEIGHTS.get(self.name, {}))

    @property
    def url(self) -> str | None:
        """Where the preferred published weights are downloaded from (None when there are none)."""
        return find_weights(self.name).url if self.weights else None

    @property
    def description(self) -> str:
        doc = (self.builder.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    task: TaskName = "classify",
    classifier_prefixes: tuple[str, ...] | None = None,
    spec: SpecHook | None = None,
    **default_cfg: Any,
) -> Callable:
    """Decorator adding a builder to the registry under its function name.

    Args:
        task: the task the model is built for (``list_models(task=...)``, ``ghostnet list --task``).
        classifier_prefixes, spec: see `ModelEntry`.
        **default_cfg: metadata shown by `ghostnet list` (e.g. ``default_width``, ``input_size``). Published
            weights are not given here but in `ghostnet.models.hub.PUBLISHED_WEIGHTS`, under the model's name.
    """
    if task not in TASK_NAMES:
        raise ValueError(f"task must be one of {', '.join(TASK_NAMES)}, got {task!r}")
    if "url" in default_cfg:
        raise ValueError("register_model takes no url=: add published weights to ghostnet.models.hub.PUBLISHED_WEIGHTS")

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if fn.__name__ in _REGISTRY:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        _REGISTRY[fn.__name__] = ModelEntry(fn.__name__, fn, dict(default_cfg), task, classifier_prefixes, spec)
        return fn

    return wrap


def list_models(pattern: str = "*", task: TaskName | tuple[TaskName, ...] | None = None) -> list[str]:
    """Names of the registered models matching a shell-style `pattern` (e.g. ``"ghostnet_*"``), sorted; only
    those of `task` (``"classify"``, ``"detect"``, ``"segment"``, ``"face"``, or a tuple of them) when given."""
    tasks = (task,) if isinstance(task, str) else task
    if tasks is not None and (bad := [t for t in tasks if t not in TASK_NAMES]):
        raise ValueError(f"task must be one of {', '.join(TASK_NAMES)}, got {bad[0]!r}")
    return sorted(n for n, e in _REGISTRY.items() if fnmatch.fnmatch(n, pattern) and (tasks is None or e.task in tasks))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; `ValueError` listing the known names when there is none."""
    if name not in _REGISTRY:
        close = [n for n in _REGISTRY if name.split("_")[0] in n] or sorted(_REGISTRY)
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(close))}")
    return _REGISTRY[name]


def create_model(
    name: str,
    pretrained: bool | str = False,
    checkpoint_path: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model, optionally loading weights.

    Args:
        name: a registered name (see `list_models`).
        pretrained: download (once, into the cache; checksum-verified) and load the published ImageNet weights:
            ``True`` takes the official release where there is one, else timm's; ``"official"`` or ``"timm"``
            picks a source. Only models with published weights (``ghostnet list`` marks them); see
            `ghostnet.models.hub`.
        checkpoint_path: load weights from this file (official/timm ``.pth``, ``.safetensors``, or our
            checkpoints). Without ``num_classes``, the model takes the checkpoint's class count; with a
            ``num_classes`` that differs from the checkpoint's, the classifier is left as initialised and
            everything else is loaded (fine-tuning to new classes).
        **kwargs: the model's constructor arguments (``num_classes``, ``in_chans``, ``drop_rate``, ...).
    """
    entry = model_entry(name)
    if pretrained and checkpoint_path:
        raise ValueError("give either pretrained=True or checkpoint_path, not both")
    if pretrained:
        find_weights(name, pretrained)  # no such weights: say so before building anything
    model = _build(entry, kwargs)
    if checkpoint_path:
        from .checkpoint import extract_state_dict, load_weights, read_checkpoint

        checkpoint_classes = _classes_of(model, extract_state_dict(read_checkpoint(checkpoint_path)))
        if "num_classes" not in kwargs and checkpoint_classes is not None:
            kwargs = {**kwargs, "num_classes": checkpoint_classes}  # adopt the checkpoint's classes
            model = _build(entry, kwargs)
        load_weights(model, checkpoint_path, ignore_classifier="mismatched", classifier=entry.classifier_prefixes)
    elif pretrained:
        from .hub import load_pretrained

        load_pretrained(model, entry, source=pretrained, ignore_classifier="mismatched")
    return model


def _build(entry: ModelEntry, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return entry.builder(**kwargs)
    except TypeError as e:  # a keyword this model does not take: the user's mistake, not a crash
        bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if bad is None:
            raise
        raise ValueError(f"model {entry.name!r} does not take {bad.group(1)!r}") from None


def _classes_of(model: nn.Module, state_dict: dict[str, Any]) -> int | None:
    """The class count of the checkpoint's classifier where it differs from `model`'s, else None.

    The classifier is the 2-D weight whose rows are the model's classes (``classifier.weight``,
    ``classifier.3.weight`` in VGG, ``fc.weight`` in ResNet).
    """
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or n < 1:
        return None
    for key, own in model.state_dict().items():
        theirs = state_dict.get(key)
        if own.ndim == 2 and own.shape[0] == n and theirs is not None and theirs.ndim == 2:
            if theirs.shape[1] == own.shape[1] and theirs.shape[0] != n:
                return int(theirs.shape[0])
    return None


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a model: its registered name and the keyword arguments to build it with (saved in every
    checkpoint of ours, and in ``.safetensors`` metadata)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)


def model_spec(name: str, kwargs: dict[str, Any], model: nn.Module | None = None) -> ModelSpec:
    """The `ModelSpec` of a model built by ``create_model(name, **kwargs)``: what its entry says to save."""
    entry = model_entry(name)
    saved = dict(kwargs) if entry.spec is None or model is None else entry.spec(dict(kwargs), model)
    return ModelSpec(name, saved)
