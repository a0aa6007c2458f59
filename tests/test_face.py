"""Face recognition pieces: GhostFaceNet models, margin heads, the identity readers, the verification protocol."""

import hashlib
import http.server
import math
import pickle
import tarfile
import threading

import numpy as np
import pytest
import torch
from torch import nn

from conftest import write_identity_folder, write_verification_bin
from ghostnet import create_model, save_weights
from ghostnet.data import DatasetError, faces
from ghostnet.data.faces import (
    decode_pair_images,
    identity_files,
    load_identity_folder,
    read_pairs,
    read_verification_bin,
)
from ghostnet.engine.verification import roc_curve, tar_at_far, ten_fold_accuracy, verification_report
from ghostnet.nn.margin import ArcFace, CosFace, SoftmaxHead, create_margin_head

# ---------------------------------------------------------------- models


def test_ghostfacenet_at_112_gives_a_512_d_embedding_from_a_7x7_map():
    model = create_model("ghostfacenet_v1_100").eval()
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 960, 7, 7)  # stem stride 1: output stride 16
        assert model(x).shape == (2, 512)
    assert model.gdc.dw.kernel_size == (7, 7) and model.gdc.dw.groups == 960  # the GDC covers the whole map
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 41 and all(torch.all(p.weight == 0.25) for p in prelus)
    assert model.act1.num_parameters == 16  # one slope per channel


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_width_embedding_size_stem_stride_and_relu_options(version):
    model = create_model(
        f"ghostfacenet_{version}", width=0.25, embedding_size=128, input_size=64, stem_stride=2, prelu=False
    )
    x = torch.randn(2, 3, 64, 64)
    feats = model.eval().forward_features(x)
    assert feats.shape[-2:] == (2, 2) and model.gdc.dw.kernel_size == (2, 2)  # 64 / 32
    assert torch.equal(model.gdc(feats), model(x)) and model(x).shape == (2, 128)
    assert not any(isinstance(m, nn.PReLU) for m in model.modules())
    small = create_model(f"ghostfacenet_{version}", width=0.25, input_size=32, in_chans=1, embedding_size=8)
    assert small.eval()(torch.randn(3, 1, 32, 32)).shape == (3, 8)


def test_model_arguments_are_checked():
    with pytest.raises(ValueError, match="disagree"):
        create_model("ghostfacenet_v1", num_classes=10, embedding_size=20)
    with pytest.raises(ValueError, match="stem_stride"):
        create_model("ghostfacenet_v1", stem_stride=4)
    with pytest.raises(ValueError, match="fix their width"):
        create_model("ghostfacenet_v1_100", width=0.5)
    assert create_model("ghostfacenet_v1", width=0.25, num_classes=10).eval()(torch.randn(1, 3, 32, 32)).shape == (
        1,
        10,
    )


def test_a_classification_checkpoint_initialises_the_backbone(tmp_path):
    classifier = create_model("ghostnet_050")
    save_weights(classifier, tmp_path / "cls.pth")
    face = create_model("ghostfacenet_v1", width=0.5, checkpoint_path=str(tmp_path / "cls.pth"))
    own = face.state_dict()
    for k, v in classifier.state_dict().items():
        if k.startswith(("conv_stem", "bn1", "blocks")):
            assert torch.equal(own[k], v), k
    assert torch.all(face.blocks[9][0].act1.weight == 0.25)  # PReLU slopes keep their initial value


def test_export_to_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    from ghostnet.deploy import export_model, fuse_bn

    model = create_model("ghostfacenet_v1", width=0.25, input_size=32, embedding_size=32).eval()
    r = export_model(fuse_bn(model), tmp_path / "f.onnx", "onnx", (32, 32), dynamic_batch=True)
    assert r.max_abs_diff <= 1e-4 and r.output_names == ["embedding"]


# ---------------------------------------------------------------- margin heads


def _at_angle(degrees):
    t = math.radians(degrees)
    return torch.tensor([[math.cos(t), math.sin(t)]])  # angle `degrees` to class 0's centre (1, 0)


def _head(cls, **kw):
    head = cls(2, 2, scale=10.0, **kw)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.5]]))  # normalised inside: unit axes
    return head


def test_arcface_adds_the_angle_margin_to_the_target_only():
    head = _head(ArcFace, margin=0.5)
    out = head(_at_angle(60), torch.tensor([0]))
    assert out[0, 0].item() == pytest.approx(10 * math.cos(math.radians(60) + 0.5), abs=1e-5)
    assert out[0, 1].item() == pytest.approx(10 * math.cos(math.radians(30)), abs=1e-5)  # other class: plain cosine
    plain = head(_at_angle(60))
    assert plain[0, 0].item() == pytest.approx(10 * math.cos(math.radians(60)), abs=1e-5)


def test_arcface_threshold_and_easy_margin_branches():
    # theta + m past pi: insightface's form gives cos(theta) - m sin(m), which keeps decreasing in theta
    out = _head(ArcFace, margin=0.5)(_at_angle(170), torch.tensor([0]))
    assert out[0, 0].item() == pytest.approx(10 * (math.cos(math.radians(170)) - 0.5 * math.sin(0.5)), abs=1e-5)
    easy = _head(ArcFace, margin=0.5, easy_margin=True)
    assert easy(_at_angle(100), torch.tensor([0]))[0, 0].item() == pytest.approx(
        10 * math.cos(math.radians(100)), abs=1e-5
    )  # cos < 0: no margin
    assert easy(_at_angle(60), torch.tensor([0]))[0, 0].item() == pytest.approx(
        10 * math.cos(math.radians(60) + 0.5), abs=1e-5
    )


def test_cosface_and_softmax_heads():
    out = _head(CosFace, margin=0.35)(_at_angle(60), torch.tensor([0]))
    assert out[0, 0].item() == pytest.approx(10 * (0.5 - 0.35), abs=1e-5)
    soft = SoftmaxHead(2, 3)
    x = torch.randn(4, 2)
    assert torch.allclose(soft(x, torch.zeros(4, dtype=torch.long)), soft.fc(x))
    with pytest.raises(ValueError, match="unknown margin head"):
        create_margin_head("sphereface", 2, 3)


def test_gradients_stay_finite_where_the_embedding_is_its_class_centre():
    head = _head(ArcFace, margin=0.5)
    x = torch.tensor([[1.0, 0.0]], requires_grad=True)  # cos = 1: sqrt(1 - cos^2) would have an infinite slope
    head(x, torch.tensor([0])).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(head.weight.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head(x.bfloat16(), torch.tensor([0])).dtype == torch.float32


# ---------------------------------------------------------------- identity data


def test_identity_folder_in_lfw_naming(tmp_path):
    root = write_identity_folder(tmp_path / "f", identities=3, per_identity=2, size=20)
    data, names = load_identity_folder(root, image_size=16)
    assert names == ["Person_A", "Person_B", "Person_C"]
    assert data.images.shape == (6, 3, 16, 16) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    (root / "Person_D").mkdir()
    with pytest.raises(DatasetError, match="identity 'Person_D' has no images"):
        identity_files(root)


def test_pairs_txt_same_and_different_lines(tmp_path):
    root = write_identity_folder(tmp_path / "f", identities=3, per_identity=2, size=20)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text(
        "1\t3\nPerson_A\t1\t2\nPerson_A\t1\tPerson_B\t2\nPerson_C/Person_C_0001.jpg Person_B/Person_B_0001.jpg 0\n"
    )
    got = read_pairs(pairs, root)
    assert got == [
        (root / "Person_A/Person_A_0001.jpg", root / "Person_A/Person_A_0002.jpg", True),
        (root / "Person_A/Person_A_0001.jpg", root / "Person_B/Person_B_0002.jpg", False),
        (root / "Person_C/Person_C_0001.jpg", root / "Person_B/Person_B_0001.jpg", False),
    ]
    pairs.write_text("Person_A\t1\t3\n")
    with pytest.raises(DatasetError, match="pairs.txt:1 names an image that is not there: .*Person_A_0003.jpg"):
        read_pairs(pairs, root)
    pairs.write_text("Person_A 1\n")
    with pytest.raises(DatasetError, match="pairs.txt:1: expected"):
        read_pairs(pairs, root)


def test_verification_bin_in_insightface_format(tmp_path):
    path = write_verification_bin(tmp_path / "lfw.bin", pairs=6, size=20)
    bins, issame = read_verification_bin(path)
    assert len(bins) == 12 and issame == [True, False] * 3
    pl = decode_pair_images(path, image_size=16)
    assert pl.images.images.shape == (12, 3, 16, 16) and pl.issame.tolist() == issame


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):  # unpickling this would write a file
        from pathlib import Path

        return (Path.write_text, (Path(self.target), "ran"))


def test_verification_bin_refuses_pickled_code_without_running_it(tmp_path):
    target = tmp_path / "pwned.txt"
    bad = tmp_path / "bad.bin"
    bad.write_bytes(pickle.dumps(([b"x", _Payload(str(target))], [True])))
    with pytest.raises(DatasetError, match="refused: the file asks for pathlib"):
        read_verification_bin(bad)
    assert not target.exists()
    arrays = tmp_path / "numpy.bin"
    arrays.write_bytes(pickle.dumps(([b"a", b"b"], np.array([True]))))
    with pytest.raises(DatasetError, match="refused: the file asks for numpy"):
        read_verification_bin(arrays)
    odd = tmp_path / "odd.bin"
    odd.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(DatasetError, match="3 images for 1 pairs"):
        read_verification_bin(odd)


# ---------------------------------------------------------------- the protocol


def test_ten_fold_accuracy_on_a_hand_checked_case():
    # 20 pairs, folds of 2. Same pairs score 0.9, different ones 0.1, except one different pair at 0.95 in fold 0.
    scores = np.array([0.95, 0.9] + [0.1, 0.9] * 9)
    issame = np.array([False, True] + [False, True] * 9)
    r = ten_fold_accuracy(scores, issame)
    # every fold's threshold is 0.1 (the lowest best one); only fold 0, holding the outlier, gets 1 of 2 wrong
    assert r["fold_threshold"] == [0.1] * 10
    assert r["fold_accuracy"] == [0.5] + [1.0] * 9
    assert r["accuracy"] == pytest.approx(0.95) and r["std"] == pytest.approx(0.15)
    t = tar_at_far(scores, issame, 0.1)  # one of ten impostors may pass: threshold 0.1, every genuine pair above
    assert (t["tar"], t["far"], t["threshold"]) == (1.0, 0.1, 0.1)
    t = tar_at_far(scores, issame, 0.01)  # no impostor may pass: threshold at the outlier, 0.95
    assert (t["tar"], t["far"], t["threshold"], t["far_resolution"]) == (0.0, 0.0, 0.95, 0.1)
    far, tar, auc = roc_curve(scores, issame)
    assert auc == pytest.approx(0.9) and far[0] == tar[0] == 0 and far[-1] == tar[-1] == 1
    rep = verification_report(scores, issame, (0.1,))
    assert rep["accuracy"] == pytest.approx(95.0) and rep["tar_at_far"]["0.1"]["tar"] == 1.0


# ---------------------------------------------------------------- download


def _serve(folder):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_download_lfw_from_a_local_server(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    write_identity_folder(site / "lfw", identities=2, per_identity=2, size=16)
    (site / "pairs.txt").write_text("1\t1\nPerson_A\t1\t2\n")
    with tarfile.open(site / "lfw.tgz", "w:gz") as tar:
        tar.add(site / "lfw", arcname="lfw")
    md5 = {n: hashlib.md5((site / n).read_bytes()).hexdigest() for n in ("pairs.txt", "lfw.tgz")}
    server = _serve(site)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        monkeypatch.setitem(faces.LFW_FILES, "pairs.txt", md5["pairs.txt"])
        monkeypatch.setitem(faces.LFW_FILES, "lfw.tgz", md5["lfw.tgz"])
        pairs, images = faces.download_lfw(tmp_path / "data", base_url=url)
        assert read_pairs(pairs, images)[0][2] is True
        monkeypatch.setitem(faces.LFW_FILES, "pairs.txt", "0" * 32)
        with pytest.raises(DatasetError, match="checksum mismatch"):
            faces.download_lfw(tmp_path / "other", base_url=url)
    finally:
        server.shutdown()
