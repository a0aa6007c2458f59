"""Files that are never half-written, and that say when their bytes changed.

`write_atomically` writes through a temp file in the same folder (flush, fsync, rename, fsync the folder),
so a reader sees the previous complete file or the new one; a full disk or Ctrl-C becomes one line naming
the file, the space it needs and the space free. `state_checksum` is the SHA-256 our checkpoints carry.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "CheckpointWriteError",
    "interrupted",
    "space_note",
    "state_bytes",
    "state_checksum",
    "write_atomically",
    "write_failure_reason",
]

_SCALARS = (bool, int, float, str, bytes, type(None))  # the plain values a checksum covers besides tensors
# torch's zip writer reports a failed write (disk full, interrupted) as an assertion about the file position
_TORCH_WRITE_FAILURE = re.compile(r"unexpected pos|file write failed|PytorchStreamWriter failed", re.IGNORECASE)


class CheckpointWriteError(OSError):
    """A checkpoint (or export) could not be written: disk full, I/O error. The previous file is left intact."""


def write_atomically(path: Path, write: Callable[[IO[bytes]], object], needed: Callable[[], int]) -> Path:
    """Write `path` through `write(file)` atomically; `needed()` estimates the bytes for a disk-full message."""
    existed, tmp = path.exists(), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        kept = f"the previous {path.name} is intact" if existed else f"no {path.name} was written"
        if interrupted(e):
            raise KeyboardInterrupt(f"while writing {path}; {kept}") from None
        reason = write_failure_reason(e)
        if reason is None:
            raise
        raise CheckpointWriteError(
            f"could not write checkpoint {path}: {reason}; {space_note(path.parent, needed)}; {kept}"
        ) from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return path


def interrupted(e: BaseException) -> bool:
    """Whether `e` is, or came from, a KeyboardInterrupt (torch's zip writer turns one into a RuntimeError)."""
    return any(isinstance(x, KeyboardInterrupt) for x in _chain(e))


def write_failure_reason(e: BaseException) -> str | None:
    """Why a write failed, in a few words (``No space left on device``); None when `e` is not a failed write."""
    for x in _chain(e):
        if isinstance(x, OSError) and not isinstance(x, CheckpointWriteError):
            return x.strerror or _first_line(x)
    if isinstance(e, RuntimeError) and _TORCH_WRITE_FAILURE.search(str(e)):
        return f"the write stopped short ({_first_line(e)})"
    return None


def space_note(folder: Path, needed: Callable[[], int]) -> str:
    """``it needs about 12.3 MiB, FOLDER has 1.0 MiB free`` (what it can find out of the two)."""
    try:
        need = f"it needs about {_size(needed())}"
    except Exception:  # noqa: BLE001 - an estimate for an error message must not replace the error
        need = "its size is unknown"
    try:
        return f"{need}, {folder} has {_size(shutil.disk_usage(folder).free)} free"
    except OSError:
        return need


def state_checksum(obj: Any) -> str:
    """``sha256:<hex>`` over every tensor (name, dtype, shape, bytes) and plain value in `obj`, in a fixed order.

    Names are the key paths (``/model/conv_stem.weight``); a top-level ``"checksum"`` is left out.
    """
    h = hashlib.sha256()
    for name, value in _leaves(obj, ""):
        if isinstance(value, torch.Tensor):
            h.update(f"{name}|{value.dtype}|{tuple(value.shape)}\n".encode())
            h.update(_tensor_bytes(value))
        else:
            h.update(f"{name}|{type(value).__name__}|{value!r}\n".encode())
    return "sha256:" + h.hexdigest()


def _leaves(obj: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    """(key path, value) for every tensor and plain value inside nested dicts, lists and tuples."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _SCALARS):
        yield prefix, obj
    elif isinstance(obj, Mapping):
        items = [(str(k), v) for k, v in obj.items() if not (prefix == "" and k == "checksum")]
        for key, value in sorted(items, key=lambda kv: kv[0]):
            yield from _leaves(value, f"{prefix}/{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{prefix}/{i}")


def _tensor_bytes(t: torch.Tensor) -> memoryview | bytes:
    if t.layout != torch.strided or t.is_quantized or t.device.type == "meta":
        return b""  # exotic tensors: their name, dtype and shape still count
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data


def state_bytes(obj: Any) -> int:
    """The bytes of the tensors in `obj` (shared storage counted once): about what a save writes."""
    seen, total = set(), 0
    for _, value in _leaves(obj, ""):
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            key = (storage.data_ptr(), str(storage.device))
            if key not in seen:
                seen.add(key)
                total += storage.nbytes()
    return total


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _chain(e: BaseException | None) -> Iterator[BaseException]:
    """`e` and the exceptions it was raised from or while handling."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
