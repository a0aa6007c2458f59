"""Semantic-segmentation data: the formats (`formats`: VOC, Cityscapes, folder), the joint transforms and the
loader (`transforms`), VOC's download (`download`) and the real-image set (`synth`)."""

from ....data.datasets import DatasetError
from .download import download_voc
from .formats import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_COLORS,
    IGNORE_INDEX,
    SEGMENTATION_FORMATS,
    VOC_CLASSES,
    SegSplit,
    cityscapes_lut,
    load_segmentation_split,
    read_mask,
    voc_palette,
)
from .synth import make_segmentation_set
from .transforms import SegmentationDataset, SegmentationLoader, joint_scale_crop_flip, normalize

__all__ = [
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_COLORS",
    "DatasetError",
    "IGNORE_INDEX",
    "SEGMENTATION_FORMATS",
    "SegSplit",
    "SegmentationDataset",
    "SegmentationLoader",
    "VOC_CLASSES",
    "cityscapes_lut",
    "download_voc",
    "joint_scale_crop_flip",
    "load_segmentation_split",
    "make_segmentation_set",
    "normalize",
    "read_mask",
    "voc_palette",
]
