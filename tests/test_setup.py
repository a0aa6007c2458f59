"""`make setup` in the places a new user starts from: uv on PATH, a pip-less venv, conda, an externally managed
(PEP 668) system Python, a chosen interpreter. uv and pip are stubs that record their arguments: nothing is
downloaded or installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = "--extra onnx --extra detection --extra openvino --extra executorch --extra litert --extra ncnn"
SYNC = f"sync --locked {EXTRAS}"
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def _stub(path: Path, log: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    path.chmod(0o755)
    return path


def _fake_pip(folder: Path, log: Path) -> None:
    """A `pip` whose `python -m pip ...` only records its arguments, and a `uv` module that is not there."""
    for name, main in (
        ("pip", f"import sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]))\n"),
        ("uv", "raise SystemExit('No module named uv')\n"),  # hides a uv installed in this Python
    ):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text("")
        (folder / name / "__main__.py").write_text(main)


def _make(tmp_path: Path, *args: str, path: list[Path] = (), **env: str) -> subprocess.CompletedProcess:
    """`make setup ARGS` with PATH = the given folders + the system's (where no uv is) and no uv/venv/conda env."""
    unset = ("UV", "PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH", "MAKEFLAGS")
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    clean["PATH"] = os.pathsep.join([*map(str, path), "/usr/bin", "/bin"])
    clean.update(env)
    make = shutil.which("make")
    return subprocess.run(
        [make, "-s", "-C", str(ROOT), "setup", *args], capture_output=True, text=True, env=clean, timeout=120
    )


def _log(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def pipless_venv(tmp_path: Path) -> Path:
    venv.create(tmp_path / "pipless", with_pip=False)  # what `uv venv` makes: no pip
    return tmp_path / "pipless" / "bin" / "python"


@pytest.fixture(autouse=True)
def _no_uv_on_system_path() -> None:
    if any(Path(d, "uv").exists() for d in ("/usr/bin", "/bin")):
        pytest.skip("uv is installed system-wide: the no-uv cases cannot be set up")


def test_uv_on_path_in_a_pipless_venv(tmp_path: Path, pipless_venv: Path) -> None:
    log = tmp_path / "uv.log"
    uv = _stub(tmp_path / "bin" / "uv", log)
    run = _make(tmp_path, path=[uv.parent], VIRTUAL_ENV=str(pipless_venv.parents[1]))
    assert run.returncode == 0, run.stderr
    assert _log(log) == ["--version", SYNC]  # uv straight from PATH; .venv's Python left to uv
    assert "pip" not in run.stdout + run.stderr


def test_python_picks_the_projects_interpreter(tmp_path: Path, pipless_venv: Path) -> None:
    log = tmp_path / "uv.log"
    uv = _stub(tmp_path / "bin" / "uv", log)
    run = _make(tmp_path, f"PYTHON={pipless_venv}", path=[uv.parent])
    assert run.returncode == 0, run.stderr
    assert _log(log) == ["--version", f"{SYNC} --python {pipless_venv}"]


def test_uv_variable_names_the_uv(tmp_path: Path) -> None:
    log = tmp_path / "uv.log"
    uv = _stub(tmp_path / "elsewhere" / "my-uv", log)
    run = _make(tmp_path, f"UV={uv}")
    assert run.returncode == 0, run.stderr
    assert _log(log) == ["--version", SYNC]


def test_a_uv_variable_that_does_not_run_is_one_line(tmp_path: Path) -> None:
    run = _make(tmp_path, f"UV={tmp_path / 'no-such-uv'}")
    assert run.returncode != 0
    assert (
        run.stderr.splitlines()[0]
        == f"make setup: UV={tmp_path / 'no-such-uv'} does not run `{tmp_path / 'no-such-uv'} --version`"
    )


def test_no_uv_and_no_pip_is_one_line(tmp_path: Path, pipless_venv: Path) -> None:
    run = _make(tmp_path, f"PYTHON={pipless_venv}")
    assert run.returncode != 0
    (line,) = run.stderr.strip().splitlines()[:1]
    assert line.startswith("make setup: uv not found:") and "UV=/path/to/uv" in line and "pipx install uv" in line
    assert "No module named" not in run.stderr and not run.stdout


def test_externally_managed_python_is_left_alone(tmp_path: Path) -> None:
    """A PEP 668 system Python: no pip call (let alone --break-system-packages), one line saying what to do."""
    log, fake = tmp_path / "pip.log", tmp_path / "site"
    _fake_pip(fake, log)
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    (stdlib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=use apt\n")
    # this interpreter reports a stdlib folder that carries the PEP 668 marker
    (fake / "sitecustomize.py").write_text(
        "import sysconfig\n_get = sysconfig.get_path\n"
        f"sysconfig.get_path = lambda name, *a, **k: {str(stdlib)!r} if name == 'stdlib' else _get(name, *a, **k)\n"
    )
    run = _make(tmp_path, f"PYTHON={BASE_PYTHON}", PYTHONPATH=str(fake))
    assert run.returncode != 0
    assert _log(log) == []
    assert run.stderr.strip().startswith("make setup: uv not found:")


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "install --quiet --user uv"), ({"CONDA_PREFIX": sys.base_prefix}, "install --quiet uv")],
    ids=["user-level", "conda-env"],
)
def test_uv_installed_with_pip_where_it_touches_nothing_shared(tmp_path: Path, env: dict, expected: str) -> None:
    log, fake = tmp_path / "pip.log", tmp_path / "site"
    _fake_pip(fake, log)
    run = _make(tmp_path, f"PYTHON={BASE_PYTHON}", PYTHONPATH=str(fake), **env)
    assert _log(log) == [expected]
    assert "--break-system-packages" not in run.stdout + run.stderr
    assert run.returncode != 0  # the stub pip installed nothing, so `python -m uv sync` cannot run


def test_ci_targets_unchanged() -> None:
    """CI's `make lint` and `make test` still sync from the lock, then run the checks and the suite through uv."""
    env = {k: v for k, v in os.environ.items() if k not in ("UV", "PYTHON", "MAKEFLAGS")}
    for target, last in (("lint", "mypy"), ("test", "pytest -q")):
        run = subprocess.run(
            [shutil.which("make"), "-n", "-C", str(ROOT), target, "UV=uv"], capture_output=True, text=True, env=env
        )
        lines = [ln.strip() for ln in run.stdout.splitlines() if ln.startswith("uv ")]
        assert lines[0] == f"uv {SYNC}"
        assert lines[-1].startswith(f"uv run --locked {EXTRAS}") and lines[-1].endswith(last)
