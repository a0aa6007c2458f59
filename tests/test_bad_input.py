"""Inputs that used to be mishandled without a word: each now gets one clear line (exit code 2), or the right answer."""

import json

import pytest
import torch

from ghostnet import create_model
from ghostnet.cli import main
from ghostnet.data import DatasetError, load_dataset


def test_eval_of_a_bare_state_dict_with_other_classes_is_one_line(tmp_path, capsys):
    path = tmp_path / "three.pth"
    torch.save(create_model("ghostnet_small_050", num_classes=3).state_dict(), path)  # no class names inside
    with pytest.raises(SystemExit) as e:
        main(["classify", "eval", str(path), "--model", "ghostnet_small_050", "--dataset", "digits", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1  # was a "shape '[3, 3]' is invalid" traceback
    assert "predicts 3 classes but digits has 10" in err[0]


def test_a_cifar_folder_without_its_meta_file_is_one_line(cifar_dir):
    (cifar_dir / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DatasetError, match=r"has no batches.meta: an incomplete CIFAR folder"):
        load_dataset("cifar10", cifar_dir)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_coco_box_is_rejected_not_clipped_to_the_whole_image(tmp_path, bad):
    pytest.importorskip("pycocotools")
    from PIL import Image

    from ghostnet.tasks.detect.coco import load_coco_split

    (tmp_path / "images").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "a.png")
    ann = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [bad, 5.0, 10.0, 10.0], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [4.0, 5.0, 10.0, 10.0], "area": 100, "iscrowd": 0},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    split = load_coco_split(tmp_path / "images", tmp_path / "ann.json")
    boxes = split.images[0]["boxes"].tolist()
    assert boxes == [[4.0, 5.0, 14.0, 15.0]]  # the NaN one became a full-width box before
    assert "non-finite box" in split.report()
    with pytest.raises(DatasetError, match="non-finite box"):
        load_coco_split(tmp_path / "images", tmp_path / "ann.json", bad="error")


@pytest.mark.parametrize("option", ["--lr", "--weight-decay", "--momentum", "--label-smoothing", "--warmup-epochs"])
@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_settings_are_refused_before_training(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as e:
        main(["classify", "train", f"{option}={value}", "--epochs", "1", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "must be a finite number" in err[0]
    assert not any(tmp_path.iterdir())  # no run folder was made
