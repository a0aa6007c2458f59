"""`ghostnet visualize` writes into figures/ (not the current folder) and never replaces a PNG without --overwrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from ghostnet.cli import main


def test_figures_go_to_a_folder_and_are_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["visualize", "dataset", "--dataset", "digits"]) == 0
    png = tmp_path / "figures" / "digits-preview.png"
    assert png.read_bytes().startswith(b"\x89PNG") and [p.name for p in tmp_path.iterdir()] == ["figures"]
    assert f"wrote {Path('figures') / 'digits-preview.png'}" in capsys.readouterr().out
    before = png.stat().st_mtime_ns

    with pytest.raises(SystemExit) as e:
        main(["visualize", "dataset", "--dataset", "digits"])
    assert e.value.code == 2 and "digits-preview.png exists; pass --overwrite" in capsys.readouterr().err
    assert png.stat().st_mtime_ns == before

    assert main(["visualize", "dataset", "--dataset", "digits", "--overwrite"]) == 0
    assert png.stat().st_mtime_ns != before
