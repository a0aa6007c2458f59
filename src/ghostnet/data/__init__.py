"""Datasets in their real formats and the loaders that feed training.

See `datasets` (the shared types), `load` (`load_dataset`), the format readers `cifar`, `idx`, `digits` and
`image_folder`, `download` and `loaders`.
"""

from .cifar import load_cifar
from .datasets import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataBundle,
    DatasetError,
    ImageData,
    data_search_dirs,
)
from .digits import load_digits
from .idx import load_idx, read_idx
from .image_folder import load_image_folder
from .load import DATASETS, load_dataset
from .loaders import FolderLoader, TensorLoader, batch_indices, folder_transforms

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataBundle",
    "DatasetError",
    "FolderLoader",
    "ImageData",
    "TensorLoader",
    "batch_indices",
    "data_search_dirs",
    "folder_transforms",
    "load_cifar",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_image_folder",
    "read_idx",
]
