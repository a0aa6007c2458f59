"""The detection run's configuration (`ghostnet detect train`): `RunConfig` plus the COCO-format data and the
detector's options (`DetectorOptions`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ...engine.config import RunConfig, first_failure, option
from .models import DetectorOptions

__all__ = ["DetectConfig"]


@dataclass
class DetectConfig(RunConfig, DetectorOptions):
    """A detection run (`ghostnet detect train`) on COCO-format data: the run's fields and the detector's options.

    `model` names the detector; the detector's own options (backbone width, levels, FPN, frozen BN, image
    sizes, ...) are declared once, in `ghostnet.tasks.detect.models.DetectorOptions`.
    """

    # --- data (COCO format: an images folder + an instances JSON per split)
    data_dir: str | None = option(
        None, "a folder in COCO's layout: annotations/instances_{train,val}*.json beside train*/ and val*/"
    )
    train_images: str | None = option(None, "training images folder; None = DATA_DIR/train*")
    train_annotations: str | None = option(
        None, "training instances JSON; None = DATA_DIR/annotations/instances_train*.json"
    )
    val_images: str | None = option(None, "validation images folder; None = DATA_DIR/val*")
    val_annotations: str | None = option(
        None, "validation instances JSON; None = DATA_DIR/annotations/instances_val*.json"
    )
    bad_annotations: str = option("skip", "skip (drop them and report the count) | error (refuse the dataset)")
    flip: bool = option(True, "random horizontal flip in training")
    # --- detector
    model: str = option("retinanet_ghostnet", "retinanet_ghostnet | fasterrcnn_ghostnet")
    width: float = option(1.1, "GhostNet backbone width (1.1 in the paper)")
    # --- optimisation (torchvision's detection recipe, scaled to batch 4)
    epochs: int = option(12, "passes over the training split")
    batch_size: int = option(4, "global batch (images), split evenly across processes")
    lr: float = option(0.005, "peak learning rate for the global batch")
    weight_decay: float = option(1e-4, "L2 weight decay; not applied to BN weights and biases")
    schedule: str = option("multistep", "cosine | multistep | constant (all stepped per iteration)")
    milestones: list[float] = option(
        factory=lambda: [0.67, 0.89], help="multistep: when to decay, as fractions of training"
    )
    warmup_epochs: float = option(0.1, "linear warm-up from 0, in epochs")
    eval_batch_size: int = option(4, "batch size (images) for evaluation")

    def data_name(self) -> str:
        return "coco"

    def validate(self) -> None:
        super().validate()
        from ...models import list_models

        detectors = list_models(task="detect")
        first_failure(
            (self.model in detectors, f"model must be one of {', '.join(detectors)} for detection, got {self.model!r}"),
            (self.bad_annotations in ("skip", "error"), "bad_annotations must be skip or error"),
            (self.width is not None, "width must be > 0"),
        )
        DetectorOptions.validate(self)

    def detector_options(self) -> dict[str, Any]:
        """The detector builder's keyword arguments, from the `DetectorOptions` fields."""
        opts = {f.name: getattr(self, f.name) for f in dataclasses.fields(DetectorOptions)}
        opts["out_indices"] = tuple(opts["out_indices"])
        if self.model != "fasterrcnn_ghostnet":
            opts.pop("rois_per_image")
        return opts
