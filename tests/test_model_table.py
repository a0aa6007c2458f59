"""`ghostnet list`'s params and MACs: measured by the profiler into a generated table, never typed."""

from __future__ import annotations

import re

import pytest

from ghostnet.analysis.model_table import load_table, measure
from ghostnet.cli import main
from ghostnet.cli.models import describe
from ghostnet.models import list_models, model_entry
from ghostnet.models.registry import IMAGE_TASKS

FIGURE = re.compile(r"(\d+(?:\.\d+)?)M params, (\d+(?:\.\d+)?)M MACs")


def test_table_has_a_row_for_every_registered_model() -> None:
    table = load_table()
    missing, extra = set(list_models(task=IMAGE_TASKS)) - set(table), set(table) - set(list_models(task=IMAGE_TASKS))
    assert not missing and not extra, f"run `uv run python scripts/model_table.py` (missing {missing}, extra {extra})"


@pytest.mark.parametrize("name", ["ghostnet_small_050", "ghostnet_small_100", "ghost_resnet56"])
def test_rows_match_the_profiler(name: str) -> None:
    # the ones the README and the issue quote: 13.42M, 43.95M and 65.47M MACs
    assert load_table()[name] == measure(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models(task=IMAGE_TASKS))
def test_every_row_matches_the_profiler(name: str) -> None:
    assert load_table()[name] == measure(name)


def test_list_shows_the_measured_figures(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "ghost*"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["ghostnet_small_050"][1] == "classify"  # the task column
    assert rows["ghostnet_small_050"][2:5] == ["2.59M", "13.42M", "32"]
    assert rows["ghostnet_small_100"][2:5] == ["5.18M", "43.95M", "32"]
    assert rows["ghost_resnet56"][2:5] == ["0.44M", "65.47M", "32"]
    assert rows["ghostnet_100"][2:5] == ["5.18M", "141.15M", "224"]
    for name, row in rows.items():
        assert not FIGURE.search(" ".join(row[5:])), f"{name}: a typed figure is shown"


def test_typed_figures_are_dropped_from_descriptions() -> None:
    assert describe("GhostNet 1.0x: 5.18M params, 141.2M MACs at 224 (paper: 73.9 top-1).") == (
        "GhostNet 1.0x (paper: 73.9 top-1)."
    )
    assert describe("GhostNetV3 0.5x: 3.40M params, 117.5M MACs at 224 in training form (folded: 2.85M, 49.6M).") == (
        "GhostNetV3 0.5x in training form."
    )
    assert describe("GhostNet at any width multiplier.") == "GhostNet at any width multiplier."


@pytest.mark.parametrize("name", list_models(task=IMAGE_TASKS))
def test_figures_left_in_docstrings_agree_with_the_table(name: str) -> None:
    """Until the builders' docstrings lose their figures, they must at least round to the measured ones."""
    row = load_table()[name]
    for params, macs in FIGURE.findall(model_entry(name).description)[:1]:
        decimals = lambda text: len(text.split(".")[1]) if "." in text else 0  # noqa: E731
        assert float(params) == round(row["params"] / 1e6, decimals(params)), f"{name}: {params}M params"
        assert float(macs) == round(row["macs"] / 1e6, decimals(macs)), f"{name}: {macs}M MACs"
