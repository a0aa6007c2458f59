"""Reading and writing weights and checkpoints, safely.

One checkpoint format: a dict with ``"format": "ghostnet-checkpoint"``, the model's state dict under
``"model"``, what rebuilds the model (``"model_name"``, ``"model_kwargs"``), and for training runs the
optimizer/scheduler/RNG state. It is written atomically and read with ``torch.load(weights_only=True)``,
so loading never runs pickled code. Official and timm state dicts, and ``.safetensors`` files, load too.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Literal

import torch
from torch import nn

from .files import (
    CheckpointWriteError,
    interrupted,
    space_note,
    state_bytes,
    state_checksum,
    write_atomically,
    write_failure_reason,
)

__all__ = [
    "CheckpointError",
    "CheckpointWriteError",
    "FORMAT",
    "copy_checkpoint",
    "interrupted",
    "space_note",
    "state_checksum",
    "write_failure_reason",
    "read_checkpoint",
    "extract_state_dict",
    "load_weights",
    "save_checkpoint",
    "save_weights",
]

FORMAT = "ghostnet-checkpoint"
_SHOW = 5  # how many offending keys an error names


_SAFE_MODULES = ("torch", "collections", "_codecs")  # where the globals of a plain checkpoint come from


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit the model."""


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``.pth``/``.pt``/``.ckpt`` or ``.safetensors`` file without executing any pickled code.

    Args:
        path: the file.

    Returns:
        The stored dict (for ``.safetensors``, the tensors by name).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint is not a file: {path}")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    obj = _load_pth(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint")
    obj = dict(obj)
    if obj.get("format") == FORMAT and "checksum" in obj:
        _verify(path, obj, obj["checksum"])
    return obj


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = dict(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {_first_line(e)}") from None
    if meta.get("format") == FORMAT and "checksum" in meta:
        _verify(path, tensors, meta["checksum"])
    return tensors


def _load_pth(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = _refused_global(path, e)
        if refused:
            raise CheckpointError(
                f"{path} asks to run code: it names the Python object {refused} to import when unpickled; "
                "refusing to unpickle it (only tensors and plain data are loaded)"
            ) from None
        # torch's weights-only message is a page of advice; what matters is that the bytes are not a state dict
        detail = "its bytes are not a saved state dict" if "Weights only load failed" in str(e) else _first_line(e)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (truncated or corrupt?): {detail}") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes means "not a checkpoint"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (truncated or corrupt?): {_first_line(e)}") from None


def _verify(path: Path, obj: Mapping[str, Any], stored: Any) -> None:
    if stored != state_checksum(obj):
        raise CheckpointError(
            f"{path} is damaged: its contents do not match the checksum stored when it was saved (bytes changed "
            "on disk or in transfer?); a file edited on purpose must be saved again with save_checkpoint/save_weights"
        )


def _refused_global(path: Path, e: Exception) -> str | None:
    """The Python object (``module.name``) a pickle asks to import that a weights-only load refuses, if any.

    Read from the pickle's opcodes (never executed), whatever torch's wording; torch's message as a fallback.
    """
    unsafe = [g for g in _pickle_globals(path) if g.split(".")[0] not in _SAFE_MODULES]
    if unsafe:
        return _readable_global(unsafe[0])
    named = re.search(r"\bGLOBAL\s+([\w.]+)", str(e))
    return named.group(1) if named else None


def _readable_global(name: str) -> str:
    return name.replace("__builtin__.", "builtins.", 1)  # protocol 2 spells builtins the Python 2 way


def _pickle_globals(path: Path) -> list[str]:
    """Every global a checkpoint's pickle references (torch's zip format, or the legacy stream of pickles)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                name = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                streams = [z.read(name)] if name else []
        else:
            with open(path, "rb") as f:
                streams = [f.read(1 << 20)]
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []
    found: list[str] = []
    for data in streams:
        stream = io.BytesIO(data)
        for _ in range(4):  # the legacy format is several pickles in a row
            found += _globals_in(stream)
    return found


def _globals_in(stream: IO[bytes]) -> list[str]:
    """The globals of one pickle read from `stream` (GLOBAL and protocol 4's STACK_GLOBAL), without running it."""
    found: list[str] = []
    pushed: list[str | None] = []  # what each push put on the stack, when it was a string
    memo: dict[Any, str | None] = {}
    try:
        for op, arg, _ in pickletools.genops(stream):
            if op.name == "GLOBAL" or op.name == "INST":
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(pushed) >= 2 and pushed[-2] and pushed[-1]:
                found.append(f"{pushed[-2]}.{pushed[-1]}")
            elif "UNICODE" in op.name or "STRING" in op.name:
                pushed.append(str(arg))
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                memo[len(memo) if op.name == "MEMOIZE" else arg] = pushed[-1] if pushed else None
            else:
                pushed.append(None)
    except (ValueError, EOFError):  # not a pickle (any more): nothing to report
        pass
    return found


def extract_state_dict(ckpt: Mapping[str, Any], prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """The model weights inside a checkpoint dict, whatever its wrapping.

    Accepts a plain state dict, ``{"state_dict": ...}``, ``{"model": ...}`` (ours and others'),
    ``{"state_dict_ema": ...}`` / ``{"model_ema": ...}`` when `prefer_ema`, and strips the ``module.``
    prefix that DataParallel/DDP add.
    """
    sd: Any = ckpt
    keys = ("model_ema", "state_dict_ema", "model", "state_dict") if prefer_ema else ("model", "state_dict")
    for key in keys:
        if isinstance(ckpt.get(key), Mapping) and ckpt[key]:
            sd = ckpt[key]
            break
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)][:_SHOW]
        raise CheckpointError(f"no state dict of tensors found (non-tensor entries: {bad})")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)


def load_weights(
    model: nn.Module,
    source: str | os.PathLike | Mapping[str, Any],
    *,
    strict: bool = True,
    ignore_classifier: bool | Literal["mismatched"] = False,
    prefer_ema: bool = False,
    classifier: tuple[str, ...] | None = None,
) -> dict[str, list[str]]:
    """Load weights into `model` from a file or a dict, with errors that name the offending keys.

    Args:
        model: the model to fill.
        source: a checkpoint path or an already-read checkpoint / state dict.
        strict: every key must match (names and shapes). Layers a ``features_only`` model leaves out
            are always skipped.
        ignore_classifier: leave the classifier as initialised (for a different ``num_classes``);
            ``"mismatched"`` does so only when the checkpoint's classifier has another shape.
        prefer_ema: use the EMA weights when the checkpoint has them.
        classifier: the parameter prefixes that follow ``num_classes`` (the registry entry's
            ``classifier_prefixes``); default: the model's ``classifier.``, ``fc.`` or ``head.``.

    Returns:
        ``{"missing": [...], "unexpected": [...], "skipped": [...]}`` (non-empty only when not strict or skipped).
    """
    ckpt = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    sd = extract_state_dict(ckpt, prefer_ema=prefer_ema)
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):  # a family's own renames and conversions (e.g. timm's V3 names, folding a V3 checkpoint)
        sd = adapt(sd)
    own = model.state_dict()

    skipped = []
    dropped = tuple(getattr(model, "dropped_prefixes", ()))
    head_prefixes = _classifier_prefixes(model, classifier) if ignore_classifier else ()
    if ignore_classifier == "mismatched" and all(
        k not in own or sd[k].shape == own[k].shape for k in sd if k.startswith(head_prefixes)
    ):
        head_prefixes = ()
    for k in list(sd):
        if (dropped and k.startswith(dropped) and k not in own) or (head_prefixes and k.startswith(head_prefixes)):
            skipped.append(k)
            del sd[k]
    missing = [k for k in own if k not in sd and not (head_prefixes and k.startswith(head_prefixes))]
    unexpected = [k for k in sd if k not in own]
    _check_fit(name, model, sd, own, missing if strict else [], unexpected if strict else [], classifier)
    model.load_state_dict(sd, strict=False)
    return {"missing": missing, "unexpected": unexpected, "skipped": skipped}


def _check_fit(
    name: str,
    model: nn.Module,
    sd: Mapping[str, torch.Tensor],
    own: Mapping[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    classifier: tuple[str, ...] | None = None,
) -> None:
    """Raise a one-line `CheckpointError` naming the first keys whose shapes differ, or that are missing/unexpected."""
    mismatched = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if mismatched:
        rows = ", ".join(
            f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:_SHOW]
        )
        hint = ""
        if any(k.startswith(_classifier_prefixes(model, classifier)) for k in mismatched):
            hint = " (a different num_classes? pass ignore_classifier=True)"
        raise CheckpointError(f"{name}: {len(mismatched)} shape mismatch(es): {rows}{hint}")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s) {missing[:_SHOW]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) {unexpected[:_SHOW]}")
    if parts:
        raise CheckpointError(f"{name} does not fit {type(model).__name__}: " + "; ".join(parts))


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically (temp file in the same folder, flush, fsync, rename) with a checksum.

    A reader sees either the previous complete file or the new complete file, never a partial one,
    even if the process is killed mid-write. ``"checksum"`` (see `state_checksum`) lets `read_checkpoint`
    notice bytes that change later.

    Raises:
        CheckpointWriteError: the file could not be written (disk full, ...): one line with the file, the
            space it needs and the space free; the previous file is intact and no temp file is left.
        KeyboardInterrupt: Ctrl-C during the write, after removing the temp file.
    """
    state = {k: v for k, v in obj.items() if k != "checksum"}
    state["checksum"] = state_checksum(state)
    return write_atomically(Path(path), lambda f: torch.save(state, f), lambda: state_bytes(state))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a complete checkpoint to `dst` atomically (how ``last.pth`` becomes ``best.pth``); errors as in
    `save_checkpoint`."""
    src = Path(src)

    def write(f: IO[bytes]) -> None:
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, f, 1 << 20)

    return write_atomically(Path(dst), write, lambda: src.stat().st_size)


def save_weights(
    model: nn.Module, path: str | os.PathLike, name: str | None = None, kwargs: Mapping[str, Any] | None = None
) -> Path:
    """Save a model's weights, with what rebuilds it when given (its registered `name` and the `kwargs` it was
    built with, as `ghostnet.models.model_spec` gives them): ``.safetensors`` (metadata in the header) or our
    format."""
    path = Path(path)
    kwargs = dict(kwargs or {})
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        import json

        from safetensors.torch import save

        meta = {"format": FORMAT, "model_name": name or "", "model_kwargs": json.dumps(kwargs)}
        meta["checksum"] = state_checksum(sd)
        return write_atomically(path, lambda f: f.write(save(sd, metadata=meta)), lambda: state_bytes(sd))
    return save_checkpoint({"format": FORMAT, "model": sd, "model_name": name, "model_kwargs": kwargs}, path)


def _classifier_prefixes(model: nn.Module, classifier: tuple[str, ...] | None) -> tuple[str, ...]:
    if classifier is not None:  # e.g. a detector's class-score layers, from its registry entry
        return tuple(classifier)
    return tuple(f"{n}." for n in ("classifier", "fc", "head") if hasattr(model, n))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
