import collections
import os
import re

import pytest
import torch

from ghostnet import CheckpointError, create_model, load_weights, save_weights
from ghostnet.models.checkpoint import CheckpointWriteError, read_checkpoint, save_checkpoint, state_checksum


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
    path = save_weights(model, tmp_path / f"w{suffix}", "ghostnet_050", {"num_classes": 10})
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


# ---------------------------------------------------------------- failed writes, refused code, checksums


def save_that_fails(exc, after_calls=0, after_bytes=4096):
    """A torch.save whose first `after_calls` calls work and later ones stop writing after `after_bytes` bytes
    with `exc()` raised by the file, as a full disk or Ctrl-C does (torch's zip writer wraps it)."""
    import io

    real = torch.save
    calls = []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) <= after_calls:
            return real(obj, f, *args, **kwargs)

        class Full(io.RawIOBase):
            written = 0

            def writable(self):
                return True

            def write(self, b):
                if self.written >= after_bytes:
                    raise exc()
                f.write(b)
                self.written += len(b)
                return len(b)

        real(obj, Full(), *args, **kwargs)

    return save


def _enospc():
    import errno

    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _enospc_at_once(obj, f, *args, **kwargs):
    raise _enospc()


def _enforce_fail(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04" + bytes(100))
    raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 123 vs 45")


@pytest.mark.parametrize("how", ["enospc_in_torch_writer", "enforce_fail", "enospc"])
def test_a_failed_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, how):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"format": "ghostnet-checkpoint", "step": 1}, path)
    fake = {
        "enospc_in_torch_writer": save_that_fails(_enospc),
        "enforce_fail": _enforce_fail,
        "enospc": _enospc_at_once,
    }[how]
    monkeypatch.setattr(torch, "save", fake)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint({"format": "ghostnet-checkpoint", "step": 2, "w": torch.zeros(300_000)}, path)
    message = str(e.value)
    assert "\n" not in message and e.value.__cause__ is None and e.value.__suppress_context__
    assert f"could not write checkpoint {path}" in message and "the previous ckpt.pth is intact" in message
    assert "it needs about 1.1 MiB" in message and f"{tmp_path} has " in message and " free" in message
    assert ("No space left on device" in message) == (how != "enforce_fail")
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_ctrl_c_during_a_save_removes_the_temp_file_and_stays_an_interrupt(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"format": "ghostnet-checkpoint", "step": 1}, path)
    monkeypatch.setattr(torch, "save", save_that_fails(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt, match="the previous ckpt.pth is intact"):
        save_checkpoint({"format": "ghostnet-checkpoint", "step": 2, "w": torch.zeros(300_000)}, path)
    assert read_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


class RunsAShell:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))  # pickled as a reference only; never called here


def test_a_pickle_that_asks_to_run_code_is_refused_as_such(tmp_path, capfd):
    path = tmp_path / "evil.pth"
    torch.save({"model": RunsAShell()}, path)  # torch.save calls __reduce__, which only returns the reference
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(path)
    message = str(e.value)
    assert f"{path} asks to run code" in message and f"{os.system.__module__}.system" in message
    assert "refusing to unpickle" in message and "corrupt" not in message
    assert "must never run" not in capfd.readouterr().out


def _flip_tensor_byte(path):
    """Flip one byte in the middle of a tensor's data inside a torch zip checkpoint."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_flipped_bytes_in_tensor_data_are_caught_by_the_checksum(tmp_path, suffix):
    model = create_model("ghostnet_small_050", num_classes=10)
    path = save_weights(model, tmp_path / f"w{suffix}")
    assert create_model("ghostnet_small_050", num_classes=10, checkpoint_path=str(path))  # intact: loads
    if suffix == ".pth":
        _flip_tensor_byte(path)
    else:
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x10  # the header is at the start; the middle is tensor data
        path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is damaged: .* checksum"):
        read_checkpoint(path)


def test_checkpoints_without_a_checksum_still_load(tmp_path):
    model = create_model("ghostnet_small_050", num_classes=10)
    older = {"format": "ghostnet-checkpoint", "model": model.state_dict(), "model_name": "ghostnet_small_050"}
    torch.save(older, tmp_path / "older.pth")
    assert "checksum" not in read_checkpoint(tmp_path / "older.pth")
    load_weights(create_model("ghostnet_small_050", num_classes=10), tmp_path / "older.pth")
    ours = read_checkpoint(save_checkpoint(older, tmp_path / "ours.pth"))
    assert ours["checksum"].startswith("sha256:") and ours["checksum"] == state_checksum(ours)
