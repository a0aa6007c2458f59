"""PASCAL VOC 2012 (trainval, 2 GB), checksum-verified and unpacked into the data cache."""

from __future__ import annotations

import os
from pathlib import Path

from ....data.download import download_dir, download_verified, extract_tar

__all__ = ["VOC_MD5", "VOC_URL", "download_voc"]

# The official trainval archive (as torchvision's VOCSegmentation fetches it) and its MD5.
VOC_URL = "https://thor.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
VOC_MD5 = "6cd6e144f989b92b3379bac3b3de84fd"


def download_voc(data_dir: str | os.PathLike | None = None, url: str = VOC_URL, md5: str = VOC_MD5) -> Path:
    """Fetch and unpack VOC 2012 unless it is there already; returns the folder holding ``JPEGImages/``.

    The archive is verified against its MD5 before it is unpacked, and unpacked with tarfile's ``data`` filter
    (no absolute paths, links out of the folder or device files).
    """
    root = download_dir(data_dir)
    voc = root / "VOCdevkit" / "VOC2012"
    if (voc / "ImageSets" / "Segmentation" / "train.txt").is_file():
        return voc
    archive = root / Path(url).name
    download_verified(url, archive, md5)
    extract_tar(archive, root)
    return voc
