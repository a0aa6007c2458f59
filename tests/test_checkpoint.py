import collections

import pytest
import torch

from ghostnet import CheckpointError, create_model, load_weights, save_weights
from ghostnet.models.checkpoint import read_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return create_model("ghostnet_050").eval()


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix", "ordered"])
def test_load_pth_in_each_wrapping(tmp_path, source, wrap):
    sd = source.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 3},
        "model": {"model": sd, "optimizer": {}},
        "module_prefix": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "ordered": collections.OrderedDict(sd),
    }[wrap]
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    target = create_model("ghostnet_050")
    load_weights(target, path)
    assert _same(source, target)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_our_format_round_trip_rebuilds_model(tmp_path, source, suffix):
    model = create_model("ghostnet_050", num_classes=10)
    path = save_weights(model, tmp_path / f"w{suffix}")
    target = create_model("ghostnet_050", num_classes=10, checkpoint_path=str(path))
    assert _same(model, target)
    if suffix == ".pth":
        ckpt = read_checkpoint(path)
        assert ckpt["model_name"] == "ghostnet_050" and ckpt["model_kwargs"] == {"num_classes": 10}


def test_imagenet_checkpoint_into_other_num_classes(tmp_path, source):
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(CheckpointError, match=r"classifier\.weight: checkpoint \(1000, 1280\) vs model \(10, 1280\)"):
        load_weights(create_model("ghostnet_050", num_classes=10), path)
    model = create_model("ghostnet_050", num_classes=10, checkpoint_path=str(path))  # drops the classifier
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)
    assert model.classifier.out_features == 10


def test_classification_checkpoint_into_backbone(tmp_path, source):
    path = tmp_path / "imagenet.pth"
    torch.save(source.state_dict(), path)
    backbone = create_model("ghostnet_050", features_only=True, out_indices=(2, 3), checkpoint_path=str(path))
    assert torch.equal(
        backbone.blocks[3][0].ghost1.primary_conv[0].weight, source.blocks[3][0].ghost1.primary_conv[0].weight
    )


def test_missing_file():
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope.pth"):
        load_weights(create_model("ghostnet_050"), "nope.pth")


def test_truncated_file(tmp_path, source):
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(create_model("ghostnet_050"), path)


def test_truncated_safetensors(tmp_path, source):
    path = save_weights(source, tmp_path / "w.safetensors")
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(create_model("ghostnet_050"), path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_weights(create_model("ghostnet_050"), path)
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="holds a list"):
        load_weights(create_model("ghostnet_050"), path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_refuses_to_unpickle_code(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": Payload()}, path)
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        load_weights(create_model("ghostnet_050"), path)
    assert "must never run" not in capsys.readouterr().out


def test_missing_and_unexpected_keys_are_named(tmp_path, source):
    sd = source.state_dict()
    del sd["conv_stem.weight"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"1 missing key\(s\) \['conv_stem.weight'\]; 1 unexpected key\(s\) \['extra.weight'\]"
    ):
        load_weights(create_model("ghostnet_050"), sd)
    report = load_weights(create_model("ghostnet_050"), sd, strict=False)
    assert report["missing"] == ["conv_stem.weight"] and report["unexpected"] == ["extra.weight"]


def test_wrong_width_names_shapes(source):
    with pytest.raises(
        CheckpointError, match=r"shape mismatch.*conv_stem.weight: checkpoint \(8, 3, 3, 3\) vs model \(16, 3, 3, 3\)"
    ):
        load_weights(create_model("ghostnet_100"), source.state_dict())


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"format": "ghostnet-checkpoint", "step": 1}, path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"format": "ghostnet-checkpoint", "step": 2}, path)
    assert read_checkpoint(path)["step"] == 1  # the old complete file is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind
