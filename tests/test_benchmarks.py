"""The scripts in benchmarks/ run end to end at toy sizes (their figures are in docs/BENCHMARKS.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_int8_backends_benchmark_runs():
    pytest.importorskip("onnxruntime")
    out = subprocess.run(
        [sys.executable, str(BENCH / "int8_backends.py"), "--input-size", "32", "--runs", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if "int8" in line or "fp32" in line]
    assert len(rows) == 4 and all(float(r[-2]) > 0 and float(r[-1]) > 0 for r in rows)
    assert "gpuGetDeviceCount" not in out.stderr  # nothing probes for a GPU on a CPU machine


def test_family_benchmark_runs(tmp_path):
    pytest.importorskip("onnxruntime")
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "family.py"),
            "--runs",
            "1",
            "--threads",
            "1",
            "--models",
            "ghostnetv2_100",
            "ghostnetv3_050",
            "--output",
            str(tmp_path / "f.json"),
            "--plot",
            str(tmp_path / "f.png"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (
        "| ghostnetv2_100 | 6.16M | 167.0M | 75.3 |" in out.stdout
        and "| ghostnetv3_050 | 2.85M | 49.6M |" in out.stdout
    )
    assert (tmp_path / "f.png").stat().st_size > 0
    again = subprocess.run(
        [sys.executable, str(BENCH / "family.py"), "--output", str(tmp_path / "f.json")], capture_output=True, text=True
    )
    assert again.returncode == 2 and "exists" in again.stderr  # never replaces a result


def test_benchmark_scripts_refuse_bad_input_in_one_line():
    cases = [(["data_loader.py", "--dataset", "nope"], "unknown dataset")]
    for argv, message in cases:
        out = subprocess.run([sys.executable, str(BENCH / argv[0]), *argv[1:]], capture_output=True, text=True)
        assert out.returncode == 2 and message in out.stderr.strip().splitlines()[-1], out.stderr[-500:]
        assert "Traceback" not in out.stderr


def test_loader_benchmark_on_a_dataset_smaller_than_its_steps():
    out = subprocess.run(
        [sys.executable, str(BENCH / "data_loader.py"), "--dataset", "digits", "--batch-size", "128", "--steps", "9"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-1000:]  # digits has 11 batches: StopIteration before
    assert '"train_step_images_per_s"' in out.stdout
