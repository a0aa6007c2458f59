"""Face recognition pieces: GhostFaceNet models, margin heads, the identity readers, the verification protocol."""

import hashlib
import http.server
import io
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
from ghostnet.data import DatasetError
from ghostnet.data.download import extract_tar
from ghostnet.tasks.face import data as faces
from ghostnet.tasks.face.data import (
    decode_pair_images,
    identity_files,
    load_identity_folder,
    read_pairs,
    read_verification_bin,
)
from ghostnet.tasks.face.loaders import IdentityFileLoader
from ghostnet.tasks.face.margin import ArcFace, CosFace, SoftmaxHead, create_margin_head
from ghostnet.tasks.face.verification import roc_curve, tar_at_far, ten_fold_accuracy, verification_report

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


def test_tied_scores_give_one_roc_point_per_score_whatever_the_order():
    issame = np.array([True] * 10 + [False] * 10)
    for order in (issame, issame[::-1]):  # positives first, then last
        far, tar, auc = roc_curve(np.full(20, 0.3), order)
        assert auc == pytest.approx(0.5) and far.tolist() == [0, 1] and tar.tolist() == [0, 1]
    scores = np.array([0.9, 0.5, 0.5, 0.1])  # a tie across one same and one different pair: a diagonal step
    far, tar, auc = roc_curve(scores, np.array([True, False, True, False]))
    assert far.tolist() == [0, 0, 0.5, 1] and tar.tolist() == [0, 0.5, 1, 1] and auc == pytest.approx(0.875)


def test_roc_area_without_numpy_2s_trapezoid(monkeypatch):
    monkeypatch.delattr(np, "trapezoid", raising=False)
    monkeypatch.delattr(np, "trapz", raising=False)
    assert roc_curve(np.array([0.9, 0.8, 0.2, 0.1]), np.array([True, True, False, False]))[2] == pytest.approx(1.0)


@pytest.mark.parametrize("far", [-0.1, 0.0, 1.5, math.nan])
def test_a_far_outside_0_1_is_refused(far):
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        tar_at_far(np.array([0.9, 0.1]), np.array([True, False]), far)
    assert tar_at_far(np.array([0.9, 0.1]), np.array([True, False]), 1.0)["tar"] == 1.0


# ---------------------------------------------------------------- identity folders, read per batch


def test_training_identities_with_one_image_are_left_out_with_a_warning(tmp_path):
    root = write_identity_folder(tmp_path / "ids", identities=4, per_identity=3, size=16)
    for name in ("Person_B", "Person_D"):
        for f in sorted((root / name).iterdir())[1:]:
            f.unlink()
    with pytest.warns(UserWarning, match="2 of 4 identities .* fewer than 2 images and are left out"):
        names, files = identity_files(root)
    assert names == ["Person_A", "Person_C"] and [len(f) for f in files] == [3, 3]
    for name in ("Person_A", "Person_C"):
        for f in sorted((root / name).iterdir())[1:]:
            f.unlink()
    with pytest.raises(DatasetError, match="no identity in .* has 2 or more images"):
        identity_files(root)  # nothing to build a same-identity pair from


def _tar_with(tmp_path, member):
    path = tmp_path / "a.tgz"
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        if member == "lfw/link":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
        else:
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


@pytest.mark.parametrize("filtered", [True, False])
def test_unpacking_refuses_members_outside_the_folder(tmp_path, monkeypatch, filtered):
    if not filtered:  # a Python whose tarfile has no extraction filters: every member is checked first
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    elif not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")
    dest = tmp_path / "out"
    refused = []
    for member in ("../evil.txt", str(tmp_path / "evil.txt"), "lfw/link"):
        try:
            extract_tar(_tar_with(tmp_path, member), dest)
        except DatasetError as e:
            assert "a.tgz" in str(e) and "\n" not in str(e)
            refused.append(member)
        assert not (tmp_path / "evil.txt").exists() and not (dest / "lfw" / "link").exists()
    # tarfile's own filter unpacks an absolute name under the folder instead of refusing it
    assert refused == ["../evil.txt", "lfw/link"] if filtered else len(refused) == 3
    extract_tar(_tar_with(tmp_path, "lfw/ok.txt"), dest)
    assert (dest / "lfw" / "ok.txt").read_text() == "x"


def test_identity_files_are_read_per_batch_sharded_and_resumable(tmp_path):
    root = write_identity_folder(tmp_path / "ids", identities=3, per_identity=4, size=20)
    names, files = identity_files(root)
    data = faces.IdentityImageFiles(files, 16)
    in_memory = faces.load_identity_images(files, 16)
    assert len(data) == 12 and torch.equal(torch.stack([data[i][0] for i in range(12)]), in_memory.images)
    assert torch.equal(data.labels, in_memory.labels) and len(data.head(5)) == 5
    norm = dict(mean=(0.5,) * 3, std=(0.5,) * 3, in_chans=3, seed=3, num_workers=0)
    for augment in ("flip", "crop_flip", "none"):
        whole = IdentityFileLoader(data, 4, augment=augment, **norm)
        halves = [IdentityFileLoader(data, 4, augment=augment, rank=r, world_size=2, **norm) for r in (0, 1)]
        batches = list(whole.batches(epoch=1))
        assert len(batches) == len(whole) == 3
        for i, (x, y) in enumerate(batches):
            parts = [list(h.batches(epoch=1, start=i))[0] for h in halves]  # each rank's share, resumed at batch i
            assert torch.equal(x[0::2], parts[0][0]) and torch.equal(x[1::2], parts[1][0]), augment
            assert torch.equal(y[0::2], parts[0][1]) and torch.equal(y[1::2], parts[1][1])
        assert not torch.equal(batches[0][0], next(whole.batches(epoch=2))[0])  # another epoch, another order
    workers = IdentityFileLoader(data, 4, augment="crop_flip", **(norm | {"num_workers": 2}))
    alone = IdentityFileLoader(data, 4, augment="crop_flip", **norm)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(workers.batches(epoch=1), alone.batches(epoch=1)))
    flipped = next(IdentityFileLoader(data, 12, augment="flip", **norm).batches())[0]
    plain = next(IdentityFileLoader(data, 12, augment="none", **norm).batches())[0]
    mirrored = [torch.equal(f, p.flip(2)) and not torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert 0 < sum(mirrored) < 12 and all(m or torch.equal(f, p) for m, f, p in zip(mirrored, flipped, plain))


def test_an_unreadable_image_read_per_batch_is_one_dataset_error(tmp_path):
    root = write_identity_folder(tmp_path / "ids", identities=2, per_identity=2, size=16)
    (root / "Person_A" / "Person_A_0001.jpg").write_bytes(b"not a jpeg")
    loader = IdentityFileLoader(
        faces.IdentityImageFiles(identity_files(root)[1], 16), 4, augment="none", mean=(0.5,) * 3, std=(0.5,) * 3,
        in_chans=3, num_workers=0,
    )  # fmt: skip
    with pytest.raises(DatasetError, match="Person_A_0001.jpg"):
        list(loader.batches())


def test_make_pairs_lives_with_the_data_and_refuses_what_cannot_pair():
    idx, same = faces.make_pairs(torch.tensor([0, 0, 1, 1, 2]), 20, seed=1)
    labels = np.array([0, 0, 1, 1, 2])
    assert idx.shape == (20, 2) and same.sum() == 10
    assert all((labels[a] == labels[b]) == s and a != b for (a, b), s in zip(idx, same))
    with pytest.raises(DatasetError, match="an identity with two images"):
        faces.make_pairs(torch.tensor([0, 1, 2]), 10)


def test_flip_only_augmentation_of_in_memory_identities_is_sharded_and_seeded():
    from ghostnet.data import ImageData, TensorLoader
    from ghostnet.tasks.face.task import FlipLoader

    data = ImageData(torch.randint(0, 255, (16, 1, 8, 8), dtype=torch.uint8), torch.arange(16) % 4)
    make = lambda rank, world: FlipLoader(  # noqa: E731
        TensorLoader(data, 8, train=True, seed=5, rank=rank, world_size=world)
    )
    plain = list(TensorLoader(data, 8, train=True, seed=5).batches(epoch=3))
    whole = list(make(0, 1).batches(epoch=3))
    assert len(whole) == len(make(0, 1)) == 2
    for i, (x, _) in enumerate(whole):
        shares = [next(make(r, 2).batches(epoch=3, start=i)) for r in (0, 1)]
        assert torch.equal(x[0::2], shares[0][0]) and torch.equal(x[1::2], shares[1][0])
        same = [torch.equal(a, b) for a, b in zip(x, plain[i][0])]
        assert all(s or torch.equal(a, b.flip(2)) for s, a, b in zip(same, x, plain[i][0]))
    assert 0 < sum(torch.equal(a, b) for x, p in zip(whole, plain) for a, b in zip(x[0], p[0])) < 16
