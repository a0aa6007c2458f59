import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import write_cifar, write_image_folder
from ghostnet import create_model, list_models
from ghostnet.cli import main
from ghostnet.deploy import export_model, fuse_bn, prepare_inference

MODELS = list_models()


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


def test_bench_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert (
        main(
            [
                "bench",
                "--quick",
                "--input-size",
                "32",
                "--runs",
                "2",
                "--output",
                str(tmp_path / "b.json"),
                "--plot",
                str(tmp_path / "b.png"),
            ]
        )
        == 0
    )
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "b.json").read_text())
    forms = {(r["model"], r["form"]) for r in result["rows"]}
    assert {
        ("ghostnet_100", "eager"),
        ("ghostnet_100", "fused+cl"),
        ("ghostnet_100", "ort-fp32"),
        ("ghostnet_100", "ort-int8"),
        ("tv mobilenet_v3_large", "eager"),
        ("tv mobilenet_v2", "ort-fp32"),
        ("tv resnet18", "eager"),
    } <= forms
    base = [r for r in result["rows"] if f"{r['model']} / {r['form']}" == result["baseline"]]
    assert len(base) == 1 and base[0]["ratio"] == 1.0
    assert all(r["latency_ms"] > 0 and r["floor_ms"] > 0 and r["throughput"]["4"] > 0 for r in result["rows"])
    assert "x base" in table and result["machine"]["matmul_gflops"] > 0 and result["failed"] == []
    from ghostnet.deploy.bench import planned_forms

    for r in result["rows"]:  # what the baseline check takes as planned is what was timed
        assert r["form"] in planned_forms(r["model"] == "ghostnet_100", "cpu", False, False, True, True)
    with pytest.raises(SystemExit) as e:
        main(["bench", "--quick", "--no-onnx", "--no-peers", "--baseline", "nope / eager"])
    assert e.value.code == 2
    for bad in ("cuda:abc", "tpu"):
        with pytest.raises(SystemExit) as e:
            main(["bench", "--quick", "--device", bad])
        assert e.value.code == 2 and "device must be cpu or cuda[:N]" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            main(["bench", "--quick", "--device", "cuda"])
        assert e.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_bench_torch_forms_match_the_model():
    """Every PyTorch form the bench times computes the model's function (bf16 to bf16 precision), and
    building them leaves the eager model as it was; a model whose BN cannot be folded is timed as `cl`."""
    from ghostnet.deploy.bench import torch_forms

    torch.manual_seed(0)
    model = _randomise_bn(create_model("ghostnet_100", num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        forms = torch_forms(model, "cpu", bf16=True)
        assert list(forms) == ["eager", "fused+cl", "fused+cl bf16"]
        assert (forms["fused+cl"](x) - ref).abs().max() < 1e-4
        low = forms["fused+cl bf16"](x).float()
        # bf16 keeps ~3 significant digits per op; over 16 blocks the logits drift by up to ~10%, not in direction
        assert torch.nn.functional.cosine_similarity(low.flatten(), ref.flatten(), dim=0) > 0.99
        assert (low - ref).abs().max() < 0.2 * ref.abs().max()
        assert model.conv_stem.weight.is_contiguous() and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    class ConvThenNormAct(nn.Module):  # a BN fed through an activation: nothing to fold into
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(torch.relu(self.conv(x)))

    peer = ConvThenNormAct().eval()
    forms = torch_forms(peer, "cpu")
    assert list(forms) == ["eager", "cl"]
    with torch.inference_mode():
        assert torch.allclose(forms["cl"](x), peer(x), atol=1e-5)
    assert peer.conv.weight.is_contiguous()  # the `cl` copy, not the peer, went channels_last
    assert list(torch_forms(peer, "cpu", deploy=False)) == ["eager"]


def test_bench_keeps_going_past_a_broken_form(tmp_path, monkeypatch, capsys):
    """A form that raises is listed as failed with its error; the others are still timed, the run still
    written; a missing baseline leaves the ratios out rather than losing the run; outputs are never replaced."""
    import ghostnet.deploy.bench as bench

    real = bench.torch_forms

    def with_a_broken_form(model, device, **kw):
        forms = real(model, device, **kw)
        forms["fused+cl"] = lambda x: (_ for _ in ()).throw(RuntimeError("no kernel for this\nsecond line"))
        eager = forms["eager"]

        def small_batches_only(x):  # out of memory at batch 4, say: its batch-1 latency is still reported
            if len(x) > 1:
                raise MemoryError("too big")
            return eager(x)

        forms["eager"] = small_batches_only
        return forms

    monkeypatch.setattr(bench, "torch_forms", with_a_broken_form)
    out = tmp_path / "b.json"
    assert (
        main(
            [
                "bench",
                "--quick",
                "--input-size",
                "32",
                "--runs",
                "2",
                "--no-onnx",
                "--no-peers",
                "--baseline",
                "ghostnet_100 / fused+cl",
                "--output",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert [r["form"] for r in result["rows"]] == ["eager"] and result["rows"][0]["ratio"] is None
    assert result["rows"][0]["latency_ms"] > 0 and result["rows"][0]["throughput"] == {}
    assert result["failed"] == [
        {"model": "ghostnet_100", "form": "fused+cl", "error": "RuntimeError: no kernel for this"},
        {"model": "ghostnet_100", "form": "eager @ batch 4", "error": "MemoryError: too big"},
    ]
    table = capsys.readouterr().out
    assert "failed: ghostnet_100 / fused+cl: RuntimeError: no kernel for this" in table and "no ratios" in table
    with pytest.raises(SystemExit) as e:  # refused before any timing
        main(["bench", "--quick", "--no-onnx", "--no-peers", "--output", str(out)])
    assert e.value.code == 2 and "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["bench", "--quick", "--no-onnx", "--no-peers", "--baseline", "ghostnet_100 eager"])
    assert e.value.code == 2 and "MODEL / FORM" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a peer is timed on the CPU in eager and ONNX Runtime only
        main(["bench", "--quick", "--no-onnx", "--baseline", "tv resnet18 / fused+cl"])
    assert e.value.code == 2 and "does not time tv resnet18 as 'fused+cl'; its forms: eager" in capsys.readouterr().err


def test_bench_interleaves_the_forms(monkeypatch):
    """Each round times every form once, so drift on a shared machine falls on all forms alike."""
    import ghostnet.deploy.bench as bench

    real, calls = bench.torch_forms, []

    def logged(model, device, **kw):
        def log(name, fn):
            return lambda x: (calls.append(name), fn(x))[1]

        return {name: log(name, fn) for name, fn in real(model, device, **kw).items()}

    monkeypatch.setattr(bench, "torch_forms", logged)
    result = bench.run_bench(
        "ghostnet_small_050", 32, (1, 4), threads=1, runs=2, warmup=1, compile=False, onnx=False, peers=False
    )
    e, f = "eager", "fused+cl"
    # batch 1: warm-up, then one round of 2 settling + 3 timed calls each; batch 4: warm-up x2, 3 rounds of 1 + 1
    assert calls == [e, f] + [e] * 5 + [f] * 5 + [e, e, f, f] + [e, e, f, f] * 3
    assert [r["form"] for r in result["rows"]] == [e, f] and result["rows"][0]["ratio"] == 1.0


def test_matmul_gflops_runs_at_the_threads_it_is_given(monkeypatch):
    """The floor's matmul rate is measured at `threads` threads, and torch's thread count is put back after,
    also when the measurement fails."""
    from ghostnet.deploy import bench

    before = torch.get_num_threads()
    target = before + 1
    seen = []
    real_randn = torch.randn

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return real_randn(*args, **kw)

    monkeypatch.setattr(torch, "randn", spy)
    assert bench.matmul_gflops(target, n=8, runs=1) > 0
    assert seen and set(seen) == {target}
    assert torch.get_num_threads() == before

    def broken(*args, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(torch, "randn", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        bench.matmul_gflops(target, n=8, runs=1)
    assert torch.get_num_threads() == before


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
    assert len(err) == 1 and err[0].startswith(f"ghostnet export: error: could not write {out}: "), err
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


def test_bench_peers_follow_the_model_and_v3_is_timed_folded():
    pytest.importorskip("timm")
    from ghostnet.deploy.bench_forms import peer_builders
    from ghostnet.deploy.bench_report import BenchRow, set_ratios
    from ghostnet.nn import GhostModuleV3

    peers = peer_builders("ghostnetv3_100")
    assert "timm ghostnetv3_100" in peers and "tv mobilenet_v3_large" in peers
    timm_v3 = peers["timm ghostnetv3_100"]()
    assert not any("rpr" in n for n, _ in timm_v3.named_parameters())  # timm's, folded as it is deployed
    assert "timm ghostnet_100" in peer_builders("ghostnet_small_050")  # no such timm model: its GhostNet 1.0x
    repghost = peers["timm repghostnet_100"]()  # the concat-free GhostNet, timed as deployed: branches folded
    assert not repghost.training and not any("fusion_bn" in n for n, _ in repghost.named_parameters())
    rows = [
        BenchRow("ghostnetv3_100", "eager", 1, 2.0, 2.0, {}, 0.1),
        BenchRow("timm ghostnetv3_100", "eager", 1, 4.0, 4.0, {}, 0.1),
    ]
    assert set_ratios(rows, None, "ghostnetv3_100", print) == "timm ghostnetv3_100 / eager"
    assert rows[0].ratio == 0.5
    folded = create_model("ghostnetv3_050").eval().reparameterize()
    assert all(m.folded for m in folded.modules() if isinstance(m, GhostModuleV3))


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
