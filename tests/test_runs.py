"""Run folders: one writer at a time, no stubs left by failed starts, no orphan temp files, honest resumes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from ghostnet.cli import main
from ghostnet.engine import RunDirError, run_training
from ghostnet.engine import runs as runs_module
from ghostnet.engine.runs import LOCK_FILE, lock_run_dir
from ghostnet.models.checkpoint import read_checkpoint
from ghostnet.tasks.classify.config import load_recipe
from ghostnet.tasks.classify.task import ClassificationTask


def tiny(tmp_path, **overrides):
    """The digits recipe, shrunk to two steps of a small model on 16x16 images."""
    values = dict(
        output_dir=str(tmp_path / "runs"),
        name="r",
        epochs=1,
        max_steps=2,
        batch_size=16,
        eval_batch_size=512,
        image_size=16,
        progress=False,
        seed=0,
    )
    return load_recipe("digits", {**values, **overrides})


class BrokenModel(ClassificationTask):
    """A task whose model fails on its first batch (as a model or data error would)."""

    def step(self, net, batch):
        raise RuntimeError("the model broke")


def _wait_for(path, proc, seconds=180):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    return path.exists()


def test_a_run_in_use_is_refused_and_a_killed_trainer_does_not_block(tmp_path, capsys):
    runs, run = tmp_path / "runs", tmp_path / "runs" / "r"
    base = ["classify", "train", "--output-dir", str(runs), "--name", "r", "--no-progress"]
    trainer = subprocess.Popen(
        [sys.executable, "-m", "ghostnet", *base, "--dataset", "digits", "--image-size", "16", "--epochs", "50"]
        + ["--batch-size", "16", "--save-every-steps", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert _wait_for(run / "last.pth", trainer), "the trainer never saved a checkpoint"
        capsys.readouterr()
        for extra in (["--resume"], ["--overwrite", "--dataset", "digits", "--image-size", "16"]):
            with pytest.raises(SystemExit) as e:
                main([*base, *extra, "--max-steps", "1"])
            err = capsys.readouterr().err.strip().splitlines()
            assert e.value.code == 2 and len(err) == 1 and f"(pid {trainer.pid} on host" in err[0], err
        with pytest.raises(RunDirError, match=rf"{run} is in use by another process \(pid {trainer.pid} on host "):
            lock_run_dir(run)
        assert trainer.poll() is None  # still training, its files neither written to nor deleted by the others
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    assert trainer.returncode == -signal.SIGKILL and (run / LOCK_FILE).exists()  # left behind, but not held
    step = read_checkpoint(run / "last.pth")["step"]
    assert main([*base, "--resume", "--max-steps", str(step + 1)]) == 0
    assert read_checkpoint(run / "last.pth")["step"] == step + 1
    assert not (run / LOCK_FILE).exists()  # released and removed at the end of a run
    lock = lock_run_dir(run)
    assert json.loads((run / LOCK_FILE).read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    lock.release()


def test_without_fcntl_runs_still_train(tmp_path, monkeypatch):
    monkeypatch.setattr(runs_module, "fcntl", None)  # as on Windows
    run_training(tiny(tmp_path), ClassificationTask())
    assert read_checkpoint(tmp_path / "runs" / "r" / "last.pth")["step"] == 2
    assert not (tmp_path / "runs" / "r" / LOCK_FILE).exists()


def test_a_run_that_fails_before_saving_leaves_no_stub_folder(tmp_path):
    with pytest.raises(RuntimeError, match="the model broke"):
        run_training(tiny(tmp_path), BrokenModel())
    assert (tmp_path / "runs").is_dir() and list((tmp_path / "runs").iterdir()) == []
    run_training(tiny(tmp_path), ClassificationTask())  # the same name is free again, no --overwrite needed
    assert (tmp_path / "runs" / "r" / "last.pth").exists()


def test_a_failure_never_removes_a_folder_that_existed_or_holds_checkpoints(tmp_path):
    run_training(tiny(tmp_path), ClassificationTask())
    run = tmp_path / "runs" / "r"
    with pytest.raises(RuntimeError, match="the model broke"):
        run_training(tiny(tmp_path, resume=True, max_steps=4), BrokenModel())
    assert read_checkpoint(run / "last.pth")["step"] == 2 and (run / "best.pth").exists()
    with pytest.raises(RuntimeError, match="the model broke"):
        run_training(tiny(tmp_path, overwrite=True), BrokenModel())
    assert run.is_dir()  # it existed before this run: emptied by --overwrite, as asked, but not removed


def test_orphan_temp_files_of_interrupted_saves_are_removed_on_the_next_start(tmp_path):
    run_training(tiny(tmp_path), ClassificationTask())
    run = tmp_path / "runs" / "r"
    orphans = [".last.pth.k2j3h4.tmp", ".best.pth.tmp", ".best.pth.a8b9c0.tmp", ".log.jsonl.tmp"]
    for name in orphans:
        (run / name).write_bytes(b"half a checkpoint")
    (run / "notes.txt").write_text("the user's own file")
    run_training(tiny(tmp_path, resume=True), ClassificationTask())
    assert not [name for name in orphans if (run / name).exists()]
    assert (run / "notes.txt").read_text() == "the user's own file"


def test_resuming_past_a_damaged_newest_checkpoint_says_so(tmp_path, capsys):
    run_training(tiny(tmp_path), ClassificationTask())
    run = tmp_path / "runs" / "r"
    data = (run / "last.pth").read_bytes()
    (run / "last.pth").write_bytes(data[: len(data) // 2])
    capsys.readouterr()
    run_training(tiny(tmp_path, resume=True), ClassificationTask())
    out = capsys.readouterr()
    warning = [line for line in out.err.splitlines() if "last.pth" in line]
    assert len(warning) == 1 and f"{run / 'last.pth'} is not a PyTorch checkpoint" in warning[0], out.err
    assert warning[0].startswith("warning: ") and warning[0].endswith("resuming from best.pth (step 2) instead")
    assert "from best.pth at step 2" in out.out


def test_a_run_file_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from ghostnet.engine.runs import write_text
    from ghostnet.models.checkpoint import CheckpointWriteError

    (tmp_path / "log.jsonl").write_text("{}\n")

    def full(self, text):
        Path.write_bytes(self, text[:10].encode())
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(CheckpointWriteError) as e:
        write_text(tmp_path / "log.jsonl", "x" * 100_000)
    assert str(e.value).startswith(f"could not write {tmp_path / 'log.jsonl'}: No space left on device; it needs ")
    assert str(e.value).endswith("free; the previous log.jsonl is intact")
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"] and (tmp_path / "log.jsonl").read_bytes() == b"{}\n"
