"""The distribution: its name and metadata, what the sdist carries, and a built wheel installed into a clean venv."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import ghostnet

ROOT = Path(__file__).resolve().parents[1]
DIST = "ghostnet-pytorch"  # `ghostnet` on PyPI is an unrelated network scanner


def _uv() -> str:
    # `uv run` (make test) exports UV; otherwise the one on PATH
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        pytest.skip("uv is not available")
    return uv


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_distribution_name_and_metadata() -> None:
    project = _pyproject()["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {"ghostnet": "ghostnet.cli:main"}
    assert project["readme"] == {"file": "README.md", "content-type": "text/markdown"}
    for key in ("description", "keywords", "classifiers", "urls", "license", "requires-python"):
        assert project[key], key
    # the installed distribution is this one, and its version is the package's
    assert importlib.metadata.version(DIST) == ghostnet.__version__


def test_install_lines_name_the_distribution() -> None:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in docs:
        for line in path.read_text().splitlines():
            # `pip install ghostnet`, `pip install "ghostnet[onnx]"`, ... would fetch the network scanner
            for cmd in ("pip install ", "uv add ", "uv pip install "):
                if cmd in line:
                    rest = line.split(cmd, 1)[1].lstrip("'\"")
                    assert not (rest.startswith("ghostnet[") or rest.split(" ")[0] in ("ghostnet", "ghostnet`")), (
                        f"{path.name}: {line.strip()}"
                    )


def _build(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "dist"
    subprocess.run([_uv(), "build", "--quiet", "--out-dir", str(out), str(ROOT)], check=True, timeout=300)
    (wheel,) = out.glob("ghostnet_pytorch-*.whl")
    (sdist,) = out.glob("ghostnet_pytorch-*.tar.gz")
    return wheel, sdist


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _build(tmp_path_factory.mktemp("build"))


def test_sdist_carries_no_runs_data_or_figures(built: tuple[Path, Path]) -> None:
    _, sdist = built
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert (
        "pyproject.toml" in names
        and "README.md" in names
        and "src/ghostnet/__init__.py" in names
        and "LICENSE" in names
    )
    bloat = ("runs/", "data/", ".venv/", "docs/img/", "dist/", ".git/", ".pytest_cache/", "__pycache__")
    assert not [n for n in names if n.startswith(bloat) or "__pycache__" in n or n.endswith((".png", ".pth"))]
    assert sdist.stat().st_size < 1_000_000


def test_wheel_installs_into_a_clean_venv(built: tuple[Path, Path], tmp_path: Path) -> None:
    """The wheel plus the locked dependencies (from uv's cache, offline) in a new venv: the command and import work."""
    wheel, _ = built
    uv, venv = _uv(), tmp_path / "venv"
    python = venv / "bin" / "python"
    # the lock's own wheels (symlinked from uv's cache, offline): no index metadata needed, no copy of torch
    sync = [uv, "sync", "--quiet", "--offline", "--locked", "--no-dev", "--no-install-project", "--link-mode=symlink"]
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    subprocess.run([*sync, "--python", sys.executable, "--directory", str(ROOT)], check=True, env=env, timeout=600)
    install = [uv, "pip", "install", "-q", "--offline", "--no-deps", "--link-mode=symlink", "--python", str(python)]
    subprocess.run([*install, str(wheel)], check=True, timeout=120)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([venv / "bin" / "ghostnet", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: ghostnet") and "train" in run.stdout
    code = "import ghostnet; print(ghostnet.__file__); print(ghostnet.__version__)"
    run = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    where, version = run.stdout.split()
    assert Path(where).is_relative_to(venv) and version == ghostnet.__version__  # the wheel's copy, not src/


def test_twine_check(built: tuple[Path, Path]) -> None:
    """PyPI's own metadata check; twine comes from uv's cache (run `uvx twine check dist/*` once online)."""
    run = subprocess.run(
        [_uv(), "tool", "run", "--offline", "twine", "check", "--strict", *map(str, built)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if run.returncode != 0 and "PASSED" not in run.stdout and "FAILED" not in run.stdout:
        pytest.skip(f"twine is not in uv's cache: {run.stderr.strip().splitlines()[-1:]}")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("PASSED") == 2
