"""The classification run's configuration (`ghostnet classify train`): `RunConfig` plus the dataset, the
augmentation, the Ghost settings and knowledge distillation; the bundled recipes are in ``recipes/``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...engine.config import RunConfig, first_failure, load_config, option
from ...models import model_entry

__all__ = ["TrainConfig", "load_recipe"]


@dataclass
class TrainConfig(RunConfig):
    """An image-classification run (`ghostnet classify train`)."""

    recipes_dir: ClassVar[Path | None] = Path(__file__).parent / "recipes"

    # --- data
    dataset: str = option("digits", "digits | fashion_mnist | mnist | cifar10 | cifar100 | imagefolder")
    data_dir: str | None = option(None, "where to look first (imagefolder: the folder holding train/ and val/)")
    download: bool = option(False, "fetch CIFAR / (Fashion-)MNIST when missing (checksum-verified)")
    image_size: int | None = option(None, "input resolution; None = the dataset's own (224 for image folders)")
    augment: str | None = option(None, "crop_flip | crop | none | imagenet; None = the dataset's default")
    color_jitter: float = option(0.0, "image folders: ColorJitter strength (0.4 in one ImageNet reproduction)")
    in_chans: int | None = option(None, "model input channels; None = the dataset's; 3 on grayscale data replicates it")
    bad_images: str = option(
        "skip",
        "image folders: skip (leave unreadable images out and report the count) | error (refuse, naming the file)",
    )
    # --- model
    width: float | None = option(None, "width multiplier, for the model 'ghostnet'")
    ratio: int | None = option(
        None, "Ghost ratio s, for the models that take one (ghostnet, ghost_vgg16, ghost_resnet56)"
    )
    dw_size: int | None = option(None, "Ghost cheap-operation kernel d, for the same models")
    drop_rate: float | None = option(
        None, "dropout before the classifier; None = the model's own (GhostNet 0.2, VGG 0.5, ResNet 0)"
    )
    # --- optimisation
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy")
    channels_last: bool = option(False, "NHWC memory format (faster on CUDA)")
    # --- knowledge distillation (GhostNetV3's recipe)
    teacher: str | None = option(
        None,
        "distil from this registered model (frozen, eval mode, fed the same batch); needs teacher_checkpoint",
    )
    teacher_checkpoint: str | None = option(
        None, "the teacher's weights: a checkpoint of ours, or an official/timm state dict of the model `teacher`"
    )
    kd_weight: float = option(
        1.0, "loss = CE(label smoothing) + kd_weight * T^2 * mean(-sum softmax(teacher/T) * log_softmax(student/T))"
    )
    kd_temperature: float = option(
        1.0, "T of the distillation term, which is scaled by T^2 (Hinton's convention); at 1 it is the paper's term"
    )

    def data_name(self) -> str:
        return self.dataset

    def validate(self) -> None:
        super().validate()
        first_failure(
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (self.drop_rate is None or 0 <= self.drop_rate < 1, "drop_rate must be in [0, 1)"),
            (
                self.augment in (None, "crop_flip", "crop", "none", "imagenet"),
                "augment must be crop_flip, crop, none or imagenet",
            ),
            (self.image_size is None or self.image_size >= 8, "image_size must be >= 8"),
            (self.in_chans in (None, 1, 3), "in_chans must be 1 or 3"),
            (self.bad_images in ("skip", "error"), "bad_images must be skip or error"),
            (self.ratio is None or self.ratio >= 1, "ratio must be >= 1"),
            (
                self.dw_size is None or (self.dw_size >= 1 and self.dw_size % 2 == 1),
                "dw_size must be a positive odd integer",
            ),
            (self.kd_weight >= 0, "kd_weight must be >= 0"),
            (self.kd_temperature > 0, "kd_temperature must be > 0"),
            (
                self.teacher is None or bool(self.teacher_checkpoint),
                "teacher needs teacher_checkpoint: a randomly initialised teacher teaches nothing",
            ),
            (
                self.teacher_checkpoint is None or self.teacher is not None,
                "teacher_checkpoint needs teacher: the teacher's registered model name",
            ),
        )
        if self.teacher is not None:
            try:
                model_entry(self.teacher)
            except ValueError as e:
                raise ValueError(f"teacher: {e}") from None


def load_recipe(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A `TrainConfig`: the defaults, then a bundled recipe (``digits``, ``cifar``, ...) or YAML file, then `overrides`."""
    return load_config(TrainConfig, path, overrides)
