"""`ghostnet bench`'s other measurements: the training step (--train-step), the per-op profile (--profile) and
ours' concat-free deploy form (--concat-free); and a Ghost pair's baseline timed in every form ours is."""

import pytest

from ghostnet.cli import main
from ghostnet.deploy.bench import run_bench
from ghostnet.deploy.bench_profile import format_profile, op_kind, run_profile
from ghostnet.deploy.bench_train import format_train_bench, run_train_bench


def test_train_step_times_the_ghost_model_and_its_baseline_each_in_its_own_process():
    result = run_train_bench("ghost_resnet56", (32, 32), (2,), threads=1, steps=1, warmup=1, rounds=2)
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"ghost_resnet56", "resnet56"} and result["baseline"] == "resnet56" and not result["failed"]
    for r in rows.values():
        assert len(r["rounds_images_per_s"]) == 2 and r["images_per_s"] == max(r["rounds_images_per_s"]) > 0
        assert r["peak_mib"] > 0  # the model, its activations and gradients: above the child's size at start
    assert rows["resnet56"]["x_baseline"] == 1.0
    assert rows["ghost_resnet56"]["x_baseline"] == pytest.approx(
        rows["ghost_resnet56"]["images_per_s"] / rows["resnet56"]["images_per_s"], rel=1e-2
    )
    text = format_train_bench(result)
    assert "ratios vs resnet56" in text and "ghost_resnet56" in text and "1 threads" in text


def test_train_step_that_fails_in_its_child_is_listed_and_the_run_ends_cleanly():
    # batch 1 at 32x32: ghostnet_100's last BN sees one value per channel, which training mode refuses
    result = run_train_bench("ghostnet_100", (32, 32), (1,), threads=1, steps=1, warmup=1, peers=False, rounds=2)
    assert result["rows"] == []
    assert len(result["failed"]) == 1  # not retried in the second round
    assert result["failed"][0]["model"] == "ghostnet_100" and "ValueError" in result["failed"][0]["error"]
    assert "failed: ghostnet_100 at batch 1" in format_train_bench(result)


def test_train_step_refuses_an_unknown_model_before_any_child_starts():
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        run_train_bench("nosuch")


def test_op_kind_splits_convolutions_by_their_weight():
    assert op_kind("aten::mkldnn_convolution", [8, 1, 3, 3]) == "aten::mkldnn_convolution (depthwise)"
    assert op_kind("Conv", [16, 8, 3, 3]) == "Conv (dense)"
    assert op_kind("aten::cat", [8, 1, 3, 3]) == "aten::cat" and op_kind("Conv", None) == "Conv"


def test_profile_splits_each_form_by_op_kind():
    result = run_profile("ghost_resnet56", (32, 32), (1,), threads=1, runs=1)
    by = {(p["model"], p["form"]): p for p in result["profiles"]}
    forms = {"eager", "fused+cl", "ort-fp32"}
    assert set(by) == {(m, f) for m in ("ghost_resnet56", "resnet56") for f in forms} and not result["failed"]
    for p in by.values():
        assert p["op_ms"] == pytest.approx(sum(p["ops"].values())) and p["op_ms"] > 0
    assert any("(depthwise)" in op for op in by[("ghost_resnet56", "fused+cl")]["ops"])  # the cheap operation
    assert not any("(depthwise)" in op for op in by[("resnet56", "fused+cl")]["ops"])
    assert (
        "Concat" in by[("ghost_resnet56", "ort-fp32")]["ops"] and "Conv (dense)" in by[("resnet56", "ort-fp32")]["ops"]
    )
    assert "ghost_resnet56 / ort-fp32 @ batch 1" in format_profile(result)


def test_profile_of_the_training_step_sees_the_backward_pass():
    result = run_profile("ghost_resnet56", (32, 32), (2,), threads=1, runs=1, train_step=True, peers=False)
    (p,) = result["profiles"]
    assert p["form"] == "train step" and "aten::convolution_backward (depthwise)" in p["ops"]


def test_concat_free_form_is_timed_as_a_model_of_its_own_and_the_baseline_gets_every_form():
    result = run_bench(
        "ghost_resnet56",
        input_size=32,
        batch_sizes=(1,),
        runs=2,
        warmup=1,
        threads=1,
        concat_free=True,
        int8=False,
        compile=False,
        baseline="resnet56 / fused+cl",
    )
    forms = {(r["model"], r["form"]) for r in result["rows"]}
    for model in ("ghost_resnet56", "ghost_resnet56 concat-free", "resnet56"):
        assert {(model, "eager"), (model, "fused+cl"), (model, "ort-fp32")} <= forms
    assert result["baseline"] == "resnet56 / fused+cl" and not result["failed"]


def test_concat_free_of_a_model_without_ghost_modules_is_a_failed_row_not_a_copy():
    result = run_bench(
        "resnet56",
        input_size=32,
        batch_sizes=(1,),
        runs=1,
        warmup=1,
        threads=1,
        concat_free=True,
        onnx=False,
        compile=False,
        peers=False,
    )
    assert {r["model"] for r in result["rows"]} == {"resnet56"}
    (failed,) = result["failed"]
    assert failed["model"] == "resnet56 concat-free" and "no Ghost module" in failed["error"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--train-step", "--compile"], "--compile cannot be used with --train-step"),
        (["--profile", "--checkpoint", "x.pt"], "--checkpoint cannot be used with --profile"),
        (["--train-step", "--concat-free"], "--concat-free cannot be used with --train-step"),
        (["--profile", "--runtimes", "torch,openvino"], "--profile covers ort, torch"),
        (["--train-step", "--runtimes", "ort"], "--train-step covers torch"),
        (["--channels-last"], "--channels-last applies to --train-step"),
        (["--profile", "--device", "cuda"], "--device cannot be used with --profile"),
    ],
)
def test_bench_modes_refuse_options_they_would_ignore(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
