import csv

import pytest

from conftest import write_cifar
from ghostnet.cli import main
from ghostnet.tasks.classify.ablate import ablation_variants
from golden import GOLDEN


def test_variants_follow_the_papers_two_tables():
    names = [v.name for v in ablation_variants("vgg16", [2, 3, 4, 5], [1, 3, 5, 7])]
    assert names == [
        "vgg16",
        "ghost_vgg16-s2-d3",
        "ghost_vgg16-s3-d3",
        "ghost_vgg16-s4-d3",
        "ghost_vgg16-s5-d3",
        "ghost_vgg16-s2-d1",
        "ghost_vgg16-s2-d5",
        "ghost_vgg16-s2-d7",
    ]
    with pytest.raises(ValueError, match="ablation is defined for vgg16, resnet56"):
        ablation_variants("ghostnet_100", [2], [3])


def test_complexity_only_reproduces_the_golden_rows(tmp_path, capsys):
    assert main(["ablate", "--model", "vgg16", "--complexity-only", "--sweep-dir", str(tmp_path / "s")]) == 0
    rows = {r["variant"]: r for r in csv.DictReader(open(tmp_path / "s" / "results.csv"))}
    assert int(rows["vgg16"]["params"]) == GOLDEN["vgg16"][3]
    assert int(rows["ghost_vgg16-s4-d3"]["macs"]) == GOLDEN["ghost_vgg16 s=4"][4]
    assert int(rows["ghost_vgg16-s2-d7"]["params"]) == GOLDEN["ghost_vgg16 d=7"][3]
    assert "| ghost_vgg16-s5-d3 | 5 | 3 | 3.27 | 66.6 |" in capsys.readouterr().out


def test_training_sweep_end_to_end_and_resume(tmp_path, capsys):
    write_cifar(tmp_path / "data", n_train=40, n_test=10)
    argv = [
        "ablate",
        "--model",
        "resnet56",
        "--ratios",
        "2",
        "3",
        "--dw-sizes",
        "3",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path / "data"),
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--batch-size",
        "20",
        "--sweep-dir",
        str(tmp_path / "sweep"),
        "--no-progress",
        "--seed",
        "1",
    ]
    assert main(argv) == 0
    sweep = tmp_path / "sweep"
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    assert [r["variant"] for r in rows] == ["resnet56", "ghost_resnet56-s2-d3", "ghost_resnet56-s3-d3"]
    assert all(r["top1"] != "" and float(r["train_time_s"]) > 0 for r in rows)
    assert (sweep / "acc_vs_macs.png").read_bytes()[:4] == b"\x89PNG"
    assert "| top-1 (%) |" in (sweep / "results.md").read_text()
    capsys.readouterr()

    # An interrupted sweep: one variant lost its summary (killed before the end); finished ones are not redone.
    (sweep / "ghost_resnet56-s3-d3" / "summary.json").unlink()
    mtime = (sweep / "resnet56" / "last.pth").stat().st_mtime_ns
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "resnet56: done, skipping" in out and "ghost_resnet56-s3-d3: resuming" in out
    assert (sweep / "resnet56" / "last.pth").stat().st_mtime_ns == mtime
