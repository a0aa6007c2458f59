"""scripts/*.py and benchmarks/*.py: run with a Python that lacks the package (plain `python` on a fresh clone),
each stops with one line saying how to run it; in the project's environment, each runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.relative_to(ROOT).as_posix() for d in ("scripts", "benchmarks") for p in (ROOT / d).glob("*.py"))


def test_there_are_scripts() -> None:
    assert "scripts/make_detection_set.py" in SCRIPTS and "benchmarks/family.py" in SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_without_the_package_one_line_says_how_to_run_it(script: str) -> None:
    # -S: no site-packages, so neither ghostnet nor torch can be imported, as with a system `python`
    run = subprocess.run([sys.executable, "-S", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"{script}: No module named") and f"uv run python {script}" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_in_the_environment_it_runs(script: str) -> None:
    run = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage:")
