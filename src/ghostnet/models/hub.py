"""Published ImageNet weights: where each file lives, its checksum, and a verified download into the cache.

`PUBLISHED_WEIGHTS` is the one table of them: for each registered model, its files by source. ``"official"`` is
Huawei Noah's release (the CV-backbones / Efficient-AI-Backbones GitHub releases), ``"timm"`` the Hugging Face
hub file timm loads (``timm/<name>.in1k``, ``model.safetensors``). ``create_model(name, pretrained=True)`` takes
the official file where there is one; ``pretrained="timm"`` or ``"official"`` picks a source.

Checksums: each entry carries the SHA-256 of its file, from `PINNED_SHA256`. They could not be looked up where
this table was written (no network), so entries may hold ``None``; a maintainer with network access pins them by
running ``python scripts/pin_weights.py``, which downloads every file afresh, checks that it loads into its
model, and prints the `PINNED_SHA256` lines to paste below. Until a hash is pinned, the first download is
trusted (trust on first use): its hash is recorded beside the file (``<file>.sha256``) and every later load
checks the cached file against that record, so a truncated or corrupted cache file is caught, but a file that
was already wrong when first downloaded is not.

The cache folder is ``$GHOSTNET_CACHE`` if set, else torch's hub cache (``torch.hub.get_dir()/checkpoints``);
`download_weights` and `load_pretrained` take a ``cache_dir`` that overrides both.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import torch
from torch import nn

from .checkpoint import CheckpointError, load_weights

__all__ = [
    "CACHE_ENV",
    "PINNED_SHA256",
    "PUBLISHED_WEIGHTS",
    "SOURCES",
    "Weights",
    "cache_dir",
    "download_weights",
    "find_weights",
    "models_with_weights",
    "sha256_of",
    "load_pretrained",
]

CACHE_ENV = "GHOSTNET_CACHE"
SOURCES = ("official", "timm")  # in order of preference: pretrained=True takes the first a model has
_CHUNK = 1 << 20
_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Weights:
    """One published weights file.

    Attributes:
        model: the registered model name it fits.
        source: ``"official"`` or ``"timm"``.
        url: where it is downloaded from.
        sha256: the file's SHA-256 (hex), or None until a maintainer pins it (see the module docstring).
        filename: its name in the cache (unique across sources; keeps the suffix `read_checkpoint` goes by).
        top1: ImageNet-1k top-1 accuracy (%) as published, if known.
        form: for GhostNetV3, ``"training"`` (the re-parameterisable branches) or ``"folded"``; None otherwise.
            A training-form file also loads into ``create_model(name, folded=True)`` (folded on the way in).
    """

    model: str
    source: Literal["official", "timm"]
    url: str
    sha256: str | None
    filename: str
    top1: float | None = None
    form: Literal["training", "folded"] | None = None


# url -> SHA-256 of the file, as printed by `python scripts/pin_weights.py`. Empty until a maintainer with network
# access runs it; until then every file is trusted on first use (see the module docstring).
PINNED_SHA256: dict[str, str] = {}


def _official(model: str, url: str, top1: float, form: Literal["training", "folded"] | None = None) -> Weights:
    return Weights(model, "official", url, PINNED_SHA256.get(url), url.rsplit("/", 1)[-1], top1, form)


def _timm(model: str, form: Literal["training", "folded"] | None = None) -> Weights:
    # timm's default_cfgs list no top-1 for these; its hub copies are converted from the official files.
    url = f"https://huggingface.co/timm/{model}.in1k/resolve/main/model.safetensors"
    return Weights(model, "timm", url, PINNED_SHA256.get(url), f"timm-{model}.in1k.safetensors", None, form)


_V2 = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/GhostNetV2"
_V3 = "https://github.com/huawei-noah/Efficient-AI-Backbones/releases/download/GhostNetV3"

# model -> source -> file. A file's sha256 is None until its hash is in PINNED_SHA256.
PUBLISHED_WEIGHTS: dict[str, dict[str, Weights]] = {
    "ghostnet_100": {
        "official": _official(
            "ghostnet_100",
            "https://github.com/huawei-noah/CV-backbones/releases/download/ghostnet_pth/ghostnet_1x.pth",
            73.98,
        ),
        "timm": _timm("ghostnet_100"),
    },
    "ghostnetv2_100": {
        "official": _official("ghostnetv2_100", f"{_V2}/ck_ghostnetv2_10.pth.tar", 75.3),
        "timm": _timm("ghostnetv2_100"),
    },
    "ghostnetv2_130": {
        "official": _official("ghostnetv2_130", f"{_V2}/ck_ghostnetv2_13.pth.tar", 76.9),
        "timm": _timm("ghostnetv2_130"),
    },
    "ghostnetv2_160": {
        "official": _official("ghostnetv2_160", f"{_V2}/ck_ghostnetv2_16.pth.tar", 77.8),
        "timm": _timm("ghostnetv2_160"),
    },
    "ghostnetv3_100": {
        "official": _official("ghostnetv3_100", f"{_V3}/ghostnetv3-1.0.pth.tar", 77.1, "training"),
        "timm": _timm("ghostnetv3_100", "training"),
    },
}


def models_with_weights() -> dict[str, list[str]]:
    """The models that have published weights, each with its sources (preferred first)."""
    return {name: _sources(name) for name in sorted(PUBLISHED_WEIGHTS) if _sources(name)}


def _sources(name: str) -> list[str]:
    files = PUBLISHED_WEIGHTS.get(name, {})
    return sorted(files, key=lambda s: SOURCES.index(s) if s in SOURCES else len(SOURCES))


def find_weights(name: str, source: bool | str = True) -> Weights:
    """The published file of model `name` from `source` (True: the preferred source the model has).

    Raises:
        CheckpointError: the model has no published weights, or none from `source` (one line listing what exists).
    """
    if source is True:
        source = "default"
    elif source not in SOURCES:
        raise CheckpointError(f"pretrained must be True or one of {', '.join(map(repr, SOURCES))}, got {source!r}")
    have = _sources(name)
    if not have:
        listed = "; ".join(f"{m} ({', '.join(s)})" for m, s in models_with_weights().items())
        raise CheckpointError(
            f"no published weights for {name!r}; models with weights: {listed}; "
            "otherwise train one or pass checkpoint_path="
        )
    if source == "default":
        return PUBLISHED_WEIGHTS[name][have[0]]
    if source not in have:
        raise CheckpointError(f"{name!r} has no {source!r} weights; its sources: {', '.join(have)}")
    return PUBLISHED_WEIGHTS[name][source]


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Where downloaded weights go: `override`, else ``$GHOSTNET_CACHE``, else ``torch.hub.get_dir()/checkpoints``."""
    if override:
        return Path(override)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(torch.hub.get_dir()) / "checkpoints"


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def download_weights(
    url: str,
    sha256: str | None,
    cache_dir: str | os.PathLike | None = None,
    *,
    filename: str | None = None,
    progress: bool | None = None,
) -> Path:
    """The cached file of `url`, downloaded first if needed, its SHA-256 verified either way.

    The download streams into a temp file in the cache folder, hashing as it goes; it is complete when its byte
    count matches the server's Content-Length (a connection that closes early is an interrupted download) and
    its hash matches `sha256`. Only then is it renamed into place, so the cache never holds a partial file.

    With `sha256` None this is trust on first use until a hash is pinned: the computed hash is written beside
    the file (``<file>.sha256``) and every later call checks the cached file against it.

    Args:
        url: the file's address (http or https).
        sha256: the expected SHA-256 (hex), or None when not pinned.
        cache_dir: the folder (default: see `cache_dir`).
        filename: the name in the cache (default: the URL's last path part).
        progress: print progress to stderr (default: when stderr is a terminal).

    Raises:
        CheckpointError: one line naming `url` and what went wrong (HTTP error, interrupted download, checksum
            mismatch, damaged cache file); no temp or damaged file is left behind.
    """
    folder = _cache_folder(cache_dir)
    dest = folder / (filename or _url_name(url))
    expected = sha256.lower() if sha256 else None
    if dest.is_file():
        _verify_cached(url, dest, expected)
        return dest
    show = sys.stderr.isatty() if progress is None else progress
    tmp, digest = _fetch(url, folder, dest.name, expected, show)
    try:
        if expected is None:
            _write_text_atomically(_record_of(dest), digest + "\n")
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _cache_folder(override: str | os.PathLike | None) -> Path:
    folder = cache_dir(override)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create the weights cache {folder}: {e.strerror or e}") from None
    return folder


def _url_name(url: str) -> str:
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
    if not name or name in (".", ".."):
        raise CheckpointError(f"cannot name a cache file after {url}; pass filename=")
    return name


def _record_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _verify_cached(url: str, dest: Path, expected: str | None) -> None:
    """Check a cached file against the pinned hash, or the one recorded at its download; remove it if damaged."""
    record = _record_of(dest)
    if expected is None:
        try:
            expected = record.read_text().split()[0].lower()
        except (OSError, IndexError):  # cached by another tool, or the record was lost: trust it now, once
            _write_text_atomically(record, sha256_of(dest) + "\n")
            return
        what = f"the hash recorded at its download ({record.name})"
    else:
        what = "the pinned SHA-256"
    actual = sha256_of(dest)
    if actual != expected:
        dest.unlink(missing_ok=True)
        record.unlink(missing_ok=True)
        raise CheckpointError(
            f"the cached weights of {url} are damaged: {dest} has SHA-256 {actual[:16]}..., {what} is "
            f"{expected[:16]}...; removed it, so the next call downloads it again"
        )


def _fetch(url: str, folder: Path, name: str, expected: str | None, show: bool) -> tuple[Path, str]:
    """Stream `url` into a temp file in `folder`, checking length and hash: the temp file and its SHA-256."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest = _stream(url, out, name, show)
            out.flush()
            os.fsync(out.fileno())
        if expected is not None and digest != expected:
            raise CheckpointError(
                f"could not download {url}: checksum mismatch (SHA-256 {digest[:16]}..., expected "
                f"{expected[:16]}...); the download was discarded"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, digest


def _stream(url: str, out: IO[bytes], name: str, show: bool) -> str:
    """Copy the body of `url` into `out`; its SHA-256. Raises CheckpointError on any failure."""
    h, done, length = hashlib.sha256(), 0, None
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            length = _content_length(response.headers.get("Content-Length"))
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
                if show:
                    _show_progress(name, done, length)
    except urllib.error.HTTPError as e:
        raise CheckpointError(f"could not download {url}: HTTP {e.code} {e.reason}") from None
    except http.client.IncompleteRead as e:
        got = done + len(e.partial)
        raise CheckpointError(f"could not download {url}: interrupted after {got} bytes (connection closed)") from None
    except (OSError, http.client.HTTPException, ValueError) as e:  # URLError, timeouts, resets, a bad URL
        raise CheckpointError(f"could not download {url}: {_one_line(getattr(e, 'reason', None) or e)}") from None
    finally:
        if show:
            sys.stderr.write("\n")
    if length is not None and done != length:
        raise CheckpointError(
            f"could not download {url}: interrupted after {done} of {length} bytes (the connection closed early)"
        )
    return h.hexdigest()


def _content_length(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _show_progress(name: str, done: int, total: int | None) -> None:
    mib = done / (1 << 20)
    of = f" of {total / (1 << 20):.1f} MiB ({100 * done / total:.0f}%)" if total else " MiB"
    sys.stderr.write(f"\rdownloading {name}: {mib:.1f}{of}")
    sys.stderr.flush()


def _write_text_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _one_line(e: object) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


def load_pretrained(
    model: nn.Module,
    entry: Any,
    *,
    source: bool | str = True,
    ignore_classifier: bool | Literal["mismatched"] = False,
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Download (once, checksum-verified) and load the published weights of a registry entry.

    Args:
        model: the model to fill (built from `entry`).
        entry: the model's `ModelEntry` (its ``name`` finds the weights).
        source: ``True`` for the preferred source (official where it exists, else timm), or ``"official"``/``"timm"``.
        ignore_classifier: as in `load_weights`.
        cache_dir: the download folder (default ``$GHOSTNET_CACHE``, else torch's hub cache).

    Returns:
        The cached file.

    Raises:
        CheckpointError: no such weights (listing the models and sources that have them), a failed or damaged
            download, or weights that do not fit.
    """
    weights = find_weights(entry.name, source)
    path = download_weights(weights.url, weights.sha256, cache_dir, filename=weights.filename)
    load_weights(model, path, ignore_classifier=ignore_classifier)  # read with read_checkpoint (weights only)
    return path
