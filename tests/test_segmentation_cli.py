"""Segmentation end to end: seg-train (kill + resume), seg-eval, segment, ONNX export, bench rows."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ghostnet.cli import main
from ghostnet.models import create_model
from ghostnet.models.checkpoint import read_checkpoint
from ghostnet.tasks.segment.predict import export_segmenter
from ghostnet.tasks.segment.task import SegmentationTask, load_segmenter
from seg_data import write_folder, write_voc


def _run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


TINY = [
    "--model", "lraspp_ghostnet", "--width", "0.25", "--crop-size", "32", "--batch-size", "2", "--epochs", "2",
    "--num-workers", "0", "--device", "cpu", "--no-progress", "--deterministic", "--seed", "3",
    "--optimizer", "adamw", "--lr", "0.003", "--warmup-epochs", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A VOC-format set and a finished 2-epoch run on it."""
    tmp = tmp_path_factory.mktemp("seg")
    root = write_voc(tmp / "voc", n_train=8, n_val=3)
    runs = tmp / "runs"
    code = main(
        [
            "segment",
            "train",
            "--dataset",
            "voc",
            "--data-dir",
            str(root),
            "--output-dir",
            str(runs),
            "--name",
            "straight",
            *TINY,
        ]
    )
    assert code == 0
    return root, runs


def test_seg_train_writes_a_run_and_resumes_after_a_kill_bit_identically(trained, capsys, monkeypatch):
    root, runs = trained
    run = runs / "straight"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2] and all(0 <= r["eval_miou"] <= 100 for r in log)
    assert {"train_pixel_acc", "eval_pixel_acc", "eval_class_iou"} <= set(log[0])
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["model_name"] == "lraspp_ghostnet" and ckpt["data"]["classes"][15] == "person" and ckpt["step"] == 8
    assert (run / "curves.png").stat().st_size > 0 and (run / "summary.json").is_file()

    calls = {"n": 0}
    step = SegmentationTask.step

    def dies_at_the_sixth(self, net, batch):  # a kill in the middle of epoch 2, after step 5 was saved
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return step(self, net, batch)

    base = [
        "segment",
        "train",
        "--dataset",
        "voc",
        "--data-dir",
        str(root),
        "--output-dir",
        str(runs),
        "--name",
        "broken",
    ]
    monkeypatch.setattr(SegmentationTask, "step", dies_at_the_sixth)
    code, _, _ = _run(capsys, *base, *TINY, "--save-every-steps", "1")
    assert code == 130 and read_checkpoint(runs / "broken" / "last.pth")["step"] == 5
    monkeypatch.setattr(SegmentationTask, "step", step)
    code, out, _ = _run(capsys, "segment", "train", "--output-dir", str(runs), "--name", "broken", "--resume")
    assert code == 0 and "resuming" in out
    a, b = read_checkpoint(run / "last.pth")["model"], read_checkpoint(runs / "broken" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_seg_eval_full_images_and_segment_overlays(trained, capsys, tmp_path):
    root, runs = trained
    ckpt = str(runs / "straight" / "last.pth")
    code, out, _ = _run(capsys, "segment", "eval", ckpt, "--json", "--no-progress", "--num-workers", "0")
    r = json.loads(out)
    assert code == 0 and r["images"] == 3 and len(r["per_class_iou"]) == 21
    labelled = sum(
        int((np.asarray(Image.open(m)) != 255).sum())
        for m in (root / "VOCdevkit/VOC2012/SegmentationClass").glob("2008_*.png")
    )
    assert r["pixels"] == labelled == sum(map(sum, r["confusion"]))  # every labelled pixel, at full resolution
    code, out, _ = _run(capsys, "segment", "eval", ckpt, "--no-progress", "--num-workers", "0", "--confusion")
    assert code == 0 and "mIoU" in out and "confusion matrix" in out and "person" in out

    image = root / "VOCdevkit/VOC2012/JPEGImages/2008_000000.jpg"
    args = [
        "segment",
        "predict",
        str(image),
        "--checkpoint",
        ckpt,
        "--output-dir",
        str(tmp_path / "ov"),
        "--device",
        "cpu",
    ]
    code, out, _ = _run(capsys, *args)
    assert code == 0 and "%" in out
    with Image.open(tmp_path / "ov" / "2008_000000.png") as im:
        assert im.size == (48, 40) and im.mode == "RGB"
    code, _, err = _run(capsys, *args)
    assert code == 2 and "--overwrite" in err


def test_onnx_export_parity_at_two_sizes(trained, capsys, tmp_path):
    import onnxruntime as ort

    _, runs = trained
    ckpt = runs / "straight" / "last.pth"
    out = tmp_path / "seg.onnx"
    code, text, err = _run(
        capsys, "segment", "export", "--checkpoint", str(ckpt), "--output", str(out), "--input-size", "64", "96"
    )
    assert code == 0, err
    assert "any batch and height and width" in text and "argmax agrees" in text
    model = load_segmenter(ckpt)[0]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for h, w in ((64, 96), (80, 56)):
        x = torch.randn(1, 3, h, w)
        with torch.no_grad():
            ref = model(x)["out"]
        got = torch.from_numpy(sess.run(None, {"input": x.numpy()})[0])
        assert got.shape == (1, 21, h, w) and (got - ref).abs().max() <= 1e-4
        assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.999
    code, _, err = _run(capsys, "segment", "export", "--checkpoint", str(ckpt), "--output", str(out))
    assert code == 2 and "exists" in err
    fused = tmp_path / "fused.onnx"
    code, text, err = _run(capsys, "segment", "export", "--checkpoint", str(ckpt), "--output", str(fused), "--fuse")
    assert code == 0 and fused.is_file(), err
    code, _, err = _run(
        capsys,
        "segment",
        "export",
        "--checkpoint",
        str(ckpt),
        "--format",
        "torchscript",
        "--output",
        str(tmp_path / "t.pt"),
    )
    assert code == 2 and "onnx" in err
    report = export_segmenter(
        create_model("deeplabv3_ghostnet", num_classes=3, width=0.25), tmp_path / "d.onnx", (48, 48)
    )
    assert report.max_abs_diff <= 1e-4 and report.input_shape == ["batch", 3, "height", "width"]


def test_bench_segmentation_rows_and_input_size(capsys):
    from ghostnet.bench import BenchSetup, run_latency

    setup = BenchSetup(model_name="lraspp_ghostnet_100", input_size=(32, 48), batch_sizes=(1,), threads=1, runs=2,
                       warmup=1, onnx=False)  # fmt: skip
    r = run_latency(setup).to_dict()
    models = {row["model"] for row in r["rows"]}
    assert {"lraspp_ghostnet_100", "deeplabv3_ghostnet_100", "tv lraspp_mobilenet_v3_large"} <= models
    assert r["machine"]["input_size"] == [32, 48] and r["baseline"] == "tv lraspp_mobilenet_v3_large / eager"
    ours = next(x for x in r["rows"] if x["model"] == "lraspp_ghostnet_100" and x["form"] == "eager")
    assert ours["ratio"] > 0 and ours["macs"] > 0
    code, _, err = _run(capsys, "bench", "latency", "--input-size", "1", "2", "3", "--quick")
    assert code == 2 and "H W" in err


def test_folder_run_with_other_classes(tmp_path, capsys):
    root = write_folder(tmp_path / "f", n_train=4, n_val=2)
    args = ["segment", "train", "--dataset", "folder", "--data-dir", str(root), "--output-dir", str(tmp_path / "runs")]
    code, out, err = _run(capsys, *args, *TINY[:-2], "--epochs", "1", "--model", "deeplabv3_ghostnet", "--aux-loss")
    assert code == 0, err
    assert "3 classes" in out
    (checkpoint,) = (tmp_path / "runs").glob("*/best.pth")
    renamed = write_folder(tmp_path / "g", n_train=1, n_val=2, classes=("background", "b", "a"))
    code, _, err = _run(capsys, "segment", "eval", str(checkpoint), "--dataset", "folder", "--data-dir", str(renamed))
    assert code == 2 and "class 1 is 'b', the segmenter's is 'a'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_two_process_ddp_seg_train_agrees_with_single_process_seg_eval(tmp_path):
    import os
    import subprocess
    import sys

    root = write_folder(tmp_path / "f", n_train=8, n_val=5)  # 5 val images: the ranks get 3 and 2
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "-m", "ghostnet"]
    args = ["segment", "train", "--dataset", "folder", "--data-dir", str(root), "--output-dir", str(tmp_path / "runs")]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([*cmd, *args, "--name", "ddp", *TINY], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "ddp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True and summary["steps"] == 8
    last_row = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    ev = subprocess.run(
        [sys.executable, "-m", "ghostnet", "segment", "eval", str(run / "last.pth"), "--json", "--no-progress"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert ev.returncode == 0, ev.stderr
    single = json.loads(ev.stdout)
    assert single["miou"] == pytest.approx(last_row["eval_miou"]) and single["images"] == 5
