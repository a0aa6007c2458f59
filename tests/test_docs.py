"""Every ```bash, ```sh and ```python block of README.md and docs/*.md runs as written, so the docs cannot drift.

The convention: the line just before a block's opening fence may be
    <!-- docs: slow -->                 runs only under `pytest -m slow` (long training, ...)
    <!-- docs: skip (the reason) -->    never run here: needs a download, a GPU, the user's files, or the output
                                        of an earlier slow block; the reason is required
Blocks that only show output use ```text. Blocks run from a scratch copy of the repository root (scripts/,
benchmarks/, docs/), one after another in document order, with the environment's `ghostnet` on PATH: a block
made only of `ghostnet ...` lines runs them in this process (as `ghostnet.cli.main`, which the command calls),
any other shell block runs in bash with `set -e -o pipefail`, a Python block runs in a fresh namespace.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ghostnet.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")
MARKER = re.compile(r"^<!--\s*docs:\s*(?P<kind>\w+)\s*(?:\((?P<reason>.*)\))?\s*-->\s*$")
RUNNABLE = ("bash", "sh", "python")
SHELL_SYNTAX = set("|&;<>()$`*?~\"'\\")  # anything bash would interpret: such a block runs in bash


@dataclass(frozen=True)
class Block:
    where: str  # the file, relative to the repository root
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: str  # "", "slow" or "skip"
    reason: str

    @property
    def id(self) -> str:
        return f"{self.where}:{self.line}"


def parse(path: Path, root: Path = ROOT) -> tuple[list[Block], list[str]]:
    """The runnable blocks of one Markdown file, and what is wrong with its docs markers."""
    lines, blocks, problems = path.read_text().splitlines(), [], []
    where = path.relative_to(root).as_posix()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            if "<!-- docs" in lines[i] and not (i + 1 < len(lines) and FENCE.match(lines[i + 1])):
                problems.append(f"{where}:{i + 1}: a docs marker must be the line just before a block's fence")
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
        marker, reason = "", ""
        if i > 0 and "<!-- docs" in lines[i - 1]:
            m = MARKER.match(lines[i - 1].strip())
            marker, reason = (m["kind"], (m["reason"] or "").strip()) if m else ("?", "")
            if marker not in ("slow", "skip"):
                problems.append(f"{where}:{i}: unknown docs marker {lines[i - 1].strip()!r} (slow or skip (reason))")
            elif marker == "skip" and not reason:
                problems.append(f"{where}:{i}: `docs: skip` needs a reason: <!-- docs: skip (why) -->")
        lang = fence[1].lower()
        if lang in RUNNABLE:
            blocks.append(Block(where, i + 1, lang, "\n".join(lines[i + 1 : end]), marker, reason))
        elif marker:
            problems.append(f"{where}:{i}: a docs marker on a ```{lang} block, which never runs")
        i = end + 1
    return blocks, problems


def _collect() -> tuple[list[Block], list[str]]:
    blocks, problems = [], []
    for path in DOCS:
        b, p = parse(path)
        blocks += b
        problems += p
    return blocks, problems


BLOCKS, PROBLEMS = _collect()


def _param(block: Block):
    marks = {"slow": [pytest.mark.slow], "skip": [pytest.mark.skip(reason=block.reason)]}.get(block.marker, [])
    return pytest.param(block, id=block.id, marks=marks)


def test_docs_markers_are_well_formed() -> None:
    assert not PROBLEMS, "\n".join(PROBLEMS)


def test_the_parser_reads_the_convention(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text(
        "<!-- docs: skip (needs a GPU) -->\n```bash\nghostnet bench --device cuda\n```\n"
        "<!-- docs: slow -->\n```python\nprint(1)\n```\n```text\nout\n```\n"
        "<!-- docs: skip -->\n```sh\nls\n```\n<!-- docs: later -->\n```bash\nls\n```\n<!-- docs: skip (x) -->\n\n"
    )
    blocks, problems = parse(md, tmp_path)
    assert [(b.line, b.lang, b.marker, b.reason) for b in blocks] == [
        (2, "bash", "skip", "needs a GPU"),
        (6, "python", "slow", ""),
        (13, "sh", "skip", ""),
        (17, "bash", "later", ""),
    ]
    assert len(problems) == 3 and "needs a reason" in problems[0] and "unknown" in problems[1]
    assert "just before" in problems[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch repository root: the scripts, benchmarks and docs the blocks name; runs/ and data/ land here."""
    root = tmp_path_factory.mktemp("docs-root")
    for name in ("scripts", "benchmarks"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "docs", root / "docs", ignore=shutil.ignore_patterns("img"))
    (root / "docs" / "img").mkdir()
    shutil.copy(ROOT / "README.md", root)
    return root


def _commands(code: str) -> list[str]:
    """The block's commands: continuation lines joined, blank and comment-only lines dropped."""
    return [c for c in code.replace("\\\n", " ").splitlines() if c.strip() and not c.strip().startswith("#")]


def _in_process(command: str) -> list[str] | None:
    """argv for `ghostnet.cli.main` when `command` is a plain `ghostnet ...` line, else None."""
    body = command.split(" #", 1)[0]
    if SHELL_SYNTAX & set(body):
        return None
    argv = shlex.split(body)
    return argv[1:] if argv and argv[0] == "ghostnet" else None


def _run_shell(block: Block, cwd: Path) -> None:
    argvs = [_in_process(c) for c in _commands(block.code)]
    if argvs and all(a is not None for a in argvs):
        for argv in argvs:
            try:
                code = main(argv)
            except SystemExit as e:
                code = e.code
            assert code in (0, None), f"{block.id}: `ghostnet {shlex.join(argv)}` exited with {code}"
        return
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["MPLBACKEND"] = "Agg"
    script = "set -e -o pipefail\n" + block.code
    run = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)
    assert run.returncode == 0, f"{block.id} failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
def test_docs_block_runs(block: Block, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    if block.lang == "python":
        exec(compile(block.code, block.id, "exec"), {"__name__": "__main__"})
    else:
        _run_shell(block, workdir)
