"""Reading and writing weights and checkpoints, safely.

One checkpoint format: a dict with ``"format": "ghostnet-checkpoint"``, the model's state dict under
``"model"``, what rebuilds the model (``"model_name"``, ``"model_kwargs"``), and for training runs the
optimizer/scheduler/RNG state. It is written atomically and read with ``torch.load(weights_only=True)``,
so loading never runs pickled code. Official and timm state dicts, and ``.safetensors`` files, load too.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "FORMAT",
    "read_checkpoint",
    "extract_state_dict",
    "load_weights",
    "load_pretrained",
    "save_checkpoint",
    "save_weights",
]

FORMAT = "ghostnet-checkpoint"
_SHOW = 5  # how many offending keys an error names


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
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {_first_line(e)}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" in str(e) or "Unsupported class" in str(e):
            raise CheckpointError(
                f"{path} holds Python objects other than tensors; refusing to unpickle it (it could run code)"
            ) from None
        # torch's weights-only message is a page of advice; what matters is that the bytes are not a state dict
        detail = "its bytes are not a saved state dict" if "Weights only load failed" in str(e) else _first_line(e)
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (truncated or corrupt?): {detail}") from None
    except Exception as e:  # noqa: BLE001 - any parse failure of untrusted bytes means "not a checkpoint"
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (truncated or corrupt?): {_first_line(e)}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or checkpoint")
    return dict(obj)


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

    Returns:
        ``{"missing": [...], "unexpected": [...], "skipped": [...]}`` (non-empty only when not strict or skipped).
    """
    ckpt = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else source
    name = str(source) if isinstance(source, (str, os.PathLike)) else "state dict"
    sd = extract_state_dict(ckpt, prefer_ema=prefer_ema)
    own = model.state_dict()

    skipped = []
    dropped = tuple(getattr(model, "dropped_prefixes", ()))
    head_prefixes = _classifier_prefixes(model) if ignore_classifier else ()
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
    mismatched = [k for k in sd if k in own and sd[k].shape != own[k].shape]

    if mismatched:
        rows = ", ".join(
            f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:_SHOW]
        )
        hint = ""
        if any(k.startswith(_classifier_prefixes(model)) for k in mismatched):
            hint = " (a different num_classes? pass ignore_classifier=True)"
        raise CheckpointError(f"{name}: {len(mismatched)} shape mismatch(es): {rows}{hint}")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) {missing[:_SHOW]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) {unexpected[:_SHOW]}")
        raise CheckpointError(f"{name} does not fit {type(model).__name__}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=False)
    return {"missing": missing, "unexpected": unexpected, "skipped": skipped}


def load_pretrained(model: nn.Module, entry: Any, *, ignore_classifier: bool | Literal["mismatched"] = False) -> None:
    """Download (once, into torch's hub cache) and load the published weights of a registry entry."""
    if not entry.url:
        raise CheckpointError(
            f"no published weights for {entry.name!r}; train one or pass checkpoint_path= (official or timm .pth)"
        )
    try:
        sd = torch.hub.load_state_dict_from_url(entry.url, map_location="cpu", weights_only=True, progress=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError
        raise CheckpointError(f"could not download {entry.url}: {_first_line(e)}") from None
    load_weights(model, sd, ignore_classifier=ignore_classifier)


def save_checkpoint(obj: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a checkpoint atomically: temp file in the same folder, flush, fsync, rename.

    A reader sees either the previous complete file or the new complete file, never a partial one,
    even if the process is killed mid-write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(obj), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """Save a model's weights with what rebuilds it: ``.safetensors`` (metadata in the header) or our format."""
    path = Path(path)
    name = getattr(model, "model_name", None)
    kwargs = getattr(model, "model_kwargs", {})
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix == ".safetensors":
        import json

        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"format": FORMAT, "model_name": name or "", "model_kwargs": json.dumps(kwargs)}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(sd, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path
    return save_checkpoint({"format": FORMAT, "model": sd, "model_name": name, "model_kwargs": kwargs}, path)


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    prefixes = getattr(model, "classifier_prefixes", None)  # e.g. a detector's class-score layers
    if prefixes is not None:
        return tuple(prefixes)
    return tuple(f"{n}." for n in ("classifier", "fc", "head") if hasattr(model, n))


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
