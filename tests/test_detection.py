"""Detection: builders, COCO-format data and its checks, training through the engine, mAP, CLI, export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from ghostnet import create_model, save_weights
from ghostnet.cli import main
from ghostnet.data import DatasetError
from ghostnet.models.checkpoint import read_checkpoint
from ghostnet.tasks.detect.coco import DetectionLoader, load_coco_split
from ghostnet.tasks.detect.models import fasterrcnn_ghostnet, ghostnet_fpn_backbone, retinanet_ghostnet
from ghostnet.tasks.detect.synth import make_detection_set
from ghostnet.tasks.detect.task import coco_metrics, evaluate_detector, load_detector


def _targets():
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [40.0, 30.0, 90.0, 70.0]]), "labels": torch.tensor([2, 1])},
    ]


@pytest.mark.parametrize("width", [0.5, 1.1])
def test_backbone_levels_and_channels(width):
    b = ghostnet_fpn_backbone(width=width).eval()
    out = b(torch.randn(1, 3, 128, 160))
    assert list(out) == ["0", "1", "2", "pool"]
    assert [tuple(v.shape[2:]) for v in out.values()] == [(16, 20), (8, 10), (4, 5), (2, 3)]
    assert all(v.shape[1] == 256 for v in out.values())


def test_trainable_layers_and_frozen_bn():
    b = ghostnet_fpn_backbone(width=0.5, trainable_layers=2)
    trainable = {".".join(n.split(".")[:2]) for n, p in b.body.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.7", "blocks.6"}
    assert not any(type(m) is torch.nn.BatchNorm2d for m in b.body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in b.body.modules())
    with pytest.raises(ValueError, match="trainable_layers"):
        ghostnet_fpn_backbone(trainable_layers=11)


def test_backbone_loads_classification_weights(tmp_path):
    cls = create_model("ghostnet", width=0.5)
    path = save_weights(cls, tmp_path / "w.pth")
    b = ghostnet_fpn_backbone(width=0.5, backbone_weights=path, frozen_bn=False)
    assert torch.equal(
        b.body.blocks[2][0].ghost1.primary_conv[0].weight, cls.blocks[2][0].ghost1.primary_conv[0].weight
    )


@pytest.mark.parametrize("builder", [retinanet_ghostnet, fasterrcnn_ghostnet])
def test_detectors_train_and_predict(builder):
    torch.manual_seed(0)
    model = builder(num_classes=3, width=0.5, min_size=128, max_size=160)
    images = [torch.rand(3, 100, 120), torch.rand(3, 96, 128)]
    losses = model(images, _targets())
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}


# ---------------------------------------------------------------- COCO data, training, evaluation, CLI

SMALL = [
    "--min-size",
    "96",
    "--max-size",
    "96",
    "--width",
    "0.5",
    "--fpn-channels",
    "32",
    "--batch-size",
    "4",
    "--eval-batch-size",
    "4",
    "--num-workers",
    "0",
    "--no-progress",
]


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    """A tiny real-format COCO set: scikit-learn's digits pasted on its sample photographs."""
    root = tmp_path_factory.mktemp("coco") / "det"
    make_detection_set(
        root,
        n_train=12,
        n_val=6,
        image_size=96,
        objects_per_image=(1, 3),
        object_size=(24, 48),
        source="digits",
        seed=1,
    )
    return root


def test_generated_set_is_valid_coco(coco):
    split = load_coco_split(coco / "train", coco / "annotations" / "instances_train.json", bad="error")
    assert len(split) == 12 and split.classes == [str(i) for i in range(10)] and split.num_classes == 11
    assert not split.problems
    for im in split.images:
        b = im["boxes"]
        assert (
            len(b) >= 1 and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all() and b.min() >= 0 and b.max() <= 96
        )


def _write_bad_set(root):
    """Valid images with every kind of bad annotation."""
    import shutil

    from PIL import Image

    (root / "imgs").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 48), (i * 40, 90, 120)).save(root / "imgs" / f"{i}.jpg")
    (root / "imgs" / "junk.jpg").write_bytes(b"not an image")
    shutil.copy(root / "imgs" / "0.jpg", root / "imgs" / "wrong_size.jpg")
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in range(3)]
    images += [
        {"id": 10, "file_name": "missing.jpg", "width": 64, "height": 48},
        {"id": 11, "file_name": "junk.jpg", "width": 64, "height": 48},
        {"id": 12, "file_name": "wrong_size.jpg", "width": 100, "height": 48},
    ]
    anns = [
        {"id": 1, "image_id": 0, "category_id": 1, "bbox": [5, 5, 20, 20]},  # fine
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 30, 30, 30]},  # sticks out: clipped
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [10, 10, 0, 12]},  # zero area
        {"id": 4, "image_id": 2, "category_id": 1, "bbox": [70, 60, 10, 10]},  # wholly outside
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [1, 1, 10, 10]},  # unknown category
        {"id": 6, "image_id": 99, "category_id": 1, "bbox": [1, 1, 10, 10]},  # unknown image
        {"id": 7, "image_id": 10, "category_id": 1, "bbox": [1, 1, 10, 10]},  # its image file is missing
        {"id": 8, "image_id": 0, "category_id": 1, "bbox": [1, 2]},  # malformed bbox
    ]
    cats = [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    ann = root / "instances_train.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "imgs", ann


def test_malformed_annotations_are_skipped_and_counted(tmp_path):
    imgs, ann = _write_bad_set(tmp_path)
    split = load_coco_split(imgs, ann, bad="skip")
    assert [im["id"] for im in split.images] == [0, 1, 2]
    assert [len(im["labels"]) for im in split.images] == [1, 1, 0]
    assert split.images[1]["boxes"].tolist() == [[50.0, 30.0, 64.0, 48.0]]  # clipped to the 64x48 image
    p = split.problems
    assert p["annotations with zero area"] == 1 and p["annotations outside their image"] == 1
    assert p["annotations with an unknown category id"] == 1 and p["annotations with an unknown image id"] == 1
    assert p["images with a missing file"] == 1 and p["images that cannot be read"] == 1
    assert p["images whose size differs from the JSON"] == 1 and p["boxes clipped to their image"] == 1
    assert (
        p["annotations of skipped images"] == 1 and p["annotations without image_id/category_id/bbox [x, y, w, h]"] == 1
    )
    assert "1 annotations with zero area" in split.report()
    # the evaluation ground truth holds the same cleaned annotations
    assert len(split.coco.getAnnIds()) == 2


def test_malformed_annotations_can_be_refused(tmp_path):
    imgs, ann = _write_bad_set(tmp_path)
    with pytest.raises(DatasetError, match="annotations with zero area.*bad_annotations=skip"):
        load_coco_split(imgs, ann, bad="error")
    (tmp_path / "bad.json").write_text('{"images": []}')
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        load_coco_split(imgs, tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match="not a readable JSON"):
        load_coco_split(imgs, tmp_path / "broken.json")


def test_flip_mirrors_image_and_boxes(coco):
    split = load_coco_split(coco / "train", coco / "annotations" / "instances_train.json")
    plain = DetectionLoader(split, 1, train=False, num_workers=0)
    x0, t0 = next(plain.batches())
    x0, t0 = x0[0], t0[0]
    flips = 0
    loader = DetectionLoader(split, 12, train=True, flip=True, seed=5, num_workers=0)
    for epoch in range(12):  # the flip of one image is a coin toss per epoch
        xs, ts = next(loader.batches(epoch))
        for x, t in zip(xs, ts):
            if t["image_id"] == t0["image_id"] and not torch.equal(x, x0):
                flips += 1
                assert torch.equal(x, x0.flip(-1))
                mirrored = t0["boxes"].clone()
                mirrored[:, [0, 2]] = 96 - t0["boxes"][:, [2, 0]]
                assert torch.allclose(t["boxes"], mirrored)
    assert flips >= 1


def test_coco_metrics_perfect_none_and_shifted(coco):
    split = load_coco_split(coco / "val", coco / "annotations" / "instances_val.json")
    perfect = [
        {
            "image_id": im["id"],
            "category_id": split.category_ids[c - 1],
            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
            "score": 1.0,
        }
        for im in split.images
        for b, c in zip(im["boxes"].tolist(), im["labels"].tolist())
    ]
    m = coco_metrics(split, perfect)
    assert m["map"] == pytest.approx(100.0) and m["map50"] == pytest.approx(100.0)
    present = {split.classes[c - 1] for im in split.images for c in im["labels"].tolist()}
    assert {n for n, v in m["per_class"].items() if v is not None} == present
    assert coco_metrics(split, [])["map"] == 0.0
    shifted = [{**r, "bbox": [r["bbox"][0] + r["bbox"][2] * 0.3, *r["bbox"][1:]]} for r in perfect]  # IoU ~0.54
    s = coco_metrics(split, shifted)
    assert s["map50"] == pytest.approx(100.0) and s["map"] < 50
    wrong_class = [
        {**r, "category_id": split.category_ids[(split.category_ids.index(r["category_id"]) + 1) % 10]} for r in perfect
    ]
    assert coco_metrics(split, wrong_class)["map"] == 0.0


@pytest.mark.parametrize("name", ["retinanet_ghostnet", "fasterrcnn_ghostnet"])
def test_a_few_steps_reduce_the_loss(coco, name):
    from ghostnet.models import create_model

    torch.manual_seed(0)
    split = load_coco_split(coco / "train", coco / "annotations" / "instances_train.json")
    model = create_model(name, num_classes=split.num_classes, width=0.5, min_size=96, max_size=96, fpn_channels=32)
    images, targets = next(DetectionLoader(split, 4, train=True, flip=False, num_workers=0).batches())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(12):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("width", [0.5, 1.0, 1.3])
def test_detectors_build_at_several_widths_with_custom_levels(width):
    from ghostnet.models import create_model, model_spec

    for name in ("retinanet_ghostnet", "fasterrcnn_ghostnet"):
        kwargs = dict(num_classes=4, width=width, min_size=64, max_size=64, out_indices=(3, 4), fpn_channels=16)
        m = create_model(name, **kwargs).eval()
        with torch.no_grad():
            out = m([torch.rand(3, 64, 80)])
        assert set(out[0]) == {"boxes", "scores", "labels"}
        saved = model_spec(name, {**kwargs, "backbone_weights": None}, m).kwargs  # what a checkpoint keeps
        assert saved["frozen_bn"] is False and saved["num_classes"] == 4 and "backbone_weights" not in saved


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # usage errors leave through argparse
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_train_resume_eval_detect(coco, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = ["detect", "train", "--data-dir", str(coco), "--output-dir", str(runs), "--name", "r", "--seed", "2", *SMALL]
    code, out, _ = _run(
        capsys, *base, "--model", "fasterrcnn_ghostnet", "--epochs", "1", "--optimizer", "adamw", "--lr", "0.001"
    )
    assert code == 0
    assert "instances_train.json: 12 images" in out and "mAP" in out
    code, _, err = _run(capsys, *base, "--epochs", "1")
    assert code == 2 and "exists" in err  # never overwrites a run
    code, out, _ = _run(
        capsys, "detect", "train", "--output-dir", str(runs), "--name", "r", "--resume", "--epochs", "2"
    )
    assert code == 0 and "resuming" in out
    run = runs / "r"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(0 <= r["eval_map"] <= 100 for r in log)
    assert {"train_classifier", "train_objectness", "eval_map50", "eval_class_ap"} <= set(log[0])
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["model_name"] == "fasterrcnn_ghostnet" and ckpt["data"]["classes"][0] == "0" and ckpt["step"] == 6
    assert (run / "curves.png").stat().st_size > 0

    code, out, _ = _run(
        capsys, "detect", "eval", str(run / "last.pth"), "--json", "--no-progress", "--num-workers", "0"
    )
    r = json.loads(out)
    assert (
        code == 0 and r["images"] == 6 and 0 <= r["map"] <= 100 and set(r["per_class"]) == {str(i) for i in range(10)}
    )
    model, data, _ = load_detector(run / "last.pth")
    split = load_coco_split(coco / "val", coco / "annotations" / "instances_val.json", categories=data["category_ids"])
    again = evaluate_detector(model, DetectionLoader(split, 2, train=False, num_workers=0), split)
    assert again["map"] == pytest.approx(r["map"])  # batch size does not change the result

    code, out, _ = _run(
        capsys,
        "detect",
        "predict",
        str(coco / "val" / "000000.jpg"),
        str(coco / "val" / "000001.jpg"),
        "--checkpoint",
        str(run / "last.pth"),
        "--output-dir",
        str(tmp_path / "drawn"),
        "--score-threshold",
        "0.0",
    )
    assert code == 0 and "object(s)" in out
    from PIL import Image

    with Image.open(tmp_path / "drawn" / "000000.png") as im:
        assert im.size == (96, 96)
    code, _, err = _run(
        capsys,
        "detect",
        "predict",
        str(coco / "val" / "000000.jpg"),
        "--checkpoint",
        str(run / "last.pth"),
        "--output-dir",
        str(tmp_path / "drawn"),
    )
    assert code == 2 and "exists; pass --overwrite" in err
    if not torch.cuda.is_available():
        code, _, err = _run(
            capsys,
            "detect",
            "predict",
            str(coco / "val" / "000000.jpg"),
            "--checkpoint",
            str(run / "last.pth"),
            "--device",
            "cuda",
        )
        assert code == 2 and "CUDA is not available" in err
    code, _, err = _run(capsys, "detect", "eval", str(coco / "annotations" / "instances_val.json"))
    assert code == 2 and "error" in err


def test_cli_rejects_bad_detection_settings(coco, tmp_path, capsys):
    imgs, ann = _write_bad_set(tmp_path / "bad")
    common = ["detect", "train", "--output-dir", str(tmp_path / "runs"), *SMALL]
    code, _, err = _run(
        capsys,
        *common,
        "--train-images",
        str(imgs),
        "--train-annotations",
        str(ann),
        "--val-images",
        str(imgs),
        "--val-annotations",
        str(ann),
        "--bad-annotations",
        "error",
    )
    assert code == 2 and "annotations with zero area" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, *common, "--data-dir", str(tmp_path / "nowhere"))
    assert code == 2 and "instances_train" in err
    code, _, err = _run(capsys, *common, "--data-dir", str(coco), "--model", "ghostnet_100")
    assert code == 2 and "retinanet_ghostnet" in err
    code, _, err = _run(capsys, *common, "--data-dir", str(coco), "--max-size", "50")
    assert code == 2 and "max_size" in err


def test_two_process_ddp_detection(coco, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29547",
        "-m",
        "ghostnet",
        "detect",
        "train",
        "--data-dir",
        str(coco),
        "--output-dir",
        str(tmp_path / "runs"),
        "--name",
        "ddp",
        "--epochs",
        "1",
        *SMALL,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True and summary["steps"] == 3


@pytest.mark.parametrize("name", ["retinanet_ghostnet", "fasterrcnn_ghostnet"])
def test_whole_detector_exports_to_onnx_with_matching_detections(tmp_path, name):
    from ghostnet.models import create_model
    from ghostnet.tasks.detect.export import export_detector

    torch.manual_seed(0)
    # score_thresh 0 keeps every candidate, so the check compares hundreds of detections rather than none
    model = create_model(name, num_classes=4, width=0.5, min_size=96, max_size=96, fpn_channels=16, score_thresh=0.0)
    if (
        name == "retinanet_ghostnet"
    ):  # an untrained head scores every anchor ~0.01: spread the scores like a trained one
        torch.nn.init.normal_(model.head.classification_head.cls_logits.weight, std=0.3)
    r = export_detector(model, tmp_path / "det.onnx", "detector", input_size=(96, 96))
    assert (
        r.max_abs_diff <= 1e-3
        and r.output_names == ["boxes", "scores", "labels"]
        and (tmp_path / "det.onnx").stat().st_size > 0
    )
    with pytest.raises(ValueError, match="onnx only"):
        export_detector(model, tmp_path / "det.pt", "detector", fmt="torchscript")


def test_cli_exports_a_trained_detector(coco, tmp_path, capsys):
    code, _, _ = _run(
        capsys,
        "detect",
        "train",
        "--data-dir",
        str(coco),
        "--output-dir",
        str(tmp_path),
        "--name",
        "r",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        *SMALL,
    )
    ckpt = str(tmp_path / "r" / "last.pth")
    assert code == 0
    code, out, _ = _run(
        capsys,
        "detect",
        "export",
        "--checkpoint",
        ckpt,
        "--output",
        str(tmp_path / "bb.onnx"),
        "--dynamic-batch",
        "--fuse",
    )
    assert code == 0 and "features_3" in out and "max abs diff" in out  # P3-P5 + P6 + P7: five maps
    code, out, _ = _run(
        capsys,
        "detect",
        "export",
        "--checkpoint",
        ckpt,
        "--detector-part",
        "detector",
        "--output",
        str(tmp_path / "d.onnx"),
    )
    assert code == 0 and "['boxes', 'scores', 'labels']" in out
    code, _, err = _run(
        capsys,
        "detect",
        "export",
        "--checkpoint",
        ckpt,
        "--detector-part",
        "detector",
        "--format",
        "torchscript",
        "--output",
        str(tmp_path / "d.pt"),
    )
    assert code == 2 and "onnx only" in err
    from ghostnet import create_model, save_weights

    classifier = save_weights(create_model("ghostnet_050"), tmp_path / "cls.pth", "ghostnet_050", {})
    code, _, err = _run(capsys, "detect", "export", "--checkpoint", str(classifier))
    assert code == 2 and "not a detector trained with `ghostnet detect train`" in err


def test_coco_layout_is_found_and_ambiguity_is_refused(tmp_path):
    from ghostnet.tasks.detect.coco import find_coco_split

    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{}")
    assert find_coco_split(tmp_path, "train") == (
        tmp_path / "train2017",
        tmp_path / "annotations" / "instances_train2017.json",
    )
    with pytest.raises(DatasetError, match="images folder .*val2017 does not exist"):
        (tmp_path / "annotations" / "instances_val2017.json").write_text("{}")
        find_coco_split(tmp_path, "val")
    (tmp_path / "annotations" / "instances_train2014.json").write_text("{}")
    with pytest.raises(DatasetError, match="2 .*instances_train\\*.json found"):
        find_coco_split(tmp_path, "train")


def test_detection_runs_keep_an_ema_like_classification(coco, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["detect", "train", "--data-dir", str(coco), "--output-dir", str(runs), "--name", "e", *SMALL]
    code, _, err = _run(capsys, *args, "--epochs", "1", "--max-steps", "2", "--ema-decay", "0.9")
    assert code == 0, err
    log = [json.loads(line) for line in (runs / "e" / "log.jsonl").read_text().splitlines()]
    assert 0 <= log[0]["ema_eval_map"] <= 100
    assert read_checkpoint(runs / "e" / "last.pth")["model_ema"]


def test_a_whole_detector_export_to_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    import errno
    import os

    from ghostnet.deploy.export import ExportWriteError
    from ghostnet.models import create_model
    from ghostnet.tasks.detect.export import export_detector

    def full_disk(model, args, f, **kw):
        Path(f).write_bytes(bytes(4096))  # a partial file, as a full disk leaves it
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    model = create_model("fasterrcnn_ghostnet", num_classes=4, width=0.5, min_size=96, max_size=96, fpn_channels=16)
    with pytest.raises(ExportWriteError, match=r"could not write .*det\.onnx: No space left on device"):
        export_detector(model, tmp_path / "det.onnx", "detector", input_size=(96, 96))
    assert list(tmp_path.iterdir()) == []
