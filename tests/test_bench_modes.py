"""`ghostnet bench train` (the training step), `ghostnet bench profile` (op time per op kind) and ours'
concat-free deploy form (--concat-free); and a Ghost pair's baseline timed in every form ours is."""

import pytest

from ghostnet.bench import BenchSetup, format_profile, format_train, run_latency, run_profile, run_train
from ghostnet.bench.profile import op_kind
from ghostnet.cli import main


def test_train_step_times_the_ghost_model_and_its_baseline_each_in_its_own_process():
    setup = BenchSetup("train", "ghost_resnet56", 32, (2,), threads=1, runs=1, warmup=1, rounds=2)
    result = run_train(setup)
    rows = {r.model: r for r in result.rows}
    assert set(rows) == {"ghost_resnet56", "resnet56"} and result.baseline == "resnet56" and not result.failed
    for r in rows.values():
        assert len(r.rounds_images_per_s) == 2 and r.images_per_s == max(r.rounds_images_per_s) > 0
        assert r.peak_mib > 0  # the model, its activations and gradients: above the child's size at start
    assert rows["resnet56"].x_baseline == 1.0
    assert rows["ghost_resnet56"].x_baseline == pytest.approx(
        rows["ghost_resnet56"].images_per_s / rows["resnet56"].images_per_s, rel=1e-2
    )
    text = format_train(result)
    assert "ratios vs resnet56" in text and "ghost_resnet56" in text and "1 threads" in text
    assert set(result.to_dict()["rows"][0]) == {
        "model",
        "batch",
        "images_per_s",
        "rounds_images_per_s",
        "peak_mib",
        "x_baseline",
    }


def test_train_step_that_fails_in_its_child_is_listed_and_the_run_ends_cleanly():
    # batch 1 at 32x32: ghostnet_100's last BN sees one value per channel, which training mode refuses
    setup = BenchSetup("train", "ghostnet_100", 32, (1,), threads=1, runs=1, warmup=1, peers=False, rounds=2)
    result = run_train(setup)
    assert result.rows == []
    (failed,) = result.failed  # not retried in the second round
    assert failed.model == "ghostnet_100" and "ValueError" in failed.error
    assert result.to_dict()["failed"] == [{"model": "ghostnet_100", "batch": 1, "error": failed.error}]
    assert "failed: ghostnet_100 at batch 1" in format_train(result)


def test_train_step_refuses_an_unknown_model_before_any_child_starts():
    with pytest.raises(ValueError, match="unknown model 'nosuch'"):
        run_train(BenchSetup("train", "nosuch"))


def test_op_kind_splits_convolutions_by_their_weight():
    assert op_kind("aten::mkldnn_convolution", [8, 1, 3, 3]) == "aten::mkldnn_convolution (depthwise)"
    assert op_kind("Conv", [16, 8, 3, 3]) == "Conv (dense)"
    assert op_kind("aten::cat", [8, 1, 3, 3]) == "aten::cat" and op_kind("Conv", None) == "Conv"


def test_profile_splits_each_form_by_op_kind():
    result = run_profile(BenchSetup("profile", "ghost_resnet56", 32, (1,), threads=1, runs=1, int8=False))
    by = {(p.model, p.form): p for p in result.profiles}
    forms = {"eager", "fused+cl", "ort-fp32"}
    assert set(by) == {(m, f) for m in ("ghost_resnet56", "resnet56") for f in forms} and not result.failed
    for p in by.values():
        assert p.op_ms == pytest.approx(sum(p.ops.values())) and p.op_ms > 0 and sum(p.op_calls.values()) > 0
    assert any("(depthwise)" in op for op in by[("ghost_resnet56", "fused+cl")].ops)  # the cheap operation
    assert not any("(depthwise)" in op for op in by[("resnet56", "fused+cl")].ops)
    assert "Concat" in by[("ghost_resnet56", "ort-fp32")].ops and "Conv (dense)" in by[("resnet56", "ort-fp32")].ops
    assert "ghost_resnet56 / ort-fp32 @ batch 1" in format_profile(result) and "op calls" in format_profile(result)


def test_profile_of_onnx_runtime_int8():
    setup = BenchSetup("profile", "ghost_resnet56", 32, (1,), threads=1, runs=1, runtimes="ort", peers=False)
    (fp32, int8) = run_profile(setup).profiles
    assert (fp32.form, int8.form) == ("ort-fp32", "ort-int8") and any("QLinear" in op for op in int8.ops)


def test_profile_of_the_training_step_sees_the_backward_pass():
    setup = BenchSetup("profile", "ghost_resnet56", 32, (2,), threads=1, runs=1, train_step=True, peers=False)
    (p,) = run_profile(setup).profiles
    assert p.form == "train step" and "aten::convolution_backward (depthwise)" in p.ops


def test_concat_free_form_is_timed_as_a_model_of_its_own_and_the_baseline_gets_every_form():
    setup = BenchSetup(
        model_name="ghost_resnet56",
        input_size=32,
        batch_sizes=(1,),
        runs=2,
        warmup=1,
        threads=1,
        concat_free=True,
        int8=False,
        baseline="resnet56 / fused+cl",
    )
    result = run_latency(setup)
    forms = {(r.model, r.form) for r in result.rows}
    for model in ("ghost_resnet56", "ghost_resnet56 concat-free", "resnet56"):
        assert {(model, "eager"), (model, "fused+cl"), (model, "ort-fp32")} <= forms
    assert result.baseline == "resnet56 / fused+cl" and not result.failed


def test_concat_free_of_a_model_without_ghost_modules_is_a_failed_row_not_a_copy():
    setup = BenchSetup(model_name="resnet56", input_size=32, batch_sizes=(1,), runs=1, warmup=1, threads=1,
                       concat_free=True, onnx=False, peers=False)  # fmt: skip
    result = run_latency(setup)
    assert {r.model for r in result.rows} == {"resnet56"}
    (failed,) = result.failed
    assert failed.model == "resnet56 concat-free" and "no Ghost module" in failed.error


@pytest.mark.parametrize(
    "argv,message",
    [
        (["train", "--compile"], "unrecognized arguments: --compile"),
        (["profile", "--checkpoint", "x.pt"], "unrecognized arguments: --checkpoint"),
        (["train", "--concat-free"], "unrecognized arguments: --concat-free"),
        (["profile", "--runtimes", "torch,openvino"], "bench profile covers the runtimes torch, ort, not openvino"),
        (["latency", "--channels-last"], "unrecognized arguments: --channels-last"),
        (["profile", "--device", "cuda"], "unrecognized arguments: --device"),
        (["--train-step"], "required: MODE"),  # the old spelling: no alias
        ([], "the following arguments are required: MODE"),
    ],
)
def test_bench_modes_refuse_options_they_do_not_have(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["bench", *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
