"""The common edge-runtime export: output checks, staging and atomic placement, parity on real images, and the
`ghostnet classify export --format <runtime>` options, against a stand-in runtime (the real ones have their own tests)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ghostnet.bench import BenchSetup
from ghostnet.bench.forms import FORMS
from ghostnet.cli import main
from ghostnet.deploy import runtime_export, runtimes
from ghostnet.deploy.runtime_export import export_to_runtime, sample_photos, single_images
from ghostnet.deploy.runtimes import RUNTIMES, MissingRuntimeError, Runtime, installed, require


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()


def _fake_backend(calls: dict, scale: float = 1.0, shape_off: bool = False, companion: bool = True):
    """A runtime that saves the model with torch.save's tensors-only format and runs it in PyTorch."""

    def convert(model, example, path, calibration):
        calls["example"], calls["calibration"] = tuple(example.shape), calibration
        torch.save(model.state_dict(), path)
        if companion:
            path.with_suffix(".bin").write_bytes(b"weights")

    def load(path, threads):
        model = _tiny()
        model.load_state_dict(torch.load(path, weights_only=True))
        return lambda a: [model(torch.from_numpy(a)).detach().numpy()[:, : 4 if shape_off else 5] * scale]

    files = lambda path: [path, path.with_suffix(".bin")] if companion else [path]  # noqa: E731
    return types.SimpleNamespace(convert=convert, load=load, files=files, notes=lambda path: ["a note"])


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(RUNTIMES, "fake", Runtime("fake", "fake", ("torch",), ".fk", "fk", "fake"))
    calls: dict = {}

    def use(**kw):
        monkeypatch.setattr(runtime_export, "require", lambda name: _fake_backend(calls, **kw))
        return calls

    return use


def test_a_float_export_is_checked_on_photographs_and_placed_whole(tmp_path, fake):
    calls = fake()
    r = export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32))
    assert calls["example"] == (1, 3, 32, 32) and calls["calibration"] is None
    assert r.precision == "fp32" and r.max_abs_diff == 0.0 and r.top1_agreement == 1.0 and r.images == 8
    assert r.files == [str(tmp_path / "m.fk"), str(tmp_path / "m.bin")] and r.notes == ["a note"]
    assert r.size_bytes == sum(Path(f).stat().st_size for f in r.files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.fk"]  # no staging folder left


def test_an_existing_file_is_kept_unless_forced(tmp_path, fake):
    fake()
    (tmp_path / "m.fk").write_text("keep me")
    with pytest.raises(ValueError, match="exists; pass --force"):
        export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32))
    assert (tmp_path / "m.fk").read_text() == "keep me"
    (tmp_path / "m.fk").unlink()
    (tmp_path / "m.bin").write_text("keep me too")  # a companion file counts as well
    with pytest.raises(ValueError, match="m.bin exists"):
        export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin"]
    export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32), force=True)
    assert (tmp_path / "m.bin").read_bytes() == b"weights"


def test_a_float_export_that_disagrees_or_changes_shape_is_refused_and_leaves_nothing(tmp_path, fake):
    fake(scale=1.5)
    with pytest.raises(ValueError, match="disagrees with PyTorch"):
        export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32))
    fake(shape_off=True)
    with pytest.raises(ValueError, match="outputs of shape 1x4; PyTorch gives 1x5"):
        export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32))
    assert list(tmp_path.iterdir()) == []


def test_int8_is_reported_not_held_to_the_float_tolerance(tmp_path, fake):
    calls = fake(scale=1.5, companion=False)
    calibration = single_images([sample_photos(3, (32, 32))])
    r = export_to_runtime(_tiny(), tmp_path / "m.fk", "fake", (32, 32), calibration=calibration)
    assert r.precision == "int8" and r.calibration_images == 3 and len(calls["calibration"]) == 3
    assert r.max_abs_diff > 0 and r.top1_agreement == 1.0  # scaled logits keep their argmax
    with pytest.raises(ValueError, match="needs calibration images"):
        export_to_runtime(_tiny(), tmp_path / "n.fk", "fake", (32, 32), calibration=[])


def test_bad_paths_are_refused_before_any_work(tmp_path, fake):
    calls = fake()
    with pytest.raises(ValueError, match="fake exports are .fk files; got m.onnx"):
        export_to_runtime(_tiny(), tmp_path / "m.onnx", "fake", (32, 32))
    with pytest.raises(ValueError, match="does not exist"):
        export_to_runtime(_tiny(), tmp_path / "no" / "m.fk", "fake", (32, 32))
    assert calls == {}


def test_sample_photos_are_real_normalised_images():
    x = sample_photos(4, (48, 40))
    assert x.shape == (4, 3, 48, 40) and -2.2 < float(x.min()) < -0.5 and 0.5 < float(x.max()) < 2.7
    assert float((x[0] - x[1]).abs().mean()) > 0.1  # different crops
    assert sample_photos(2, (16, 16), in_chans=1).shape == (2, 1, 16, 16)
    assert [t.shape for t in single_images([x[:3], x[3:]], limit=2)] == [(1, 3, 48, 40)] * 2


def test_a_missing_runtime_names_its_extra(monkeypatch):
    monkeypatch.setitem(RUNTIMES, "nope", Runtime("nope", "nope-extra", ("no_such_module_xyz",), ".n", "n", "nope"))
    assert not installed("nope")
    with pytest.raises(MissingRuntimeError, match=r"pip install 'ghostnet-pytorch\[nope-extra\]'"):
        require("nope")
    with pytest.raises(ValueError, match="unknown runtime 'coreml'; choose one of openvino, executorch, tflite"):
        require("coreml")


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_export_options_that_do_not_fit_a_runtime_are_one_line(tmp_path, capsys, monkeypatch):
    name = next((n for n in RUNTIMES if installed(n)), None)
    if name is None:
        pytest.skip("no edge runtime installed")
    out = str(tmp_path / f"m{RUNTIMES[name].suffix}")
    err = _cli_error(["classify", "export", "ghostnet_050", "--format", name, "--int8", "--output", out], capsys)
    assert "--int8 needs calibration images: --calibration-dir DIR" in err
    err = _cli_error(["classify", "export", "ghostnet_050", "--format", name, "--dynamic-batch"], capsys)
    assert "takes a fixed batch of 1" in err
    err = _cli_error(["classify", "export", "ghostnet_050", "--format", name, "--calibration-images", "8"], capsys)
    assert "go with --int8" in err
    assert "--int8 applies to openvino, executorch, tflite;" in _cli_error(
        ["classify", "export", "ghostnet_050", "--int8"], capsys
    )
    assert not list(tmp_path.iterdir())


def test_int8_for_a_runtime_without_it_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("ghostnet.deploy.runtimes.require", lambda name: None)  # whether or not ncnn is installed
    out = str(tmp_path / "m.ncnn.param")
    err = _cli_error(["classify", "export", "ghostnet_050", "--format", "ncnn", "--int8", "--output", out], capsys)
    assert err.strip().endswith("--int8: " + RUNTIMES["ncnn"].no_int8) and "\n" not in err.strip()
    edge = {f.name for f in FORMS if f.runtime in ("ncnn", "tflite") and f.applies(BenchSetup(), False)}
    assert edge == {"ncnn-fp32", "tflite-fp32", "tflite-int8"}  # the bench's forms: no int8 where it is refused
    assert not list(tmp_path.iterdir())


def test_export_to_a_runtime_that_is_not_installed_names_the_extra(capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "openvino" else real(m, *a))
    err = _cli_error(["classify", "export", "ghostnet_050", "--format", "openvino"], capsys)
    assert "pip install 'ghostnet-pytorch[openvino]'" in err and "\n" not in err.strip()


def test_cli_export_through_a_runtime_prints_what_it_checked(tmp_path, capsys, fake, monkeypatch):
    """The command behind `--format` with a stand-in runtime (argparse's choices know only the real ones)."""
    fake()
    monkeypatch.setattr("ghostnet.deploy.runtimes.require", lambda name: None)  # installed, as far as the CLI asks
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            photos / f"{i}.png"
        )
    from ghostnet.tasks.export import run_export

    args = types.SimpleNamespace(
        format="fake",
        dynamic_batch=False,
        int8=True,
        calibration_dir=str(photos),
        calibration_images=2,
        checkpoint=None,
        fuse=False,
        output=str(tmp_path / "m.fk"),
        force=False,
        input_size=None,
        data_dir=None,
    )
    assert run_export(args, _source()) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "(fake, int8," in out and "calibrated on 2 images" in out and "a note" in out


def _source():
    from ghostnet.data.images import Preprocess
    from ghostnet.tasks.export import ExportSource

    return ExportSource(_tiny(), (32, 32), 3, Preprocess(image_size=32), "tiny")


def test_calibration_images_are_stacked_to_the_files_batch():
    images = [torch.full((1, 1, 1, 1), float(i)) for i in range(5)]
    assert [b.flatten().tolist() for b in runtimes.stacked(images, 2)] == [[0, 1], [2, 3], [4, 0]]
    assert [b.flatten().tolist() for b in runtimes.stacked(images, 7)] == [[0, 1, 2, 3, 4, 0, 1]]


def test_float32_noise_accepts_rounding_and_refuses_a_real_difference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 2), nn.Linear(2, 1)).eval()  # a small difference of two large sums
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(1, 64).repeat(2, 1) * 1e4 + torch.randn(2, 64))
        model[1].weight.copy_(torch.tensor([[1.0, -1.0]]))
        x = torch.randn(64)
        exact = model.double()(x.double()).float()
        model.float()
        own = model(x[None])[0]
    scale = max(1.0, float(exact.abs().max()))
    assert float((own - exact).abs().max()) > 1e-4 * scale  # a fixed tolerance would refuse PyTorch itself
    other = exact - 3 * (own - exact)  # another float32 implementation, summing in another order
    assert runtime_export.float32_noise(model, x, [other[None]], 1e-4)
    assert not runtime_export.float32_noise(model, x, [(exact + 10 * (own - exact).abs() + 0.1)[None]], 1e-4)


def test_what_a_converter_prints_goes_to_stderr(capsys, tmp_path):
    def convert(model, example, path, calibration):
        print("Statistics collection 100%")
        path.write_bytes(b"x")

    runtimes.convert_quietly(
        types.SimpleNamespace(convert=convert), _tiny(), torch.zeros(1, 3, 8, 8), tmp_path / "f", None
    )
    out, err = capsys.readouterr()
    assert out == "" and "Statistics collection" in err
