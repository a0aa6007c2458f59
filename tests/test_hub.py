"""Published weights: the table, `pretrained=`, and the checksum-verified download, against a local HTTP server.

Nothing leaves the machine: the table's entries are pointed at a server on 127.0.0.1 serving state dicts of real
registered models (random weights), whole, truncated, corrupted or missing.
"""

import dataclasses
import hashlib
import io
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from ghostnet.cli import main
from ghostnet.models import create_model, hub, list_models, register_model
from ghostnet.models.checkpoint import CheckpointError


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}  # path -> body; "/truncated/..." paths announce more bytes than they send
    hits: list[str] = []

    def do_GET(self):
        self.hits.append(self.path)
        body = self.files.get(self.path.replace("/truncated/", "/", 1))
        if body is None:
            self.send_error(404, "Not Found")
            return
        truncated = self.path.startswith("/truncated/")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (4096 if truncated else 0)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncated else body)  # then the connection closes (HTTP/1.0)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _random_state(name, **kwargs):
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn_like(t) * 0.1 + (1.0 if t.ndim == 1 else 0.0))  # BN scales/vars stay positive
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def served(server):
    """The served files: ghostnet_100 as an official-style .pth, and as a timm-style .safetensors."""
    from safetensors.torch import save

    state = _random_state("ghostnet_100")
    buf = io.BytesIO()
    torch.save(state, buf)
    _Handler.files["/ghostnet_1x.pth"] = buf.getvalue()
    _Handler.files["/model.safetensors"] = save({k: v.contiguous() for k, v in state.items()})
    return state


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(hub.CACHE_ENV, str(folder))
    return folder


def _point(monkeypatch, model, source, url, sha256, filename=None):
    """Make the table's `model`/`source` entry download `url` with the given hash."""
    old = hub.PUBLISHED_WEIGHTS.get(model, {}).get(source) or hub.Weights(model, source, url, None, "x")
    new = dataclasses.replace(old, url=url, sha256=sha256, filename=filename or old.filename)
    monkeypatch.setitem(hub.PUBLISHED_WEIGHTS, model, {**hub.PUBLISHED_WEIGHTS.get(model, {}), source: new})
    return new


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _equal(model, state):
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items())


def test_the_table_names_registered_models_and_https_files():
    names = set(list_models())
    files = [w for by_source in hub.PUBLISHED_WEIGHTS.values() for w in by_source.values()]
    assert {w.model for w in files} == {
        "ghostnet_100",
        "ghostnetv2_100",
        "ghostnetv2_130",
        "ghostnetv2_160",
        "ghostnetv3_100",
    }
    assert {w.model for w in files} <= names
    assert all(w.url.startswith("https://") and w.source in hub.SOURCES for w in files)
    assert len({w.filename for w in files}) == len(files)  # no two files share a cache name
    assert all(w.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", w.sha256) for w in files)
    assert all((w.form == "training") == w.model.startswith("ghostnetv3") for w in files)
    assert hub.find_weights("ghostnetv2_130").source == "official"
    assert hub.find_weights("ghostnet_100", "timm").url.endswith(
        "timm/ghostnet_100.in1k/resolve/main/model.safetensors"
    )


def test_pretrained_downloads_verifies_and_then_loads_from_the_cache(server, served, cache, monkeypatch):
    data = _Handler.files["/ghostnet_1x.pth"]
    _point(monkeypatch, "ghostnet_100", "official", f"{server}/ghostnet_1x.pth", _sha(data))
    before = len(_Handler.hits)
    model = create_model("ghostnet_100", pretrained=True)
    assert _equal(model, served)
    assert sorted(p.name for p in cache.iterdir()) == ["ghostnet_1x.pth"]  # pinned: no record, no temp file
    assert (cache / "ghostnet_1x.pth").read_bytes() == data
    again = create_model("ghostnet_100", pretrained=True)
    assert _equal(again, served) and len(_Handler.hits) == before + 1  # the second load never asked the server


def test_timm_source_and_an_unpinned_file_trusted_on_first_use(server, served, cache, monkeypatch):
    data = _Handler.files["/model.safetensors"]
    w = _point(monkeypatch, "ghostnet_100", "timm", f"{server}/model.safetensors", None)
    model = create_model("ghostnet_100", pretrained="timm", num_classes=10)  # all but the classifier
    assert _equal(model, {k: v for k, v in served.items() if not k.startswith("classifier")})
    record = cache / (w.filename + ".sha256")
    assert record.read_text().strip() == _sha(data)
    assert sorted(p.name for p in cache.iterdir()) == [w.filename, record.name]

    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    (cache / w.filename).write_bytes(bytes(damaged))
    with pytest.raises(CheckpointError, match="cached weights of .* are damaged") as e:
        create_model("ghostnet_100", pretrained="timm")
    assert "\n" not in str(e.value) and w.url in str(e.value)
    assert list(cache.iterdir()) == []  # removed, so the next call downloads it again
    assert _equal(create_model("ghostnet_100", pretrained="timm"), served)


def test_a_truncated_cache_file_is_caught_against_the_pinned_hash(server, served, tmp_path):
    data = _Handler.files["/ghostnet_1x.pth"]
    path = hub.download_weights(f"{server}/ghostnet_1x.pth", _sha(data), tmp_path)
    assert path == tmp_path / "ghostnet_1x.pth" and path.read_bytes() == data
    path.write_bytes(data[:1000])
    with pytest.raises(CheckpointError, match="damaged.*pinned SHA-256"):
        hub.download_weights(f"{server}/ghostnet_1x.pth", _sha(data), tmp_path)
    assert not path.exists()


def test_a_checksum_mismatch_leaves_nothing_in_the_cache(server, served, cache, monkeypatch):
    _point(monkeypatch, "ghostnet_100", "official", f"{server}/ghostnet_1x.pth", "0" * 64)
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        create_model("ghostnet_100", pretrained=True)
    assert "\n" not in str(e.value) and f"{server}/ghostnet_1x.pth" in str(e.value)
    assert list(cache.iterdir()) == []


def test_an_interrupted_download_leaves_no_partial_file(server, served, cache, monkeypatch):
    _point(monkeypatch, "ghostnet_100", "official", f"{server}/truncated/ghostnet_1x.pth", None, "ghostnet_1x.pth")
    with pytest.raises(CheckpointError, match="interrupted") as e:
        create_model("ghostnet_100", pretrained=True)
    assert "\n" not in str(e.value) and "/truncated/ghostnet_1x.pth" in str(e.value)
    assert list(cache.iterdir()) == []


def test_http_errors_and_unreachable_servers_are_one_line(server, cache, monkeypatch):
    _point(monkeypatch, "ghostnetv2_100", "official", f"{server}/missing.pth.tar", None)
    with pytest.raises(CheckpointError, match=r"could not download .*/missing\.pth\.tar: HTTP 404") as e:
        create_model("ghostnetv2_100", pretrained=True)
    assert "\n" not in str(e.value) and list(cache.iterdir()) == []
    with pytest.raises(CheckpointError, match="could not download http://127.0.0.1:9/") as e:
        hub.download_weights("http://127.0.0.1:9/x.pth", None, cache)  # the discard port: refused
    assert "\n" not in str(e.value) and list(cache.iterdir()) == []


def test_pretrained_without_weights_lists_the_models_and_sources_that_have_them(monkeypatch):
    with pytest.raises(CheckpointError, match="no published weights for 'ghostnet_130'") as e:
        create_model("ghostnet_130", pretrained=True)
    assert "ghostnet_100 (official, timm)" in str(e.value) and "ghostnetv3_100 (official, timm)" in str(e.value)
    with pytest.raises(CheckpointError, match="no published weights for 'ghostnet'"):
        create_model("ghostnet", width=1.0, pretrained=True)
    with pytest.raises(CheckpointError, match="pretrained must be True or one of 'official', 'timm', got 'imagenet'"):
        create_model("ghostnet_100", pretrained="imagenet")
    monkeypatch.setitem(hub.PUBLISHED_WEIGHTS, "ghostnet_100", {"official": hub.find_weights("ghostnet_100")})
    with pytest.raises(CheckpointError, match="'ghostnet_100' has no 'timm' weights; its sources: official"):
        create_model("ghostnet_100", pretrained="timm")
    with pytest.raises(ValueError, match="either pretrained=True or checkpoint_path"):
        create_model("ghostnet_100", pretrained=True, checkpoint_path="x.pth")


def test_a_v3_training_form_file_with_timm_names_loads_folded_too(server, cache, monkeypatch):
    """The published V3 files are the training form (timm's spells a branch BN ".bn1"); folded=True folds them."""
    from safetensors.torch import save

    state = _random_state("ghostnetv3_050")
    timm_names = {re.sub(r"(_rpr_(?:conv\.\d+|scale))\.bn\.", r"\1.bn1.", k): v for k, v in state.items()}
    assert timm_names.keys() != state.keys()
    _Handler.files["/v3.safetensors"] = save({k: v.contiguous() for k, v in timm_names.items()})
    _point(monkeypatch, "ghostnetv3_050", "timm", f"{server}/v3.safetensors", None, "timm-v3.safetensors")
    monkeypatch.setitem(
        hub.PUBLISHED_WEIGHTS["ghostnetv3_050"],
        "timm",
        dataclasses.replace(hub.PUBLISHED_WEIGHTS["ghostnetv3_050"]["timm"], form="training"),
    )
    training = create_model("ghostnetv3_050", pretrained=True).eval()
    assert _equal(training, state)
    folded = create_model("ghostnetv3_050", pretrained=True, folded=True).eval()
    # exactly the fold of the loaded training form (that folding keeps the outputs is tested with the blocks)
    assert folded.folded and _equal(folded, training.reparameterize().state_dict())


def test_list_marks_the_models_with_weights_and_their_sources(capsys):
    assert main(["list", "ghostnet*"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["ghostnet_100"].endswith("[ImageNet weights] official, timm")
    assert rows["ghostnetv3_100"].endswith("[ImageNet weights] official, timm")
    assert "[ImageNet weights]" not in rows["ghostnet_130"] + rows["ghostnetv3_050"] + rows["ghostnet"]


def test_weights_are_declared_in_the_table_not_in_register_model():
    with pytest.raises(ValueError, match="PUBLISHED_WEIGHTS"):
        register_model(url="https://example.invalid/w.pth")
