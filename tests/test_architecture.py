"""The package's structural rules, checked on the source: small functions, no private names across modules.

The layer rules themselves are import-linter contracts in pyproject.toml (`make lint`).
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ghostnet"
FILES = sorted(SRC.rglob("*.py"))
MAX_FUNCTION_LINES = 60


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _functions(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_function_is_longer_than_a_reader_can_take_in(path):
    too_long = [
        f"{f.name} ({f.end_lineno - f.lineno + 1} lines, line {f.lineno})"
        for f in _functions(_tree(path))
        if f.end_lineno - f.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not too_long, f"split these (> {MAX_FUNCTION_LINES} lines): {', '.join(too_long)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_private_name_is_imported_from_another_module(path):
    private = [
        f"{node.module}.{alias.name} (line {node.lineno})"
        for node in ast.walk(_tree(path))
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not private, f"imports private names: {', '.join(private)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_library_code_leaves_global_state_alone(path):
    """No backend switch or process-wide warning filter; a thread count set for a measurement is put back."""
    text = path.read_text()
    assert "matplotlib.use(" not in text and "warnings.filterwarnings(" not in text
    if "warnings.simplefilter(" in text:
        assert "warnings.catch_warnings()" in text, "a warning filter outside `with warnings.catch_warnings()`"
    if "torch.set_num_threads(" in text and not path.is_relative_to(SRC / "cli"):
        assert "finally:" in text, "torch.set_num_threads with nothing that restores the previous count"
