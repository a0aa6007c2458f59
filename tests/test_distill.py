"""Knowledge distillation (GhostNetV3's recipe): the loss, the checks on the teacher, a CLI run, exact resume."""

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from conftest import write_cifar
from ghostnet import create_model
from ghostnet.cli import main
from ghostnet.models.checkpoint import read_checkpoint
from ghostnet.tasks.classify.config import TrainConfig, load_recipe
from ghostnet.tasks.classify.task import ClassificationTask, distillation_loss


@pytest.fixture(autouse=True)
def _restore_deterministic_mode():
    """--deterministic runs in this process switch torch's deterministic mode on; later tests get it back as it was."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


# ---------------------------------------------------------------- the loss


def _hand_kd(student, teacher, t):
    """T^2 * mean over rows of -sum_c softmax(teacher/T)_c * log_softmax(student/T)_c, in plain Python floats."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p = [math.exp(v / t) for v in t_row]
        p = [v / sum(p) for v in p]
        log_z = math.log(sum(math.exp(v / t) for v in s_row))
        total += -sum(pc * (sv / t - log_z) for pc, sv in zip(p, s_row))
    return t * t * total / len(student)


@pytest.mark.parametrize("t", [1.0, 2.0, 4.0])
def test_distillation_loss_matches_a_hand_computation(t):
    student = [[1.0, 2.0, 0.5], [-1.0, 0.0, 3.0]]
    teacher = [[0.0, 1.0, 3.0], [2.0, 2.0, -1.0]]
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), t).item()
    assert got == pytest.approx(_hand_kd(student, teacher, t), rel=1e-6)
    # Row 1 at T=1 written out: p = softmax(0, 1, 3), log q = (1, 2, 0.5) - log(e + e^2 + e^0.5).
    if t == 1.0:
        p = [math.exp(v) / (1 + math.e + math.e**3) for v in (0.0, 1.0, 3.0)]
        row1 = -sum(pc * (sv - math.log(math.e + math.e**2 + math.e**0.5)) for pc, sv in zip(p, (1.0, 2.0, 0.5)))
        assert _hand_kd(student[:1], teacher[:1], 1.0) == pytest.approx(row1)


def test_distillation_gradient_is_kl_divergence_gradient():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    (g,) = torch.autograd.grad(distillation_loss(s, t, 3.0), s)
    kl = nn.functional.kl_div(
        nn.functional.log_softmax(s / 3, 1), nn.functional.softmax(t / 3, 1), reduction="batchmean"
    )
    (g_kl,) = torch.autograd.grad(kl * 9, s)
    assert torch.allclose(g, g_kl, atol=1e-6)


def test_the_training_step_adds_the_weighted_term_to_the_smoothed_cross_entropy():
    torch.manual_seed(0)
    task = ClassificationTask()
    task.cfg = TrainConfig(
        teacher="resnet56", teacher_checkpoint="t.pth", kd_weight=0.7, kd_temperature=2.0, label_smoothing=0.1
    )
    task.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    task.teacher = nn.Linear(6, 4).eval().requires_grad_(False)
    student = nn.Linear(6, 4)
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 0])
    loss, sums = task.step(student, (x, y))
    s, t = student(x).tolist(), task.teacher(x).tolist()
    ce = nn.functional.cross_entropy(student(x), y, label_smoothing=0.1).item()
    assert loss.item() == pytest.approx(ce + 0.7 * _hand_kd(s, t, 2.0), rel=1e-6)
    assert (
        sums[0] == 5 and sums[1] == pytest.approx(loss.item() * 5) and sums[3] == pytest.approx(5 * _hand_kd(s, t, 2))
    )
    loss.backward()
    assert all(p.grad is None for p in task.teacher.parameters())  # the teacher is frozen
    assert task.train_row(sums)["train_kd"] == pytest.approx(_hand_kd(s, t, 2.0))


# ---------------------------------------------------------------- the config and the checks on the teacher


@pytest.mark.parametrize(
    "values, message",
    [
        ({"teacher": "resnet56"}, "teacher needs teacher_checkpoint: a randomly initialised teacher"),
        ({"teacher_checkpoint": "t.pth"}, "teacher_checkpoint needs teacher"),
        ({"teacher": "resnet5", "teacher_checkpoint": "t.pth"}, "teacher: unknown model 'resnet5'"),
        ({"kd_temperature": 0}, "kd_temperature must be > 0"),
        ({"kd_weight": -1}, "kd_weight must be >= 0"),
    ],
)
def test_config_refuses_a_teacher_it_cannot_use(values, message):
    with pytest.raises(ValueError, match=message):
        load_recipe("digits", values)


def _digits_argv(tmp_path, name, *extra):
    return [
        "classify",
        "train",
        *("--config", "digits", "--image-size", "16", "--batch-size", "16", "--eval-batch-size", "512"),
        *("--epochs", "1", "--max-steps", "2", "--no-progress", "--deterministic", "--seed", "1"),
        *("--output-dir", str(tmp_path / "runs"), "--name", name, *extra),
    ]


def test_a_teacher_for_other_classes_or_channels_is_refused_in_one_line(tmp_path, capsys):
    sd = tmp_path / "five_classes.pth"
    torch.save(create_model("ghostnet_small_050", num_classes=5).state_dict(), sd)  # a bare state dict, 3 channels
    teacher = ["--teacher", "ghostnet_small_050", "--teacher-checkpoint", str(sd)]
    for extra, message in (
        ([], "does not take the student's 1x16x16 input (in_chans 3 replicates grayscale data): Given groups=1"),
        (["--in-chans", "3"], f"teacher ghostnet_small_050 ({sd}) predicts 5 classes but digits has 10"),
    ):
        with pytest.raises(SystemExit) as e:
            main(_digits_argv(tmp_path, "r", *teacher, *extra))
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "runs" / "r").exists()  # refused before a run folder was made


def test_cli_distillation_on_digits(tmp_path, capsys):
    """A teacher checkpoint of ours teaches a GhostNetV3 student; with kd_weight 0 the student is bit-identical to a
    run without a teacher (building and running the teacher draws no random numbers of the run's)."""
    assert main(_digits_argv(tmp_path, "teacher", "--max-steps", "4")) == 0
    teacher_ckpt = tmp_path / "runs" / "teacher" / "last.pth"
    kd = ["--teacher", "ghostnet_small_050", "--teacher-checkpoint", str(teacher_ckpt)]
    student = ["--model", "ghostnetv3", "--width", "0.5"]
    assert main(_digits_argv(tmp_path, "kd", *student, *kd, "--kd-temperature", "2")) == 0
    out = capsys.readouterr().out
    assert "distilling from ghostnet_small_050" in out and "kd_temperature 2" in out and "train_kd" in out
    row = json.loads((tmp_path / "runs" / "kd" / "log.jsonl").read_text())
    assert row["train_kd"] > 0 and row["train_loss"] > row["train_kd"]
    ckpt = read_checkpoint(tmp_path / "runs" / "kd" / "last.pth")
    assert ckpt["model_name"] == "ghostnetv3" and ckpt["config"]["teacher"] == "ghostnet_small_050"
    assert set(ckpt["model"]) == set(create_model("ghostnetv3", width=0.5, num_classes=10, in_chans=1).state_dict())

    assert main(_digits_argv(tmp_path, "plain", *student)) == 0
    assert main(_digits_argv(tmp_path, "kd0", *student, *kd, "--kd-weight", "0")) == 0
    a = read_checkpoint(tmp_path / "runs" / "plain" / "last.pth")["model"]
    b = read_checkpoint(tmp_path / "runs" / "kd0" / "last.pth")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- exact resume of a distilled run


def test_sigkill_then_resume_of_a_distilled_run_is_bit_identical(tmp_path, capsys):
    """As tests/test_train.py's SIGKILL test, with a teacher: killed once mid-run, resumed, equal to a straight run.
    Only the killed run is a separate process; the straight run and the resume run in this one (start-up is most of
    the time of such small runs)."""
    write_cifar(tmp_path / "data", n_train=64, n_test=16)
    teacher = tmp_path / "teacher.pth"  # a released-style state dict: its weights need not be good, only fixed
    torch.save(create_model("ghostnet_small_050", num_classes=10).state_dict(), teacher)
    data = ["--dataset", "cifar10", "--data-dir", str(tmp_path / "data"), "--image-size", "16"]
    schedule = ["--model", "ghostnet_small_050", "--epochs", "2", "--batch-size", "16", "--save-every-steps", "2"]
    kd = ["--teacher", "ghostnet_small_050", "--teacher-checkpoint", str(teacher), "--kd-temperature", "2"]
    common = [
        "classify",
        "train",
        *data,
        *schedule,
        *kd,
        "--deterministic",
        "--seed",
        "7",
        "--no-progress",
        "--ema-decay",
        "0.9",
    ]
    common += ["--output-dir", str(tmp_path / "runs")]
    assert main([*common, "--name", "straight"]) == 0

    last = tmp_path / "runs" / "broken" / "last.pth"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ghostnet", *common, "--name", "broken"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not last.exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert read_checkpoint(last)["step"] < 8
    capsys.readouterr()
    assert main(["classify", "train", "--output-dir", str(tmp_path / "runs"), "--name", "broken", "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out

    ca, cb = read_checkpoint(tmp_path / "runs" / "straight" / "last.pth"), read_checkpoint(last)
    for key in ("model", "model_ema"):
        different = [k for k in ca[key] if not torch.equal(ca[key][k], cb[key][k])]
        assert not different, f"{key}: {len(different)} tensors differ, e.g. {different[:3]}"
    logs = [(tmp_path / "runs" / n / "log.jsonl").read_text().splitlines() for n in ("straight", "broken")]
    rows = [[json.loads(r) for r in log] for log in logs]
    timing = ("epoch_time_s", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in timing} for r in rows[0]] == [
        {k: v for k, v in r.items() if k not in timing} for r in rows[1]
    ]
    assert all("train_kd" in r for r in rows[0])


def test_the_ghostnetv3_recipe_loads_with_the_papers_settings(tmp_path):
    cfg = load_recipe("ghostnetv3")
    assert (cfg.model, cfg.dataset, cfg.epochs, cfg.batch_size) == ("ghostnetv3_100", "imagefolder", 600, 1024)
    assert (cfg.optimizer, cfg.lr, cfg.schedule, cfg.warmup_epochs) == ("sgd", 0.05, "cosine", 3)
    assert (cfg.weight_decay, cfg.label_smoothing, cfg.ema_decay) == (2e-5, 0.1, 0.9998)
    assert (cfg.kd_temperature, cfg.kd_weight, cfg.teacher) == (1.0, 1.0, None)  # the teacher comes from the CLI
    torch.save({}, tmp_path / "t.pth")
    with_teacher = load_recipe(
        "ghostnetv3", {"teacher": "ghostnetv3_160", "teacher_checkpoint": str(tmp_path / "t.pth")}
    )
    assert with_teacher.teacher == "ghostnetv3_160"
    with pytest.raises(ValueError, match="teacher needs teacher_checkpoint"):
        load_recipe("ghostnetv3", {"teacher": "ghostnetv3_160"})
