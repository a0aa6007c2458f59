"""The training engine, driven through the real CLI on small data the tests write in real formats."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import write_cifar, write_idx, write_image_folder
from ghostnet import create_model
from ghostnet.cli import main
from ghostnet.engine import RunDirError, TrainingDiverged
from ghostnet.engine.loop import lr_factor, param_groups
from ghostnet.models.checkpoint import read_checkpoint
from ghostnet.tasks.classify import train
from ghostnet.tasks.classify.config import TrainConfig, load_recipe

TINY = dict(model="ghostnet_small_050", epochs=2, batch_size=8, eval_batch_size=16, progress=False, seed=3)


def test_schedules():
    cfg = TrainConfig(epochs=10, warmup_epochs=1, schedule="cosine")
    assert lr_factor(cfg, 0, 100) == pytest.approx(0.01)
    assert lr_factor(cfg, 99, 100) == pytest.approx(1.0)
    assert lr_factor(cfg, 550, 100) == pytest.approx(0.5)
    assert lr_factor(cfg, 999, 100) < 1e-3
    cfg = TrainConfig(epochs=10, schedule="multistep", milestones=[0.5, 0.75], gamma=0.1)
    assert [lr_factor(cfg, s, 100) for s in (0, 499, 500, 750, 999)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_no_weight_decay_on_bn_and_bias():
    model = create_model("ghostnet_050")
    decay, no_decay = param_groups(model, 4e-5)
    assert all(p.ndim == 4 or p.ndim == 2 for p in decay["params"])
    assert decay["weight_decay"] == 4e-5 and no_decay["weight_decay"] == 0
    assert any(p is model.bn1.weight for p in no_decay["params"])
    assert any(p is model.conv_head.bias for p in no_decay["params"])


def test_config_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.2\nepochs: 3\nmilestones: [0.3, 0.6]\nclip_grad: null\n")
    cfg = load_recipe(path, {"epochs": "5", "nesterov": "false"})
    assert (cfg.lr, cfg.epochs, cfg.milestones, cfg.nesterov, cfg.clip_grad) == (0.2, 5, [0.3, 0.6], False, None)
    imagenet = load_recipe("imagenet")
    assert (
        imagenet.lr,
        imagenet.batch_size,
        imagenet.weight_decay,
        imagenet.label_smoothing,
        imagenet.warmup_epochs,
    ) == (0.4, 1024, 4e-5, 0.1, 5)
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['lr_max'\]"):
        load_recipe(None, {"lr_max": 1})
    with pytest.raises(ValueError, match="epochs: expected int, got 2.5"):
        load_recipe(None, {"epochs": 2.5})
    path.write_text("lr: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_recipe(path)
    with pytest.raises(ValueError, match="neither a file nor a bundled recipe"):
        load_recipe("no_such_recipe")


def test_train_cifar_end_to_end(tmp_path):
    write_cifar(tmp_path / "data", n_train=80, n_test=20)
    cfg = TrainConfig(
        dataset="cifar10", data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "runs"), name="r", **TINY
    )
    summary = train(cfg)
    run = tmp_path / "runs" / "r"
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "log.jsonl",
        "last.pth",
        "best.pth",
        "summary.json",
        "curves.png",
    }
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["step"] == 20
    assert summary["final_top1"] == rows[-1]["eval_top1"] and summary["params"] > 0 and summary["macs"] > 0
    assert load_recipe(run / "config.yaml").to_dict() == cfg.to_dict()
    ckpt = read_checkpoint(run / "last.pth")  # weights_only: no pickled code
    assert ckpt["model_name"] == "ghostnet_small_050" and ckpt["data"]["classes"][0] == "airplane"
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(RunDirError, match="exists; pass --resume"):
        train(cfg)
    assert (run / "last.pth").exists()  # nothing was touched
    cfg.overwrite = True
    cfg.epochs = 1
    train(cfg)
    assert len((run / "log.jsonl").read_text().splitlines()) == 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    write_cifar(tmp_path / "data", n_train=80, n_test=20)
    cfg = TrainConfig(
        dataset="cifar10",
        data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "runs"),
        name="nan",
        save_every_steps=1,
        lr=1e30,
        momentum=0.0,
        **TINY,
    )
    with pytest.raises(TrainingDiverged, match=r"loss is (nan|inf) at step (\d+)") as e:
        train(cfg)
    bad_step = int(e.value.args[0].split("at step ")[1].split()[0])
    ckpt = read_checkpoint(tmp_path / "runs" / "nan" / "last.pth")
    assert ckpt["step"] == bad_step - 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_optimizers_ema_and_clipping(tmp_path):
    write_cifar(tmp_path / "data", n_train=40, n_test=10)
    cfg = TrainConfig(
        dataset="cifar10",
        data_dir=str(tmp_path / "data"),
        output_dir=str(tmp_path / "runs"),
        name="adamw",
        optimizer="adamw",
        lr=1e-3,
        ema_decay=0.9,
        clip_grad=1.0,
        schedule="multistep",
        warmup_epochs=0.5,
        **TINY,
    )
    summary = train(cfg)
    ckpt = read_checkpoint(tmp_path / "runs" / "adamw" / "last.pth")
    assert ckpt["model_ema"] and set(ckpt["model_ema"]) == set(ckpt["model"])
    assert summary["steps"] == 10


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "ghostnet", *args], capture_output=True, text=True, timeout=600, **kw)


def _weights(path):
    return read_checkpoint(path)["model"]


def test_sigkill_at_any_point_then_resume_is_bit_identical(tmp_path):
    """Kill -9 twice (mid-epoch and later), resume each time: the final weights equal an uninterrupted run's."""
    write_cifar(tmp_path / "data", n_train=160, n_test=20)
    common = [
        "classify",
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path / "data"),
        "--output-dir",
        str(tmp_path / "runs"),
        "--model",
        "ghostnet_small_050",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--save-every-steps",
        "3",
        "--deterministic",
        "--seed",
        "7",
        "--no-progress",
        "--ema-decay",
        "0.9",
    ]
    r = _cli(*common, "--name", "straight")
    assert r.returncode == 0, r.stderr

    last = tmp_path / "runs" / "broken" / "last.pth"
    kills = 0
    for delay in (0.0, 1.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ghostnet", *common, "--name", "broken", *(["--resume"] if kills else [])],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        before = last.stat().st_mtime_ns if last.exists() else None
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if last.exists() and last.stat().st_mtime_ns != before:
                break
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 1, "the run finished before it could be killed"
    assert read_checkpoint(last)["step"] < 30
    r = _cli(
        "classify", "train", "--output-dir", str(tmp_path / "runs"), "--name", "broken", "--resume"
    )  # the run's own config
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout

    a, b = _weights(tmp_path / "runs" / "straight" / "last.pth"), _weights(last)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    ca, cb = read_checkpoint(tmp_path / "runs" / "straight" / "last.pth"), read_checkpoint(last)
    assert all(torch.equal(ca["model_ema"][k], cb["model_ema"][k]) for k in ca["model_ema"])
    log_a = [json.loads(x) for x in (tmp_path / "runs" / "straight" / "log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (tmp_path / "runs" / "broken" / "log.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("epoch_time_s", "images_per_s")} for r in rows]  # noqa: E731
    assert strip(log_a) == strip(log_b)


def test_two_process_ddp_agrees_with_single_process_eval(tmp_path):
    write_cifar(tmp_path / "data", n_train=80, n_test=21)  # 21: the eval split does not divide evenly
    run = tmp_path / "runs" / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29533",
        "-m",
        "ghostnet",
        "classify",
        "train",
        "--dataset",
        "cifar10",
        "--data-dir",
        str(tmp_path / "data"),
        "--output-dir",
        str(tmp_path / "runs"),
        "--name",
        "ddp",
        "--model",
        "ghostnet_small_050",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--eval-batch-size",
        "8",
        "--no-progress",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True
    assert summary["steps"] == 10  # global batch 16 over 80 images: 5 steps per epoch, as in one process
    assert r.stdout.count("epoch 2/2") == 1  # only rank 0 reports
    # the metrics reduced across ranks equal a single process's evaluation of the saved weights
    ev = _cli("classify", "eval", str(run / "last.pth"), "--json", "--no-progress", "--batch-size", "5")
    assert ev.returncode == 0, ev.stderr
    single = json.loads(ev.stdout)
    last_row = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert single["count"] == 21
    assert single["top1"] == last_row["eval_top1"]
    assert math.isclose(single["loss"], last_row["eval_loss"], rel_tol=1e-5)


def test_cli_train_eval_predict_on_idx(tmp_path, capsys):
    write_idx(tmp_path / "data" / "fashion-mnist", n_train=60, n_test=20)
    code = main(
        [
            "classify",
            "train",
            "--dataset",
            "fashion_mnist",
            "--data-dir",
            str(tmp_path / "data"),
            "--output-dir",
            str(tmp_path / "runs"),
            "--name",
            "fm",
            "--epochs",
            "1",
            "--batch-size",
            "10",
            "--no-progress",
            "--in-chans",
            "3",
            "--train-subset",
            "40",
        ]
    )
    assert code == 0
    assert json.loads((tmp_path / "runs" / "fm" / "log.jsonl").read_text())["step"] == 4  # 40 of the 60 images
    out = capsys.readouterr().out
    assert "test top-1" in out and "params" in out and "MACs" in out
    ckpt = tmp_path / "runs" / "fm" / "best.pth"
    assert main(["classify", "eval", str(ckpt), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "confusion matrix" in out and "Ankle boot"[:9] in out

    from PIL import Image

    img_dir = tmp_path / "imgs"
    img_dir.mkdir()
    for i in range(3):
        Image.new("L", (28, 28), color=40 * i).save(img_dir / f"{i}.png")
    assert main(["classify", "predict", str(img_dir), "--checkpoint", str(ckpt), "--topk", "3", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 3 and len(preds[0]["top"]) == 3
    assert preds[0]["top"][0][0] in [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
    assert abs(sum(p for _, p in preds[0]["top"])) <= 1.0 + 1e-6


def test_cli_train_on_image_folder(tmp_path, capsys):
    root = write_image_folder(tmp_path / "imgs")
    code = main(
        [
            "classify",
            "train",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(root),
            "--image-size",
            "32",
            "--model",
            "ghostnet_050",
            "--output-dir",
            str(tmp_path / "runs"),
            "--name",
            "folder",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    assert read_checkpoint(tmp_path / "runs" / "folder" / "last.pth")["data"]["classes"] == ["cat", "dog", "fox"]
    assert (
        main(
            [
                "classify",
                "predict",
                str(root / "val" / "dog" / "0.png"),
                "--checkpoint",
                str(tmp_path / "runs" / "folder" / "last.pth"),
            ]
        )
        == 0
    )
    assert "dog" in capsys.readouterr().out


def test_predict_with_released_style_state_dict(tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "state_dict_73.98.pth"
    torch.save(create_model("ghostnet_050").state_dict(), path)
    Image.new("RGB", (300, 260), "red").save(tmp_path / "x.jpg")
    assert (
        main(
            [
                "classify",
                "predict",
                str(tmp_path / "x.jpg"),
                "--checkpoint",
                str(path),
                "--model",
                "ghostnet_050",
                "--topk",
                "2",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and out[1].strip().endswith(tuple("abcdefghijklmnopqrstuvwxyz)"))  # ImageNet class names


@pytest.mark.parametrize(
    "argv,message",
    [
        (["classify", "train", "--epochs", "0"], "epochs must be >= 1"),
        (["classify", "train", "--train-subset", "99999"], "larger than the training split"),
        (["classify", "train", "--optimizer", "rmsprop"], "optimizer must be sgd or adamw"),
        (["classify", "train", "--model", "nope"], "unknown model 'nope'"),
        (["classify", "train", "--dataset", "digits", "--batch-size", "5000"], "fewer than one batch"),
        (["classify", "train", "--amp", "bf16", "--device", "cpu"], "amp bf16 needs CUDA"),
        (["classify", "train", "--resume", "--name", "never-ran"], "cannot resume"),
        (["classify", "train", "--resume"], "--resume needs --name"),
        (["classify", "eval", "missing.pth"], "checkpoint not found: missing.pth"),
        (["classify", "predict", "nope.png", "--checkpoint", "missing.pth"], "checkpoint not found"),
    ],
)
def test_cli_usage_errors(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main([*argv, "--output-dir", str(tmp_path)] if argv[1] == "train" else argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_predict_rejects_bad_images(tmp_path, capsys):
    ckpt = tmp_path / "w.pth"
    from ghostnet import save_weights

    save_weights(create_model("ghostnet_050"), ckpt, "ghostnet_050", dict())
    (tmp_path / "broken.jpg").write_text("not an image")
    with pytest.raises(SystemExit) as e:
        main(["classify", "predict", str(tmp_path / "broken.jpg"), "--checkpoint", str(ckpt)])
    assert e.value.code == 2 and "not a readable image" in capsys.readouterr().err


def test_resume_uses_the_runs_own_config_and_refuses_another_model(tmp_path, capsys):
    write_cifar(tmp_path / "data", n_train=40, n_test=10)
    base = ["classify", "train", "--output-dir", str(tmp_path / "runs"), "--name", "r", "--no-progress"]
    assert (
        main(
            [
                *base[:6],
                "--dataset",
                "cifar10",
                "--data-dir",
                str(tmp_path / "data"),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--no-progress",
            ]
        )
        == 0
    )
    assert main([*base, "--resume", "--epochs", "2"]) == 0  # continues the cifar10 run for one more epoch
    rows = (tmp_path / "runs" / "r" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([*base, "--resume", "--model", "ghostnet_small_100"])
    assert e.value.code == 2 and "shape mismatch" in capsys.readouterr().err


@pytest.mark.parametrize(
    "model,drop_rate,expected",
    [
        ("vgg16", 0.2, 0.2),
        ("vgg16", None, 0.5),
        ("resnet56", 0.2, 0.2),
        ("resnet56", None, 0.0),
        ("ghostnet_050", None, 0.2),
    ],
)
def test_drop_rate_reaches_every_model(model, drop_rate, expected):
    from ghostnet.data import load_dataset
    from ghostnet.tasks.classify.task import build_model_for_data

    cfg = load_recipe(None, {"model": model, "drop_rate": drop_rate})
    net = build_model_for_data(cfg, load_dataset("digits"))  # 0.2 was ignored for vgg16, a TypeError for resnet56
    assert [m.p for m in net.modules() if isinstance(m, torch.nn.Dropout)] == [expected]


def test_every_option_has_help_from_its_field_and_shows_its_default(capsys):
    import dataclasses

    from ghostnet.tasks.classify.config import TrainConfig
    from ghostnet.tasks.detect.config import DetectConfig

    for cls in (TrainConfig, DetectConfig):
        missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
        assert not missing, f"{cls.__name__} fields without help: {missing}"
    with pytest.raises(SystemExit):
        main(["classify", "train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "peak learning rate for the global batch (default: 0.1)" in out
    with pytest.raises(SystemExit):
        main(["detect", "train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--fpn-channels" in out and "FPN (and head) width (default: 256)" in out
    assert "--augment" not in out and "--dataset" not in out  # classification-only options are not offered


def test_eval_errors_are_one_line(tmp_path, capsys):
    from ghostnet import save_weights

    ckpt = tmp_path / "w.pth"
    save_weights(create_model("ghostnet_small_050", num_classes=10), ckpt, "ghostnet_small_050", dict(num_classes=10))
    for argv, message in [
        (["classify", "eval", str(ckpt), "--device", "cuda:0"], "CUDA is not available"),
        (["classify", "eval", str(ckpt), "--dataset", "nope"], "nope"),
    ]:
        if argv[-1] == "cuda:0" and torch.cuda.is_available():
            continue
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], err


def _folder_with_unreadable_images(root, up_front=True):
    """An image folder (12 good images per split) plus, in train/cat and val/dog, a truncated JPEG and (with
    `up_front`) a zero-byte .jpg and a text file named .jpg."""
    import numpy as np
    from PIL import Image

    write_image_folder(root)
    for folder in (root / "train" / "cat", root / "val" / "dog"):
        if up_front:
            (folder / "empty.jpg").write_bytes(b"")
            (folder / "text.jpg").write_text("not an image at all\n")
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / "w.jpg")
        data = (folder / "w.jpg").read_bytes()
        (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
        (folder / "w.jpg").unlink()
    return root


def _train_folder(root, out, name, *extra):
    return main(
        [
            "classify",
            "train",
            "--dataset",
            "imagefolder",
            "--data-dir",
            str(root),
            "--image-size",
            "32",
            "--model",
            "ghostnet_050",
            "--output-dir",
            str(out),
            "--name",
            name,
            "--epochs",
            "1",
            "--batch-size",
            "13",
            "--num-workers",
            "0",
            "--no-progress",
            *extra,
        ]
    )


def test_train_and_eval_skip_unreadable_images_and_report_them(tmp_path, capsys):
    """Regression: one corrupt image killed image-folder training and evaluation mid-epoch with a PIL traceback."""
    root = _folder_with_unreadable_images(tmp_path / "imgs")
    assert _train_folder(root, tmp_path / "runs", "skip") == 0
    out = capsys.readouterr().out
    assert "13 train / 13 test images" in out and "left out 4 files that are not images (first: " in out
    assert "skipped 1 unreadable image(s) in training this epoch and 1 in evaluation (first: " in out
    assert "truncated.jpg is not a readable image" in out
    assert json.loads((tmp_path / "runs" / "skip" / "log.jsonl").read_text())["step"] == 1
    ckpt = str(tmp_path / "runs" / "skip" / "last.pth")
    assert main(["classify", "eval", ckpt, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "(12 images)" in out and "skipped 3 unreadable image(s) (first: " in out and "empty.jpg" in out
    assert main(["classify", "eval", ckpt, "--no-progress", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_images"] == 3


def test_bad_images_error_refuses_in_one_line_naming_the_file(tmp_path, capsys):
    from ghostnet import save_weights

    root = _folder_with_unreadable_images(tmp_path / "imgs")
    ckpt = tmp_path / "w.pth"
    save_weights(create_model("ghostnet_050", num_classes=3), ckpt, "ghostnet_050", dict(num_classes=3))
    evaluate = ["classify", "eval", str(ckpt), "--dataset", "imagefolder", "--data-dir", str(root), "--no-progress"]
    for run, name in [
        (lambda: _train_folder(root, tmp_path / "runs", "up-front", "--bad-images", "error"), "empty.jpg"),
        (lambda: main([*evaluate, "--bad-images", "error"]), "empty.jpg"),
        (lambda: _train_folder(tmp_path / "decode", tmp_path / "runs", "decode", "--bad-images", "error"), "truncated"),
        (lambda: main([*evaluate[:6], str(tmp_path / "decode"), *evaluate[7:], "--bad-images", "error"]), "truncated"),
    ]:
        if name == "truncated" and not (tmp_path / "decode").exists():
            _folder_with_unreadable_images(tmp_path / "decode", up_front=False)
        with pytest.raises(SystemExit) as e:
            run()
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and name in err[0] and "bad_images=skip" in err[0], err
    with pytest.raises(SystemExit) as e:
        main(["classify", "train", "--bad-images", "ignore", "--output-dir", str(tmp_path)])
    assert e.value.code == 2 and "bad_images must be skip or error" in capsys.readouterr().err


# ---------------------------------------------------------------- nothing silently wrong: saves, weights, interrupts


def _digits(tmp_path, **overrides):
    values = dict(output_dir=str(tmp_path / "runs"), name="r", epochs=1, max_steps=2, batch_size=16)
    values.update(eval_batch_size=512, image_size=16, progress=False, seed=0, **overrides)
    return load_recipe("digits", values)


class _Poisoned:
    """A classification task that, at step `at`, breaks the model (`what="buffer"`: a BN running mean
    becomes NaN while the loss stays finite, as overflowing statistics do) or the loss (`what="loss"`)."""

    def __new__(cls, at, what):
        from ghostnet.tasks.classify.task import ClassificationTask

        class Task(ClassificationTask):
            steps = 0

            def step(self, net, batch):
                self.steps += 1
                if self.steps == at and what == "buffer":
                    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
                    bn.running_mean.fill_(float("nan"))
                loss, sums = super().step(net, batch)
                return (loss * float("nan") if self.steps == at and what == "loss" else loss), sums

        return Task()


def test_non_finite_weights_are_never_saved(tmp_path):
    from ghostnet.engine import run_training

    cfg = _digits(tmp_path, save_every_steps=2, max_steps=4)
    with pytest.raises(TrainingDiverged) as e:
        run_training(cfg, _Poisoned(at=3, what="buffer"))
    run = tmp_path / "runs" / "r"
    message = str(e.value)
    assert "running_mean is not finite after step 4 (epoch 1); stopped without saving" in message
    assert f"The last good checkpoint is {run / 'last.pth'} (step 2)" in message
    ckpt = read_checkpoint(run / "last.pth")
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (run / "best.pth").exists()  # a NaN model never becomes the best


def test_a_nan_loss_before_any_checkpoint_says_none_was_written(tmp_path):
    from ghostnet.engine import run_training

    with pytest.raises(TrainingDiverged) as e:
        run_training(_digits(tmp_path), _Poisoned(at=1, what="loss"))
    assert "loss is nan at step 1 (epoch 1); stopped without saving. No checkpoint was written" in str(e.value)
    assert "last.pth" not in str(e.value)
    assert not (tmp_path / "runs" / "r").exists()  # nothing was saved in the folder it made: not left as a stub


def _train_argv(tmp_path):
    return [
        "classify",
        "train",
        *("--dataset", "digits", "--image-size", "16", "--batch-size", "16", "--eval-batch-size", "512"),
        *("--epochs", "1", "--max-steps", "3", "--save-every-steps", "1", "--no-progress"),
        *("--output-dir", str(tmp_path / "runs"), "--name", "r"),
    ]


def test_a_full_disk_during_training_ends_in_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from test_checkpoint import save_that_fails

    full = lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # noqa: E731
    monkeypatch.setattr(torch, "save", save_that_fails(full, after_calls=1))
    assert main(_train_argv(tmp_path)) == 1
    run = tmp_path / "runs" / "r"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"ghostnet classify train: error: could not write checkpoint {run / 'last.pth'}: ")
    assert "No space left on device; it needs about " in err[0] and " free; the previous last.pth is intact" in err[0]
    assert read_checkpoint(run / "last.pth")["step"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_during_a_training_save_is_an_interrupt(tmp_path, monkeypatch, capsys):
    from test_checkpoint import save_that_fails

    monkeypatch.setattr(torch, "save", save_that_fails(KeyboardInterrupt, after_calls=1))
    assert main(_train_argv(tmp_path)) == 130
    run = tmp_path / "runs" / "r"
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"interrupted while writing {run / 'last.pth'}; the previous last.pth is intact"]
    assert read_checkpoint(run / "last.pth")["step"] == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
