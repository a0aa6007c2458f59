"""Checksummed downloads into the dataset cache (CIFAR archives, (Fashion-)MNIST IDX files)."""

from __future__ import annotations

import os
from pathlib import Path

from .datasets import DatasetError, data_search_dirs

__all__ = ["download_dir", "download_verified", "extract_tar"]


def download_dir(data_dir: str | os.PathLike | None) -> Path:
    """Where `--download` puts a dataset: `data_dir` if given, otherwise the user cache."""
    return Path(data_dir) if data_dir else data_search_dirs()[-2]


def download_verified(url: str, dest: Path, md5: str) -> None:
    """Download `url` to `dest` (atomically) and verify its MD5; a one-line error without network."""
    from torchvision.datasets.utils import check_integrity, download_url

    dest.parent.mkdir(parents=True, exist_ok=True)
    if check_integrity(str(dest), md5):
        return
    tmp_name = f".{dest.name}.part"
    try:
        download_url(url, str(dest.parent), filename=tmp_name, md5=None)
    except Exception as e:  # noqa: BLE001 - URLError, HTTPError, socket errors, ...
        (dest.parent / tmp_name).unlink(missing_ok=True)
        raise DatasetError(
            f"could not download {url}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    tmp = dest.parent / tmp_name
    if not check_integrity(str(tmp), md5):
        tmp.unlink(missing_ok=True)
        raise DatasetError(f"checksum mismatch for {url} (expected md5 {md5}); the download was discarded")
    os.replace(tmp, dest)


def extract_tar(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Unpack a tar archive into `dest`, refusing absolute paths, ``..``, links and devices.

    Uses tarfile's ``data`` filter where this Python has it (3.10.12+, 3.11.4+); elsewhere every member is
    checked first.

    Raises:
        DatasetError: unreadable archive, or a member that could land outside `dest` or is not a file or folder.
    """
    import tarfile

    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
                return
            for m in tar.getmembers():
                if m.name.startswith(("/", "\\")) or Path(m.name).is_absolute() or ".." in Path(m.name).parts:
                    raise DatasetError(f"{archive}: refused to unpack: member {m.name!r} points outside the folder")
                if not (m.isfile() or m.isdir()):
                    raise DatasetError(f"{archive}: refused to unpack: member {m.name!r} is a link or device")
            tar.extractall(dest)  # every member checked above
    except (tarfile.TarError, OSError) as e:
        raise DatasetError(f"{archive}: cannot unpack ({e})") from None
