"""The segmentation run's configuration (`ghostnet segment train`): `RunConfig` plus the data, crops and head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...engine.config import RunConfig, option

__all__ = ["SegmentConfig"]


@dataclass
class SegmentConfig(RunConfig):
    """A semantic-segmentation run on VOC, Cityscapes or a folder of image/mask pairs."""

    # --- data
    dataset: str = option("voc", "voc | cityscapes | folder (classes.txt + {train,val}/images, {train,val}/masks)")
    data_dir: str | None = option(
        None,
        "VOC: the folder holding JPEGImages/ (or VOCdevkit/); Cityscapes: leftImg8bit/ + gtFine/; folder: classes.txt",
    )
    download: bool = option(False, "VOC only: fetch VOC 2012 trainval (2 GB, checksum-verified) when missing")
    train_split: str = option(
        "train", "the training split (VOC: an ImageSets/Segmentation list, e.g. train or train_aug)"
    )
    val_split: str = option("val", "the validation split, evaluated on whole images at their own size")
    crop_size: int = option(512, "training crop side (padded with the ignore label when the scaled image is smaller)")
    scale_min: float = option(0.5, "random scale range, lower end")
    scale_max: float = option(2.0, "random scale range, upper end")
    flip: bool = option(True, "random horizontal flip in training")
    # --- model
    model: str = option(
        "lraspp_ghostnet_100", "lraspp_ghostnet_100 | deeplabv3_ghostnet_100 | lraspp_ghostnet | deeplabv3_ghostnet"
    )
    width: float | None = option(None, "backbone width, for the generic lraspp_ghostnet / deeplabv3_ghostnet")
    version: str = option("v1", "backbone: v1 | v2 | v3 (GhostNetV2 / V3)")
    output_stride: int = option(16, "backbone output stride: 32 | 16 | 8 (dilation replaces the last strides)")
    aux_loss: bool = option(False, "DeepLabV3: an auxiliary FCN head on the stride-8 map (weight aux_weight)")
    aux_weight: float = option(0.4, "weight of the auxiliary head's loss")
    backbone_weights: str | None = option(
        None, "ImageNet classification weights for the backbone (official/timm .pth or ours)"
    )
    # --- optimisation
    epochs: int = option(30, "passes over the training split")
    batch_size: int = option(8, "global batch (crops), split evenly across processes")
    lr: float = option(0.02, "peak learning rate for the global batch")
    weight_decay: float = option(1e-4, "L2 weight decay; not applied to BN weights and biases")
    warmup_epochs: float = option(1.0, "linear warm-up from 0, in epochs")
    eval_batch_size: int = option(4, "whole images per evaluation step (each at its own size)")

    def data_name(self) -> str:
        return self.dataset

    def validate(self) -> None:
        super().validate()
        from ...models import list_models
        from .data import SEGMENTATION_FORMATS

        segmenters = list_models(task="segment")

        checks = [
            (self.dataset in SEGMENTATION_FORMATS, f"dataset must be one of {', '.join(SEGMENTATION_FORMATS)}"),
            (
                self.model in segmenters,
                f"model must be one of {', '.join(segmenters)} for segmentation, got {self.model!r}",
            ),
            (self.crop_size >= 32, "crop_size must be >= 32"),
            (0 < self.scale_min <= self.scale_max, "scale_min and scale_max must satisfy 0 < scale_min <= scale_max"),
            (self.version in ("v1", "v2", "v3"), "version must be v1, v2 or v3"),
            (self.output_stride in (8, 16, 32), "output_stride must be 32, 16 or 8"),
            (self.aux_weight >= 0, "aux_weight must be >= 0"),
            (not (self.aux_loss and self.model.startswith("lraspp")), "aux_loss applies to the DeepLabV3 models"),
            (
                self.width is None or not self.model.endswith("_100"),
                "the _100 models fix their width; use the generic model",
            ),
            (not (self.download and self.dataset != "voc"), "download applies to dataset voc"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def segmenter_options(self) -> dict[str, Any]:
        """The segmentation builder's keyword arguments."""
        opts: dict[str, Any] = {"version": self.version, "output_stride": self.output_stride}
        if self.width is not None:
            opts["width"] = self.width
        if self.model.startswith("deeplabv3"):
            opts["aux_loss"] = self.aux_loss
        if self.backbone_weights:
            opts["backbone_weights"] = self.backbone_weights
        return opts
