"""The command line, driven as a user would: real subprocesses for the entry point, `main()` otherwise."""

import json
import subprocess
import sys

import pytest

from ghostnet.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_console_entry_point_runs():
    r = subprocess.run([sys.executable, "-m", "ghostnet", "profile", "ghostnet_100"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "5,182,508" in r.stdout
    assert "141.15M" in r.stdout


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0 and "ghostnet_100" in out and "[ImageNet weights]" in out


def test_profile_json_per_layer(capsys):
    code, out, _ = run(
        capsys, "profile", "ghostnet", "--width", "1.3", "--json", "--per-layer", "--input-size", "224", "224"
    )
    d = json.loads(out)
    assert d["params"] == 7_358_820 and abs(d["macs"] / 227.0e6 - 1) < 0.005
    assert d["layers"][0]["name"] == "conv_stem"


def test_profile_per_layer_table(capsys):
    code, out, _ = run(
        capsys, "profile", "ghostnet_050", "--per-layer", "--num-classes", "10", "--input-size", "32", "32"
    )
    assert code == 0
    assert "blocks.8.3.ghost2.cheap_operation.0" in out and "classifier" in out


def test_profile_ghost_module(capsys):
    code, out, _ = run(capsys, "profile", "ghost_module", "--in-chans", "64", "--out-chans", "64", "--kernel-size", "3")
    assert code == 0 and "theoretical r_s" in out and "1.969" in out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["profile", "nope"], "unknown model 'nope'"),
        (["profile", "ghostnet_100", "--width", "1.1"], "fixed width"),
        (["profile", "ghostnet", "--width", "-1"], "expected a positive number"),
        (["profile", "ghostnet_100", "--input-size", "0", "5"], "expected a positive integer"),
        (["profile", "ghost_module", "--in-chans", "8"], "needs --in-chans and --out-chans"),
        (["profile", "ghost_module", "--in-chans", "8", "--out-chans", "8", "--dw-size", "4"], "dw_size"),
        (["profile", "ghost_module", "--in-chans", "8", "--out-chans", "8", "--stride", "3"], "stride"),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]


@pytest.mark.parametrize(
    "command", ["list", "classify eval", "classify predict", "detect eval", "detect predict", "face export"]
)
def test_every_command_describes_itself_and_shows_defaults(capsys, command):
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    out = capsys.readouterr().out
    usage, _, rest = out.partition("\n\n")
    assert rest.strip() and not rest.startswith(("positional arguments", "options")), "no description"
    if command in ("classify eval", "classify predict", "detect predict"):
        assert "(default: auto)" in " ".join(out.split())  # --device, with its default


def test_predict_on_a_missing_cuda_device_is_one_line(tmp_path, capsys):
    import torch

    from ghostnet import create_model, save_weights

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    save_weights(
        create_model("ghostnet_small_050", num_classes=10),
        tmp_path / "w.pth",
        "ghostnet_small_050",
        dict(num_classes=10),
    )
    with pytest.raises(SystemExit) as e:
        main(["classify", "predict", str(tmp_path), "--checkpoint", str(tmp_path / "w.pth"), "--device", "cuda"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "CUDA is not available" in err[0]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["bench", "latency", "--model", "nope"], "unknown model 'nope'"),
        (["bench", "train", "--model", "retinanet_ghostnet"], "retinanet_ghostnet is a detector"),
        (
            ["classify", "export", "lraspp_ghostnet_100"],
            "is a segment model: export a trained one with `ghostnet segment",
        ),
        (["classify", "export"], "give a registered MODEL, --checkpoint, or both"),
        (["list", "--task", "bogus"], "invalid choice: 'bogus'"),
        (["segment"], "required: MODE"),
    ],
)
def test_new_entry_points_refuse_bad_input_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and message in err[-1], err
    assert err[-1].startswith(("ghostnet ", "usage")) and sum(not line.startswith(" ") for line in err[1:]) <= 1


def test_every_task_registers_its_models_and_modes():
    from ghostnet import list_models
    from ghostnet.tasks import TASKS

    assert list(TASKS) == ["classify", "detect", "segment", "face"]
    assert set(list_models(task="detect")) == {"retinanet_ghostnet", "fasterrcnn_ghostnet"}
    assert {"lraspp_ghostnet_100", "deeplabv3_ghostnet_100"} <= set(TASKS["segment"].models())
    assert all(
        "export" in [m.name for m in spec.modes] and "train" in [m.name for m in spec.modes] for spec in TASKS.values()
    )
    with pytest.raises(ValueError, match="task must be one of"):
        list_models(task="bogus")
