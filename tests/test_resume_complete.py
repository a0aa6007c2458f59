"""Resuming a run that has already trained all its epochs (or max_steps) says so, and how to extend it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ghostnet.cli import main


def _files(run: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(run.iterdir()) if p.is_file()}


def _train(runs: Path, *extra: str) -> int:
    base = ["classify", "train", "--output-dir", str(runs), "--name", "r", "--no-progress"]
    return main([*base, *extra])


def test_resuming_a_finished_run_says_so_changes_nothing_and_more_epochs_extend_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs, run = tmp_path / "runs", tmp_path / "runs" / "r"
    setup = ["--config", "digits", "--image-size", "16", "--train-subset", "128", "--batch-size", "64", "--epochs", "1"]
    assert _train(runs, *setup) == 0
    capsys.readouterr()
    before = _files(run)

    assert _train(runs, "--resume") == 0
    (line,) = capsys.readouterr().out.strip().splitlines()  # one line: no "resuming ...", no old epoch table
    assert line.startswith(f"{run} is already complete (1 of 1 epochs, step 2): nothing to train")
    assert "--resume --name r --epochs 2" in line and line.endswith(str(run / "summary.json"))
    assert _files(run) == before

    assert _train(runs, "--resume", "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert out.startswith(f"resuming {run}") and "epoch 2/2" in out and "already complete" not in out
    assert [json.loads(row)["epoch"] for row in (run / "log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_run_stopped_by_max_steps_names_max_steps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = tmp_path / "runs"
    assert _train(runs, "--config", "digits", "--image-size", "16", "--batch-size", "16", "--max-steps", "1") == 0
    capsys.readouterr()
    assert _train(runs, "--resume") == 0
    out = capsys.readouterr().out
    assert "already complete (1 of max_steps 1, step 1)" in out and "--max-steps 2" in out
