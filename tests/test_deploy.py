from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import write_cifar, write_image_folder
from ghostnet import create_model, list_models
from ghostnet.cli import main
from ghostnet.deploy import export_model, fuse_bn, prepare_inference
from ghostnet.models.registry import IMAGE_TASKS

MODELS = list_models(task=IMAGE_TASKS)


def _randomise_bn(model, in_chans=3):
    """Non-trivial BN affine weights and running statistics measured on data, as after training."""
    g = torch.Generator().manual_seed(0)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the passes below
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(8, in_chans, 40, 40, generator=g))
    for m in bns:
        m.momentum = 0.1
    return model.eval()


@pytest.mark.parametrize("name", MODELS)
def test_fuse_bn_every_registered_model(name):
    model = _randomise_bn(create_model(name, num_classes=10)).eval()
    fused = fuse_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        ref = model(x)
        # 1e-4, relative where logits are large: GhostNetV3's three branches a site are summed in a different order
        assert (fused(x) - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
        assert torch.equal(model.fuse()(x), fused(x))  # the method form


def test_fuse_bn_on_real_images_keeps_the_model_contract():
    from ghostnet.data import load_dataset

    data = load_dataset("digits")
    x = (data.test.images[:16].float() / 255 - 0.2) / 0.3
    model = _randomise_bn(create_model("ghostnet_small_050", in_chans=1, num_classes=10), in_chans=1)
    fused = fuse_bn(model)
    with torch.no_grad():
        assert (fused(x) - model(x)).abs().max() <= 1e-4
        assert fused.forward_features(x).shape == model.forward_features(x).shape
    backbone = fuse_bn(create_model("ghostnet_100", features_only=True).eval())
    assert [f.shape[1] for f in backbone(torch.randn(1, 3, 64, 64))] == [16, 24, 40, 80, 160]


def test_fuse_bn_refusals():
    with pytest.raises(ValueError, match="needs a model in eval mode"):
        fuse_bn(create_model("ghostnet_050").train())
    with pytest.raises(ValueError, match=r"cannot fold 1 BatchNorm layer\(s\) that no conv feeds directly: 0"):
        fuse_bn(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)).eval())
    fused = fuse_bn(create_model("ghostnet_050").eval())
    with pytest.raises(RuntimeError, match="inference only"):
        fused.train()
    fused.eval()  # still allowed


def test_prepare_inference_channels_last():
    model = _randomise_bn(create_model("ghostnet_050")).eval()
    fast = prepare_inference(model, fuse=True, channels_last=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (fast(x.contiguous(memory_format=torch.channels_last)) - model(x)).abs().max() <= 1e-4


@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_every_registered_model(tmp_path, name):
    pytest.importorskip("onnxruntime")
    model = _randomise_bn(create_model(name, num_classes=10)).eval()
    r = export_model(fuse_bn(model), tmp_path / "m.onnx", "onnx", (32, 32), dynamic_batch=True)
    output = "embedding" if name.startswith("ghostfacenet") else "logits"
    assert r.max_abs_diff <= 1e-4 and r.opset == 18 and r.input_names == ["input"] and r.output_names == [output]
    assert (tmp_path / "m.onnx").stat().st_size == r.size_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # no temp files left
    if name == "ghostnet_100":  # every Ghost module's channels divide evenly: no trimming Slice in the graph
        import onnx

        assert not [n for n in onnx.load(str(tmp_path / "m.onnx")).graph.node if n.op_type == "Slice"]


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_other_formats_and_backbones(tmp_path, fmt):
    model = create_model("ghostnet_small_050", features_only=True, out_indices=(2, 3, 4)).eval()
    suffix = {"torchscript": ".pt", "exported-program": ".pt2"}[fmt]
    r = export_model(model, tmp_path / f"m{suffix}", fmt, (32, 32), dynamic_batch=True)
    assert r.max_abs_diff <= 1e-4 and r.output_names == ["features_0", "features_1", "features_2"]


def test_ghostified_torchvision_model_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    import torchvision

    from ghostnet.nn import ghostify

    model = _randomise_bn(ghostify(torchvision.models.resnet18())).eval()
    r = export_model(fuse_bn(model), tmp_path / "g.onnx", "onnx", (64, 64))
    assert r.max_abs_diff <= 1e-4


def test_export_bad_input(tmp_path):
    model = create_model("ghostnet_050").eval()
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(model, tmp_path / "m.tflite", "tflite")
    with pytest.raises(ValueError, match="does not exist"):
        export_model(model, tmp_path / "nope" / "m.onnx", "onnx")
    (tmp_path / "m.onnx").write_text("keep me")
    with pytest.raises(ValueError, match="exists"):
        export_model(model, tmp_path / "m.onnx", "onnx")
    assert (tmp_path / "m.onnx").read_text() == "keep me"


def test_cli_export(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "g.onnx"
    assert main(["classify", "export", "ghost_resnet56", "--fuse", "--dynamic-batch", "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "opset 18" in text and "input batchx3x32x32 (any batch)" in text and "max abs diff" in text
    for argv, message in [
        (["classify", "export", "ghost_resnet56", "--output", str(out)], "exists; pass --force"),
        (["classify", "export", "nope"], "unknown model 'nope'"),
        (["classify", "export", "--checkpoint", str(tmp_path / "missing.pth")], "checkpoint not found"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["classify", "export", "ghostnet_050", "--format", "coreml"])
    assert e.value.code == 2


def test_quantize_a_trained_checkpoint(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    write_cifar(tmp_path / "data", n_train=80, n_test=20)
    assert (
        main(
            [
                "classify",
                "train",
                "--dataset",
                "cifar10",
                "--data-dir",
                str(tmp_path / "data"),
                "--output-dir",
                str(tmp_path / "runs"),
                "--name",
                "q",
                "--epochs",
                "1",
                "--batch-size",
                "16",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "classify",
                "quantize",
                str(tmp_path / "runs" / "q" / "best.pth"),
                "--output",
                str(tmp_path / "m.int8.onnx"),
                "--calibration-images",
                "32",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "int8" in out
        and "drop" in out
        and "calibrated (minmax) on 32 cifar10 training images; stem and classifier kept" in out
    )
    assert (tmp_path / "m.int8.onnx").exists() and (tmp_path / "m.int8.fp32.onnx").exists()
    assert (tmp_path / "m.int8.onnx").stat().st_size < (tmp_path / "m.int8.fp32.onnx").stat().st_size / 2
    import onnx

    nodes = onnx.load(str(tmp_path / "m.int8.onnx")).graph.node
    first_conv = next(n for n in nodes if n.op_type == "Conv")
    weight_producers = {o: n.op_type for n in nodes for o in n.output}
    assert weight_producers.get(first_conv.input[1]) != "DequantizeLinear"  # the stem's weights stayed fp32
    assert sum(weight_producers.get(n.input[1]) == "DequantizeLinear" for n in nodes if n.op_type == "Conv") > 10

    # a run that breaks half-way (here: the quantizer, after writing part of its file) leaves nothing behind
    import onnxruntime.quantization as ortq

    def breaks(model_input, model_output, *a, **kw):
        Path(model_output).write_bytes(b"half an onnx file")
        raise RuntimeError("interrupted")

    monkeypatch.setattr(ortq, "quantize_static", breaks)
    with pytest.raises(RuntimeError, match="interrupted"):
        main(
            [
                "classify",
                "quantize",
                str(tmp_path / "runs" / "q" / "best.pth"),
                "--output",
                str(tmp_path / "again.int8.onnx"),
            ]
        )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith((".again", "again"))) == []


def test_quantize_calibrates_on_eval_transformed_training_images(tmp_path):
    """An image folder's calibration images are its training files as evaluation reads them (resize + centre
    crop, no random crop, flip or jitter), in file order, the same on every read."""
    from PIL import Image

    from ghostnet.data import IMAGENET_MEAN, IMAGENET_STD, folder_transforms
    from ghostnet.deploy.quantize import loader_images
    from ghostnet.tasks.classify.quantize import checkpoint_data

    root = write_image_folder(tmp_path / "imgs", per_class=11)  # 33 training images: one calibration batch of 32
    args = ["--dataset", "imagefolder", "--data-dir", str(root), "--image-size", "32", "--model", "ghostnet_050"]
    run = ["--output-dir", str(tmp_path / "runs"), "--name", "f", "--epochs", "1", "--batch-size", "4"]
    assert main(["classify", "train", *args, *run, "--num-workers", "0", "--no-progress"]) == 0
    checkpoint = tmp_path / "runs" / "f" / "last.pth"

    files = sorted((root / "train").glob("*/*"))  # ImageFolder's order: class folders, then file names
    first = torch.cat(list(loader_images(checkpoint_data(checkpoint).calibration, len(files))))
    again = torch.cat(list(loader_images(checkpoint_data(checkpoint).calibration, len(files))))
    evaluate = folder_transforms(False, 32, IMAGENET_MEAN, IMAGENET_STD)
    expected = torch.stack([evaluate(Image.open(f).convert("RGB")) for f in files])
    assert first.shape == (len(files), 3, 32, 32)
    assert torch.equal(first, again)
    assert torch.allclose(first, expected, atol=1e-6)


# ---------------------------------------------------------------- an export to a full disk


def _write_then_raise(exc):
    def write(path):
        Path(path).write_bytes(b"\x08\x07" + bytes(5000))  # a partial file, as a full disk leaves it
        raise exc

    return write


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_to_a_full_disk_removes_the_partial_file_and_says_why(tmp_path, monkeypatch, capsys, fmt):
    import errno
    import os
    import re

    from ghostnet.deploy.export import ExportWriteError

    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    enforce = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 45")
    if fmt == "onnx":
        monkeypatch.setattr(torch.onnx, "export", lambda model, args, f, **kw: _write_then_raise(full)(f))
    else:
        traced = type("Traced", (), {"save": lambda self, f: _write_then_raise(enforce)(f)})()
        monkeypatch.setattr(torch.jit, "trace", lambda *a, **kw: traced)
    model = create_model("ghostnet_small_050", num_classes=10)
    out = tmp_path / f"m.{fmt}"
    with pytest.raises(ExportWriteError) as e:
        export_model(model, out, fmt, input_size=(32, 32))
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"could not write {out}: ")
    assert ("No space left on device" in message) == (fmt == "onnx")
    assert re.search(r"; it needs about [\d.]+ MiB, ", message) and f"{tmp_path} has " in message
    assert message.endswith("free; the partial file was removed")
    assert list(tmp_path.iterdir()) == []

    argv = [
        "classify",
        "export",
        "ghostnet_small_050",
        "--format",
        fmt,
        "--input-size",
        "32",
        "32",
        "--output",
        str(out),
    ]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"ghostnet classify export: error: could not write {out}: "), err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_an_export_leaves_nothing(tmp_path, monkeypatch, capsys):
    interrupt = RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 45")
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        try:
            raise interrupt  # as torch's writer reports a Ctrl-C: a RuntimeError raised while handling it
        except RuntimeError:
            pass
    monkeypatch.setattr(torch.onnx, "export", lambda model, args, f, **kw: _write_then_raise(interrupt)(f))
    out = tmp_path / "m.onnx"
    assert main(["classify", "export", "ghostnet_small_050", "--input-size", "32", "32", "--output", str(out)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [f"interrupted while writing {out}; nothing was written"]
    assert list(tmp_path.iterdir()) == []


def test_a_plain_export_takes_one_image_and_says_its_real_input(tmp_path, capsys, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    monkeypatch.chdir(tmp_path)
    assert main(["classify", "export", "ghostnet_small_050", "--input-size", "32", "32"]) == 0
    assert "input 1x3x32x32 (fixed)" in capsys.readouterr().out  # was "fixed batch" of an unnamed size: 2
    session = ort.InferenceSession("ghostnet_small_050.onnx")
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    assert session.run(None, {"input": np.zeros((1, 3, 32, 32), np.float32)})[0].shape == (1, 1000)
    # the backbone's default name differs from the full model's, so exporting both works
    assert main(["classify", "export", "ghostnet_small_050", "--features-only", "--input-size", "32", "32"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ghostnet_small_050-features-2-3-4.onnx",
        "ghostnet_small_050.onnx",
    ]
