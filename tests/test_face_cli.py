"""The face commands end to end on generated identity data: face-train (with a resume after a kill), face-eval,
embed, verify, export, and the bad inputs that must be one line and exit code 2."""

import json
import pickle

import numpy as np
import pytest
import torch

from conftest import write_identity_folder, write_verification_bin
from ghostnet.cli import main
from ghostnet.models.checkpoint import read_checkpoint
from ghostnet.tasks.face.task import FaceTask

TINY = [
    "--image-size", "32", "--width", "0.25", "--embedding-size", "16", "--batch-size", "8", "--eval-batch-size", "64",
    "--lr", "0.05", "--scale", "16", "--num-pairs", "40", "--holdout-identities", "0.25", "--num-workers", "0",
    "--no-progress", "--deterministic",
]  # fmt: skip


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # bad input: argparse's exit with code 2
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _train(capsys, faces, runs, name, *extra):
    return run(
        capsys, "face", "train", "--data-dir", str(faces), "--output-dir", str(runs), "--name", name, *TINY, *extra
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One finished tiny run (ArcFace, 8 identities: 6 trained, 2 held out for the pairs)."""
    root = tmp_path_factory.mktemp("face")
    faces = write_identity_folder(root / "faces", identities=8, per_identity=4)
    assert main(["face", "train", "--data-dir", str(faces), "--output-dir", str(root / "runs"), "--name", "r", *TINY,
                 "--epochs", "2"]) == 0  # fmt: skip
    return root, faces, root / "runs" / "r"


def test_face_train_writes_a_run_whose_model_is_the_embedding_alone(trained):
    _, _, run_dir = trained
    assert {"last.pth", "best.pth", "log.jsonl", "summary.json", "curves.png", "config.yaml"} <= {
        p.name for p in run_dir.iterdir()
    }
    ckpt = read_checkpoint(run_dir / "best.pth")
    assert ckpt["data"]["task"] == "face" and len(ckpt["data"]["identities"]) == 6
    assert ckpt["loss_head"]["weight"].shape == (6, 16)  # the class centres: in the checkpoint ...
    assert not any(k.startswith("loss_head") or v.shape == (6, 16) for k, v in ckpt["model"].items())  # ... not here
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(0 <= r["eval_acc"] <= 100 and "eval_tar_far_0.001" in r for r in rows)
    assert np.isfinite(ckpt["data"]["threshold"])


def test_face_eval_on_its_own_pairs_a_pairs_txt_and_a_bin(trained, tmp_path, capsys):
    root, faces, run_dir = trained
    ckpt = str(run_dir / "best.pth")
    code, out, _ = run(capsys, "face", "eval", ckpt, "--json")
    r = json.loads(out)
    assert code == 0 and r["pairs"] == 40 and len(r["fold_accuracy"]) == 10
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert r["accuracy"] == pytest.approx(max(row["eval_acc"] for row in log))  # best.pth: the best epoch
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("1\t20\n" + "Person_G\t1\t2\nPerson_G\t3\tPerson_H\t4\n" * 10)
    code, out, _ = run(
        capsys, "face", "eval", ckpt, "--pairs", str(pairs), "--root", str(faces), "--roc", str(tmp_path / "roc.png")
    )
    assert (
        code == 0 and "10-fold accuracy" in out and "TAR@FAR=0.001" in out and (tmp_path / "roc.png").stat().st_size > 0
    )
    code, _, err = run(capsys, "face", "eval", ckpt, "--bin", str(write_verification_bin(tmp_path / "lfw.bin", 20)),
                       "--roc", str(tmp_path / "roc.png"))  # fmt: skip
    assert code == 2 and "exists; pass --overwrite" in err
    code, out, _ = run(capsys, "face", "eval", ckpt, ckpt, "--labels", "a", "b", "--bin", str(tmp_path / "lfw.bin"),
                       "--roc", str(tmp_path / "roc.png"), "--overwrite", "--json")  # fmt: skip
    both = json.loads(out)
    assert code == 0 and len(both) == 2 and both[0]["accuracy"] == both[1]["accuracy"] and both[0]["pairs"] == 20


def test_embed_verify_and_export(trained, tmp_path, capsys):
    _, faces, run_dir = trained
    ckpt = str(run_dir / "best.pth")
    out_file = tmp_path / "emb.npz"
    code, out, _ = run(
        capsys, "face", "embed", str(faces / "Person_A"), "--checkpoint", ckpt, "--output", str(out_file)
    )
    z = np.load(out_file)
    assert code == 0 and z["embeddings"].shape == (4, 16) and len(z["paths"]) == 4
    assert np.allclose(np.linalg.norm(z["embeddings"], axis=1), 1, atol=1e-5)
    code, _, err = run(
        capsys, "face", "embed", str(faces / "Person_A"), "--checkpoint", ckpt, "--output", str(out_file)
    )
    assert code == 2 and "--overwrite" in err
    a, b = faces / "Person_A" / "Person_A_0001.jpg", faces / "Person_H" / "Person_H_0001.jpg"
    code, out, _ = run(capsys, "face", "verify", str(a), str(a), "--checkpoint", ckpt, "--json")
    same = json.loads(out)
    assert code == 0 and same["same"] and same["similarity"] == pytest.approx(1.0, abs=1e-5)
    code, out, _ = run(capsys, "face", "verify", str(a), str(b), "--checkpoint", ckpt, "--threshold", "0.9999")
    assert code == 0 and out.startswith("different identities: cosine similarity")
    pytest.importorskip("onnxruntime")
    import onnx

    code, out, _ = run(capsys, "face", "export", "--checkpoint", ckpt, "--output", str(tmp_path / "f.onnx"), "--fuse")
    assert code == 0 and "max abs diff" in out
    graph = onnx.load(str(tmp_path / "f.onnx")).graph
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == [1, 16]
    assert not [i.name for i in graph.initializer if "loss_head" in i.name or list(i.dims) == [6, 16]]


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, capsys, monkeypatch):
    faces = write_identity_folder(tmp_path / "faces", identities=8, per_identity=4)
    # 6 training identities x 4 images: 3 steps an epoch; 16 px keeps it quick
    args = ("--epochs", "2", "--save-every-steps", "2", "--image-size", "16", "--num-pairs", "20")
    assert _train(capsys, faces, tmp_path / "runs", "whole", *args)[0] == 0
    step = FaceTask.step
    calls = {"n": 0}

    def dying_step(self, net, batch):
        calls["n"] += 1
        if calls["n"] == 5:  # in epoch 2, after the checkpoint of step 4
            raise KeyboardInterrupt
        return step(self, net, batch)

    monkeypatch.setattr(FaceTask, "step", dying_step)
    assert _train(capsys, faces, tmp_path / "runs", "killed", *args)[0] == 130
    monkeypatch.setattr(FaceTask, "step", step)
    code, out, _ = run(capsys, "face", "train", "--output-dir", str(tmp_path / "runs"), "--name", "killed", "--resume")
    assert code == 0 and "resuming" in out
    whole, resumed = (read_checkpoint(tmp_path / "runs" / n / "last.pth") for n in ("whole", "killed"))
    for part in ("model", "loss_head"):
        assert all(torch.equal(whole[part][k], resumed[part][k]) for k in whole[part]), part


@pytest.mark.parametrize(
    "case, message",
    [
        ("one_image", "has 2 or more images"),
        ("empty", "identity 'Person_Z' has no images"),
        ("missing_pair_image", "names an image that is not there"),
        ("malicious_bin", "refused: the file asks for"),
    ],
)
def test_bad_data_is_one_line_and_exit_code_2(tmp_path, capsys, case, message):
    faces = write_identity_folder(tmp_path / "faces", identities=6, per_identity=3, size=16)
    extra = []
    if case == "one_image":  # no identity has two images: no same-identity pair can be built
        for f in faces.glob("*/*_000[23].jpg"):
            f.unlink()
    elif case == "empty":
        (faces / "Person_Z").mkdir()
    elif case == "missing_pair_image":
        (tmp_path / "pairs.txt").write_text("Person_A\t1\t9\n")
        extra = ["--val-pairs", str(tmp_path / "pairs.txt")]
    else:
        target = tmp_path / "pwned"
        (tmp_path / "x.bin").write_bytes(pickle.dumps(([b"a", _Payload(str(target))], [True])))
        extra = ["--val-bin", str(tmp_path / "x.bin")]
    code, _, err = _train(capsys, faces, tmp_path / "runs", "bad", "--epochs", "1", *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pwned").exists()


def test_training_identities_with_one_image_are_left_out(tmp_path, capsys):
    faces = write_identity_folder(tmp_path / "faces", identities=9, per_identity=4, size=16)
    for f in sorted((faces / "Person_A").iterdir())[1:]:
        f.unlink()
    with pytest.warns(UserWarning, match="1 of 9 identities .* left out"):
        code, _, err = _train(capsys, faces, tmp_path / "runs", "r", "--epochs", "1", "--image-size", "16")
    assert code == 0, err
    ckpt = read_checkpoint(tmp_path / "runs" / "r" / "last.pth")
    assert "Person_A" not in ckpt["data"]["identities"] and len(ckpt["data"]["identities"]) == 6  # 8 less 2 held out


def test_face_eval_and_embed_refuse_bad_options_before_any_work(trained, tmp_path, capsys, monkeypatch):
    import ghostnet.tasks.face.task as face_engine

    root, faces, run_dir = trained
    ckpt = str(run_dir / "best.pth")

    def no_work(*a, **k):
        raise AssertionError("reached the model")

    monkeypatch.setattr(face_engine, "load_face_model", no_work)
    monkeypatch.setattr(face_engine, "evaluate_face_checkpoint", no_work)
    for argv, message in (
        (["face", "eval", ckpt, "--root", str(faces)], "--root names the images of --pairs"),
        (["face", "eval", ckpt, "--far", "-0.1"], "--far takes fractions of impostor pairs in (0, 1]"),
        (["face", "eval", ckpt, "--far", "1e-3", "2"], "got 2"),
        (["face", "embed", str(faces), "--checkpoint", ckpt, "--output", str(tmp_path / "e.txt")], "must end in .npz"),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_face_checkpoint_is_read_once(trained, monkeypatch):
    import ghostnet.models.checkpoint as checkpoint
    from ghostnet.tasks.face.task import load_face_model

    reads = []
    real = checkpoint.read_checkpoint
    monkeypatch.setattr(checkpoint, "read_checkpoint", lambda p: reads.append(p) or real(p))
    model, prep, data, config = load_face_model(trained[2] / "best.pth")
    assert len(reads) == 1 and model.embedding_size == 16 and data["task"] == "face"
    assert prep.image_size == 32 and prep.mean == (0.5, 0.5, 0.5) and not prep.center_crop
    assert config["augment"] == "flip"  # flips only by default: aligned faces are not shifted


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.write_text, (Path(self.target), "ran"))


def test_an_embedding_size_that_does_not_match_the_checkpoint(trained, tmp_path, capsys):
    root, faces, run_dir = trained
    ckpt = str(run_dir / "best.pth")
    a = str(faces / "Person_A" / "Person_A_0001.jpg")
    for argv in (
        ["face", "embed", a, "--checkpoint", ckpt, "--output", str(tmp_path / "e.npz"), "--embedding-size", "32"],
        ["face", "verify", a, a, "--checkpoint", ckpt, "--embedding-size", "32"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "makes 16-d embeddings, not 32-d" in err and len(err.strip().splitlines()) == 1
    code, _, err = _train(capsys, faces, tmp_path / "runs", "ft", "--epochs", "1", "--init-checkpoint", ckpt,
                          "--embedding-size", "32")  # fmt: skip
    assert code == 2 and "shape mismatch" in err and len(err.strip().splitlines()) == 1


def test_two_process_ddp_trains_the_margin_head_with_the_model(tmp_path):
    import os
    import subprocess
    import sys

    faces = write_identity_folder(tmp_path / "faces", identities=8, per_identity=4)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541", "-m", "ghostnet",
           "face", "train", "--data-dir", str(faces), "--output-dir", str(tmp_path / "runs"), "--name", "ddp", *TINY,
           "--epochs", "1"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "runs" / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["ranks_agree"] is True and summary["steps"] == 3  # 24 images / 8
    ckpt = read_checkpoint(tmp_path / "runs" / "ddp" / "last.pth")
    assert ckpt["loss_head"]["weight"].shape == (6, 16) and "module.model.conv_stem.weight" not in ckpt["model"]
