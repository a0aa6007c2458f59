"""`ghostnet bench latency --runtimes` and `--checkpoint`: which runtimes are refused before any work, the forms each
runtime gives ours and the peers (converted once per batch size, never inside a timed call), failures recorded,
the top-1 column from a trained checkpoint, the JSON's shape. A stand-in runtime checks the plumbing; the real
ones, where installed, are timed too."""

import json
import time
from pathlib import Path

import pytest
import torch

import ghostnet.bench.forms as forms
import ghostnet.bench.latency as latency
from ghostnet.bench import BenchSetup, run_latency
from ghostnet.bench.setup import resolve_runtimes
from ghostnet.cli import main
from ghostnet.deploy.runtimes import RUNTIMES, MissingRuntimeError, require

QUICK = ["bench", "latency", "--quick", "--input-size", "32", "--runs", "2", "--threads", "1"]


class FakeRuntime:
    """A stand-in edge runtime with the registry's interface: its "file" runs the PyTorch model it was given.

    It records each conversion (file name, example shape, calibration batches), can sleep in converting the file
    named `slow` (as a real conversion takes seconds) and can refuse the int8 conversion."""

    def __init__(self, slow: str = "", refuse_int8: bool = False):
        self.slow, self.refuse_int8 = slow, refuse_int8
        self.converted: list[tuple[str, tuple[int, ...], list[torch.Tensor] | None]] = []
        self.models: dict[str, torch.nn.Module] = {}

    def convert(self, model, example, path, calibration):
        self.converted.append((Path(path).name, tuple(example.shape), calibration))
        if self.slow and Path(path).name == self.slow:
            time.sleep(0.6)
        if calibration is not None and self.refuse_int8:
            raise RuntimeError("quantizer refused this graph\nand a second line")
        Path(path).write_bytes(b"model")
        self.models[str(path)] = model

    def load(self, path, threads):
        model = self.models[str(path)]
        static = None

        def run(a):
            nonlocal static
            static = static or a.shape
            assert a.shape == static, "a file with a static shape was given another shape"
            with torch.no_grad():
                return [model(torch.from_numpy(a)).numpy()]

        return run

    def files(self, path):
        return [Path(path)]


@pytest.fixture
def fake_openvino(monkeypatch):
    """`openvino` served by a `FakeRuntime` (the other runtimes as they are)."""
    fake = FakeRuntime()
    real = forms.require
    monkeypatch.setattr(forms, "require", lambda name: fake if name == "openvino" else real(name))
    return fake


def test_unknown_and_uninstalled_runtimes_are_refused_before_any_work(monkeypatch, capsys):
    def no_work(*a, **kw):
        raise AssertionError("the run started")

    monkeypatch.setattr(latency, "matmul_gflops", no_work)
    monkeypatch.setattr(latency, "trained_ours", no_work)
    with pytest.raises(SystemExit) as e:
        main([*QUICK, "--runtimes", "torch,onnx,tpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert "unknown runtime 'onnx', 'tpu'; choose from torch, ort, openvino, executorch, tflite" in err[0]

    def missing(name):
        raise MissingRuntimeError(f"{name} needs openvino, which is not installed: pip install 'ghostnet-pytorch[x]'")

    monkeypatch.setattr(forms, "require", missing)
    with pytest.raises(SystemExit) as e:
        main([*QUICK, "--runtimes", "torch,openvino", "--checkpoint", "nowhere.pth"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "pip install 'ghostnet-pytorch[x]'" in err[0]

    def not_written(name):  # the packages are there, our module for the runtime is not
        raise ModuleNotFoundError(f"No module named 'ghostnet.deploy.runtimes.{name}'")

    monkeypatch.setattr(forms, "require", not_written)
    with pytest.raises(ValueError, match="runtime tflite cannot be used: No module named"):
        BenchSetup(model_name="ghostnet_small_050", input_size=32, runtimes=("tflite",))
    with pytest.raises(ValueError, match="name at least one"):
        BenchSetup(model_name="ghostnet_small_050", input_size=32, runtimes=" , ")
    assert BenchSetup().runtimes == ("torch", "ort")
    assert resolve_runtimes("torch, ort,torch", onnx=False) == ("torch",)  # --no-onnx: without ort


def test_each_model_gets_fp32_and_int8_in_an_edge_runtime_converted_once_per_batch_size(fake_openvino, tmp_path):
    # not timed: a conversion happens in a warm-up call, even with no warm-up asked for
    fake_openvino.slow = "ghostnet_small_050-ov-fp32-b1.xml"
    setup = BenchSetup(model_name="ghostnet_small_050", input_size=32, batch_sizes=(1, 2), threads=1, runs=2,
                       warmup=0, runtimes="torch,openvino", baseline="ghostnet_small_050 / ov-fp32")  # fmt: skip
    result = run_latency(setup).to_dict()
    rows = {(r["model"], r["form"]): r for r in result["rows"]}
    models = list(dict.fromkeys(m for m, _ in rows))
    assert models[0] == "ghostnet_small_050" and "tv mobilenet_v2" in models and result["failed"] == []
    for m in models:
        assert rows[(m, "ov-fp32")]["runtime"] == rows[(m, "ov-int8")]["runtime"] == "openvino"
        assert rows[(m, "eager")]["runtime"] == "torch" and (m, "ort-fp32") not in rows
        assert all(rows[(m, f)]["latency_p90_ms"] < 300 for f in ("ov-fp32", "ov-int8"))
        assert rows[(m, "ov-int8")]["top1"] is None
        assert set(rows[(m, "ov-int8")]["throughput"]) == {"2"}
    assert rows[("ghostnet_small_050", "ov-fp32")]["ratio"] == 1.0
    names = [name for name, _, _ in fake_openvino.converted]
    assert len(names) == len(set(names)) == 4 * len(models)  # fp32 and int8, at batch 1 and at batch 2
    assert "tv_mobilenet_v2-ov-int8-b2.xml" in names
    for name, shape, calibration in fake_openvino.converted:
        assert shape == (int(name.split("-b")[-1].split(".")[0]), 3, 32, 32)
        if "int8" in name:  # real photographs, ImageNet-normalised, one image each (the runtime stacks them)
            assert calibration and all(c.shape == (1, *shape[1:]) for c in calibration)
            assert 0.3 < float(torch.cat(calibration).std()) < 3 and len(torch.cat(calibration).unique()) > 100
        else:
            assert calibration is None
    ours = fake_openvino.models[str(next(p for p in fake_openvino.models if "ghostnet_small_050-ov-fp32-b1" in p))]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ours.modules())  # ours BN folded, as for ORT


def test_a_failing_conversion_is_recorded_and_the_run_goes_on(fake_openvino, tmp_path, capsys):
    fake_openvino.refuse_int8 = True
    out = tmp_path / "b.json"
    assert main([*QUICK, "--no-peers", "--runtimes", "ort,openvino", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["form"] for r in result["rows"]] == ["ort-fp32", "ort-int8", "ov-fp32"]
    assert result["failed"] == [
        {"model": "ghostnet_100", "form": "ov-int8", "error": "RuntimeError: quantizer refused this graph"}
    ]
    # no PyTorch form: the ratios are taken against ours' first form
    assert result["baseline"] == "ghostnet_100 / ort-fp32" and result["rows"][0]["ratio"] == 1.0
    table = capsys.readouterr().out
    assert "failed: ghostnet_100 / ov-int8: RuntimeError: quantizer refused this graph" in table
    assert " ov-fp32        openvino " in table
    assert result["machine"]["runtimes"] == ["ort", "openvino"]


def _digits_checkpoint(tmp_path) -> Path:
    from ghostnet.tasks.classify import train
    from ghostnet.tasks.classify.config import load_recipe

    values = dict(output_dir=str(tmp_path / "runs"), name="r", epochs=1, max_steps=3, batch_size=32)
    values.update(eval_batch_size=512, image_size=16, progress=False, seed=0)
    train(load_recipe("digits", values))
    return tmp_path / "runs" / "r" / "last.pth"


def test_top1_of_each_form_of_ours_from_a_checkpoint(fake_openvino, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from ghostnet.tasks.classify.evaluate import load_model
    from ghostnet.tasks.classify.quantize import checkpoint_data

    ckpt = _digits_checkpoint(tmp_path)
    out = tmp_path / "b.json"
    argv = [*QUICK[:3], "--runs", "1", "--threads", "1", "--checkpoint", str(ckpt), "--eval-images", "40"]
    assert main([*argv, "--no-peers", "--runtimes", "torch,ort,openvino", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["accuracy"] == {
        "checkpoint": str(ckpt),
        "dataset": "digits",
        "images": 40,
        "test_images": 364,
        "batch": 1,
        "calibration_images": 128,
    }
    assert result["machine"]["input_size"] == [16, 16]
    ours = {r["form"]: r for r in result["rows"] if r["model"] == "ghostnet_small_050"}
    assert set(ours) == {"eager", "fused+cl", "ort-fp32", "ort-int8", "ov-fp32", "ov-int8"}
    # the eager figure is the checkpoint's own top-1 on those 40 images; the fp32 forms agree with it
    model, _, _ = load_model(ckpt)
    d = checkpoint_data(ckpt)
    x, y = next(iter(d.test.batches()))
    with torch.no_grad():
        expected = 100 * float((model(x[:40]).argmax(1) == y[:40]).float().mean())
    assert ours["eager"]["top1"] == pytest.approx(expected)
    assert ours["ort-fp32"]["top1"] == ours["ov-fp32"]["top1"] == pytest.approx(expected, abs=2.6)
    assert all(0 <= r["top1"] <= 100 for r in ours.values())
    # ours' int8 is calibrated on its training images (1 channel, 16x16, as the checkpoint takes)
    calibrated = {name: c for name, _, c in fake_openvino.converted if "int8-b1" in name}
    first = next(iter(d.calibration.batches()))[0][:1]
    assert len(calibrated["ghostnet_small_050-ov-int8-b1.xml"]) == 128
    assert torch.equal(calibrated["ghostnet_small_050-ov-int8-b1.xml"][0], first)
    assert calibrated["ghostnet_small_050-ov-int8-b1.xml"][0].shape == (1, 1, 16, 16)
    # a peer has no weights for the dataset: no top-1
    from ghostnet.bench.forms import Timed

    setup = BenchSetup(checkpoint=str(ckpt), eval_images=4, trained_data=checkpoint_data)
    trained = latency.trained_ours(setup, calibration_images=2)
    peer = Timed("tv resnet18", "eager", lambda x: torch.zeros(len(x), 10), 1, False)
    labels = iter(trained["labels"].tolist())  # a form that is always right
    mine = Timed("ghostnet_small_050", "eager", lambda x: torch.eye(10)[[next(labels)]], 1, False, 1)
    assert latency._forms_top1([peer, mine], trained, setup, print, print) == {id(mine): 100.0}
    table = capsys.readouterr().out
    assert "top-1 %" in table and f"top-1: {ckpt} on the first 40 of 364 digits test images, batch 1" in table
    with pytest.raises(SystemExit) as e:  # its top-1 is measured at the size it was trained at
        main([*argv, "--input-size", "32"])
    assert e.value.code == 2 and "was trained at 16x16" in capsys.readouterr().err


def test_result_json_and_machine_features(tmp_path):
    from ghostnet.bench import format_latency
    from ghostnet.bench.setup import cpu_info

    info = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512_vnni\n\n"
    features = {"avx2": True, "avx512f": True, "avx512_vnni": True, "amx_int8": False}
    assert cpu_info(info) == {"cpu": "Some CPU", "cpu_features": features}
    assert cpu_info("")["cpu_features"] is None
    setup = BenchSetup(model_name="ghostnet_small_050", input_size=32, batch_sizes=(1,), threads=1, runs=1, warmup=1,
                       onnx=False, peers=False)  # fmt: skip
    run = run_latency(setup)
    result = run.to_dict()
    assert set(result) == {"machine", "baseline", "accuracy", "rows", "failed"} and result["accuracy"] is None
    assert set(result["machine"]["cpu_features"] or {}) <= {"avx2", "avx512f", "avx512_vnni", "amx_int8"}
    row = result["rows"][0]
    assert set(row) == {
        "model",
        "form",
        "runtime",
        "macs",
        "latency_ms",
        "latency_p90_ms",
        "throughput",
        "floor_ms",
        "ratio",
        "top1",
    }
    run.machine["cpu_features"] = {"avx2": True, "avx512f": False, "avx512_vnni": False, "amx_int8": False}
    assert format_latency(run).splitlines()[0].startswith("cpu (") and "; AVX2, 1 threads)" in format_latency(run)
    json.dumps(result)  # plain JSON


@pytest.mark.slow  # minutes: two real conversions, int8 calibrated
@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_a_real_runtime_times_ours(runtime):
    try:
        require(runtime)
    except (ImportError, ValueError) as e:
        pytest.skip(f"{runtime}: {e}")
    label = RUNTIMES[runtime].label
    setup = BenchSetup(model_name="ghostnet_small_050", input_size=32, batch_sizes=(1,), threads=1, runs=1, warmup=1,
                       runtimes=(runtime,), peers=False)  # fmt: skip
    result = run_latency(setup).to_dict()
    forms = {r["form"]: r for r in result["rows"]}
    kinds = ("fp32", "int8") if RUNTIMES[runtime].int8 else ("fp32",)  # ncnn: no int8 from Python
    assert result["failed"] == [] and set(forms) == {f"{label}-{kind}" for kind in kinds}
    assert all(r["runtime"] == runtime and r["latency_ms"] > 0 for r in forms.values())
