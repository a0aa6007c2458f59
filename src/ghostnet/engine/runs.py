"""A run folder: creating it safely, finding its newest complete checkpoint, RNG state, logs."""

from __future__ import annotations

import json
import os
import random
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from ..models.checkpoint import FORMAT, CheckpointError, read_checkpoint
from .config import RunConfig
from .distributed import Dist, broadcast

__all__ = [
    "RunDirError",
    "prepare_run_dir",
    "newest_checkpoint",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "write_text",
    "write_log",
    "to_yaml",
]


class RunDirError(ValueError):
    """The run folder exists (and neither resume nor overwrite was asked), or has nothing to resume."""


def prepare_run_dir(cfg: RunConfig, d: Dist) -> Path:
    name = broadcast(cfg.name or f"{cfg.data_name()}-{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}", d)
    run_dir = Path(cfg.output_dir) / name
    problem = None
    if d.is_main:  # rank 0 decides, so that every rank raises the same error instead of hanging
        if cfg.resume and not run_dir.is_dir():
            problem = f"cannot resume: {run_dir} does not exist"
        elif not cfg.resume and run_dir.exists() and not cfg.overwrite:
            problem = f"run folder {run_dir} exists; pass --resume to continue it, --overwrite to replace it, or another --name"
        elif not cfg.resume and run_dir.exists():
            shutil.rmtree(run_dir)
    problem = broadcast(problem, d)
    if problem:
        raise RunDirError(problem)
    return run_dir


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]]:
    """The complete checkpoint with the most steps among last.pth and best.pth (a damaged one is passed over)."""
    found, problems = [], []
    for p in (run_dir / "last.pth", run_dir / "best.pth"):
        if p.exists():
            try:
                ckpt = read_checkpoint(p)
            except CheckpointError as e:
                problems.append(str(e))
                continue
            if ckpt.get("format") == FORMAT and "optimizer" in ckpt:
                found.append((ckpt["step"], p, ckpt))
    if not found:
        raise RunDirError(
            f"no complete checkpoint to resume from in {run_dir}" + (f" ({problems[0]})" if problems else "")
        )
    _, path, ckpt = max(found, key=lambda t: t[0])
    return path, ckpt


def rng_state() -> dict[str, Any]:
    """Every RNG's state as plain Python values (they travel through all_gather_object and weights_only loads)."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state().tolist(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def to_yaml(values: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
