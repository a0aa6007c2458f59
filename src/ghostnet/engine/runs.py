"""A run folder: creating it safely, finding its newest complete checkpoint, RNG state, logs."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch

from ..models.checkpoint import FORMAT, CheckpointError, read_checkpoint
from ..models.files import CheckpointWriteError, space_note
from .config import RunConfig
from .distributed import Dist, broadcast

try:
    import fcntl
except ImportError:  # not POSIX: runs are not guarded against a second writer
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK_FILE",
    "Resumable",
    "RunDirError",
    "RunFolder",
    "RunLock",
    "lock_run_dir",
    "prepare_run_dir",
    "newest_checkpoint",
    "remove_orphan_temps",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "write_text",
    "write_log",
    "to_yaml",
]


class RunDirError(ValueError):
    """The run folder exists (and neither resume nor overwrite was asked), is in use by another process, or has
    nothing to resume."""


LOCK_FILE = ".lock"  # inside the run folder, held (flock) by the process training it
CHECKPOINTS = ("last.pth", "best.pth")
_RUN_FILES = (*CHECKPOINTS, "config.yaml", "log.jsonl", "summary.json")  # what a run writes through temp files


class RunLock:
    """The exclusive lock of one run folder (an flock on its lock file); the kernel drops it if the process dies."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Remove the lock file (while still holding it, so no one else can be holding it) and unlock."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # the folder is gone (discarded) or read-only: closing still unlocks
        finally:
            os.close(self.fd)
            self.fd = None


def lock_run_dir(run_dir: Path) -> RunLock:
    """Take the run folder's lock, writing this process's pid and host into it.

    Raises:
        RunDirError: another live process holds it (its pid and host are named).
    """
    path = run_dir / LOCK_FILE
    if fcntl is None:
        return RunLock(path, None)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirError(
                f"run folder {run_dir} is in use by another process ({holder}); wait for it to finish or stop it"
            ) from None
        except OSError as e:  # a file system without locks: train unguarded rather than not at all
            os.close(fd)
            print(
                f"warning: cannot lock {path} ({e.strerror}); a second run in this folder would not be stopped",
                file=sys.stderr,
            )
            return RunLock(path, None)
        if _same_file(fd, path):  # not a lock file that its last holder removed after we opened it
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode() + b"\n")
    return RunLock(path, fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"pid {int(info['pid'])} on host {info['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown: it is starting"


class RunFolder:
    """A run folder claimed by this process: its path, whether this run made it, and the lock (on rank 0)."""

    def __init__(self, path: Path, created: bool = False, lock: RunLock | None = None) -> None:
        self.path, self.created, self.lock = path, created, lock

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def discard_if_unused(self) -> bool:
        """After a failure: remove the folder if this run made it and it holds nothing but the run's own
        config and empty log (no checkpoint). Returns whether it was removed."""
        if not self.created or not self.path.is_dir():
            return False
        try:
            keep = [p for p in self.path.iterdir() if not _disposable(p)]
            if keep:
                return False
            shutil.rmtree(self.path)
        except OSError:
            return False
        return True


def _disposable(p: Path) -> bool:
    if p.name in (LOCK_FILE, "config.yaml") or _is_orphan_temp(p.name):
        return p.is_file()
    return p.name == "log.jsonl" and p.is_file() and p.stat().st_size == 0


def _is_orphan_temp(name: str) -> bool:
    return any(name == f".{f}.tmp" or (name.startswith(f".{f}.") and name.endswith(".tmp")) for f in _RUN_FILES)


def remove_orphan_temps(run_dir: Path) -> list[str]:
    """Delete the temp files that interrupted saves left in a run folder (call only while holding its lock)."""
    removed = []
    for p in run_dir.iterdir():
        if _is_orphan_temp(p.name) and p.is_file():
            p.unlink()
            removed.append(p.name)
    return removed


def prepare_run_dir(cfg: RunConfig, d: Dist) -> RunFolder:
    """Claim the run folder: check it may be used, make (or, with overwrite, empty) it, lock it on rank 0, and
    remove temp files of interrupted saves. Release it with `RunFolder.release`."""
    name = broadcast(cfg.name or f"{cfg.data_name()}-{cfg.model}-{datetime.now():%Y%m%d-%H%M%S}", d)
    run_dir = Path(cfg.output_dir) / name
    folder, problem = RunFolder(run_dir), None
    if d.is_main:  # rank 0 decides, so that every rank raises the same error instead of hanging
        try:
            folder = _claim(cfg, run_dir)
        except RunDirError as e:
            problem = str(e)
    problem = broadcast(problem, d)
    if problem:
        raise RunDirError(problem)
    return folder


def _claim(cfg: RunConfig, run_dir: Path) -> RunFolder:
    exists = f"run folder {run_dir} exists; pass --resume to continue it, --overwrite to replace it, or another --name"
    if cfg.resume and not run_dir.is_dir():
        raise RunDirError(f"cannot resume: {run_dir} does not exist")
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run folder")
    if not cfg.resume and run_dir.exists() and not cfg.overwrite:
        raise RunDirError(exists)
    created = not run_dir.exists()
    if created:
        try:
            run_dir.mkdir(parents=True)
        except FileExistsError:  # another run of the same name made it just now
            raise RunDirError(exists) from None
    lock = lock_run_dir(run_dir)
    try:
        if not cfg.resume and not created:  # overwrite: empty it, keeping the lock file we hold
            for p in run_dir.iterdir():
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                elif p.name != LOCK_FILE:
                    p.unlink()
        remove_orphan_temps(run_dir)
    except BaseException:
        lock.release()
        raise
    return RunFolder(run_dir, created, lock)


class Resumable(NamedTuple):
    """The checkpoint a run resumes from, and the checkpoints passed over (with why)."""

    path: Path
    ckpt: dict[str, Any]
    passed_over: list[str]


def newest_checkpoint(run_dir: Path) -> Resumable:
    """The complete checkpoint with the most steps among last.pth and best.pth (a damaged one is passed over)."""
    found, problems = [], []
    for p in (run_dir / name for name in CHECKPOINTS):
        if p.exists():
            try:
                ckpt = read_checkpoint(p)
            except CheckpointError as e:
                problems.append(str(e))
                continue
            if ckpt.get("format") == FORMAT and "optimizer" in ckpt:
                found.append((ckpt["step"], p, ckpt))
            else:
                problems.append(f"{p} is not a training checkpoint (no optimizer state)")
    if not found:
        raise RunDirError(
            f"no complete checkpoint to resume from in {run_dir}" + (f" ({problems[0]})" if problems else "")
        )
    _, path, ckpt = max(found, key=lambda t: t[0])
    return Resumable(path, ckpt, problems)


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
    """Replace `path` with `text` atomically; a failed write (disk full) is one CheckpointWriteError line."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
        needed = lambda: len(text.encode())  # noqa: E731
        raise CheckpointWriteError(
            f"could not write {path}: {e.strerror or e}; {space_note(path.parent, needed)}; {kept}"
        ) from None


def write_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_text(run_dir / "log.jsonl", "".join(json.dumps(r) + "\n" for r in history))


def to_yaml(values: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(values, sort_keys=False)
