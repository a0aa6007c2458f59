"""`ghostnet bench latency`: the forms of `ghostnet.bench.forms.FORMS` timed round-robin, the plan the baseline
is checked against, failures kept, the outputs; the peers, and the matmul rate behind the floor."""

import json
from collections import Counter

import pytest
import torch
from torch import nn

import ghostnet.bench.forms as forms
from ghostnet import create_model
from ghostnet.bench import BenchSetup, run_latency
from ghostnet.bench.forms import Subject, build_forms, plan
from ghostnet.cli import main

QUICK = ["bench", "latency", "--quick", "--input-size", "32", "--runs", "2"]


def test_bench_quick_end_to_end(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert main([*QUICK, "--output", str(tmp_path / "b.json"), "--plot", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG"
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "b.json").read_text())
    rows = {(r["model"], r["form"]) for r in result["rows"]}
    assert {
        ("ghostnet_100", "eager"),
        ("ghostnet_100", "fused+cl"),
        ("ghostnet_100", "ort-fp32"),
        ("ghostnet_100", "ort-int8"),
        ("tv mobilenet_v3_large", "eager"),
        ("tv mobilenet_v2", "ort-fp32"),
        ("tv resnet18", "eager"),
    } <= rows
    base = [r for r in result["rows"] if f"{r['model']} / {r['form']}" == result["baseline"]]
    assert len(base) == 1 and base[0]["ratio"] == 1.0
    assert all(r["latency_ms"] > 0 and r["floor_ms"] > 0 and r["throughput"]["4"] > 0 for r in result["rows"])
    assert "x base" in table and result["machine"]["matmul_gflops"] > 0 and result["failed"] == []
    planned = plan(BenchSetup(input_size=32), sorted({m for m, _ in rows}))
    assert all(form in planned[model] for model, form in rows)  # what the baseline check takes as planned was timed
    with pytest.raises(SystemExit) as e:
        main([*QUICK, "--no-onnx", "--no-peers", "--baseline", "nope / eager"])
    assert e.value.code == 2
    for bad in ("cuda:abc", "tpu"):
        with pytest.raises(SystemExit) as e:
            main([*QUICK, "--device", bad])
        assert e.value.code == 2 and "device must be cpu or cuda[:N]" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as e:
            main([*QUICK, "--device", "cuda"])
        assert e.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def _randomise_bn(model):
    """Non-trivial BN affine weights and running statistics measured on data, as after training."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for _ in range(2):
            model.train()(torch.randn(8, 3, 40, 40, generator=g))
    return model.eval()


def _torch_forms(model, **setup):
    s = BenchSetup(runtimes="torch", **setup)
    return {t.form: t.fn for t in build_forms(Subject("m", model, True), s, None, print, 1)}


def test_bench_torch_forms_match_the_model():
    """Every PyTorch form the bench times computes the model's function (bf16 to bf16 precision), and building
    them leaves the eager model as it was; a model whose BN cannot be folded is timed as `cl`."""
    torch.manual_seed(0)
    model = _randomise_bn(create_model("ghostnet_100", num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        built = _torch_forms(model, bf16=True)
        assert list(built) == ["eager", "fused+cl", "fused+cl bf16"]
        assert (built["fused+cl"](x) - ref).abs().max() < 1e-4
        low = built["fused+cl bf16"](x).float()
        # bf16 keeps ~3 significant digits per op; over 16 blocks the logits drift by up to ~10%, not in direction
        assert torch.nn.functional.cosine_similarity(low.flatten(), ref.flatten(), dim=0) > 0.99
        assert (low - ref).abs().max() < 0.2 * ref.abs().max()
        assert model.conv_stem.weight.is_contiguous() and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())

    class ConvThenNormAct(nn.Module):  # a BN fed through an activation: nothing to fold into
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            return self.bn(torch.relu(self.conv(x)))

    peer = ConvThenNormAct().eval()
    built = _torch_forms(peer)
    assert list(built) == ["eager", "cl"]
    with torch.inference_mode():
        assert torch.allclose(built["cl"](x), peer(x), atol=1e-5)
    assert peer.conv.weight.is_contiguous()  # the `cl` copy, not the peer, went channels_last
    s = BenchSetup(runtimes="torch")
    assert [t.form for t in build_forms(Subject("p", peer, False), s, None, print, 1)] == ["eager"]  # a CPU peer


def _replace_form(monkeypatch, name, make):
    """`FORMS` with the form called `name` made by `make(real_make)` instead."""
    changed = [f if f.name != name else forms.Form(f.name, f.runtime, f.applies, make(f.make)) for f in forms.FORMS]
    monkeypatch.setattr(forms, "FORMS", changed)


def test_bench_keeps_going_past_a_broken_form(tmp_path, monkeypatch, capsys):
    """A form that raises is listed as failed with its error; the others are still timed, the run still written;
    a missing baseline leaves the ratios out rather than losing the run; outputs are never replaced."""

    def broken(real):
        return lambda *a: lambda x: (_ for _ in ()).throw(RuntimeError("no kernel for this\nsecond line"))

    def small_batches_only(real):  # out of memory at batch 4, say: its batch-1 latency is still reported
        def make(*a):
            eager = real(*a)
            return lambda x: eager(x) if len(x) == 1 else (_ for _ in ()).throw(MemoryError("too big"))

        return make

    _replace_form(monkeypatch, "{cl}", broken)
    _replace_form(monkeypatch, "eager", small_batches_only)
    out = tmp_path / "b.json"
    args = [*QUICK, "--no-onnx", "--no-peers"]
    assert main([*args, "--baseline", "ghostnet_100 / fused+cl", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [r["form"] for r in result["rows"]] == ["eager"] and result["rows"][0]["ratio"] is None
    assert result["rows"][0]["latency_ms"] > 0 and result["rows"][0]["throughput"] == {}
    assert result["failed"] == [
        {"model": "ghostnet_100", "form": "fused+cl", "error": "RuntimeError: no kernel for this"},
        {"model": "ghostnet_100", "form": "eager @ batch 4", "error": "MemoryError: too big"},
    ]
    table = capsys.readouterr().out
    assert "failed: ghostnet_100 / fused+cl: RuntimeError: no kernel for this" in table and "no ratios" in table
    for extra, message in [
        (["--output", str(out)], "exists"),  # refused before any timing
        (["--baseline", "ghostnet_100 eager"], "MODEL / FORM"),
    ]:
        with pytest.raises(SystemExit) as e:
            main([*args, *extra])
        assert e.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # a peer is timed on the CPU in eager and ONNX Runtime only
        main([*QUICK, "--no-onnx", "--baseline", "tv resnet18 / fused+cl"])
    assert e.value.code == 2 and "does not time tv resnet18 as 'fused+cl'; its forms: eager" in capsys.readouterr().err


def test_every_round_times_every_form(monkeypatch):
    """Each round times every form alike, so drift on a shared machine falls on all forms evenly: every form gets
    the same number of calls at each batch size."""
    calls: Counter = Counter()

    def counted(name):
        def wrap(real):
            def make(s, setup, tmp):
                fn = real(s, setup, tmp)
                return lambda x: (calls.update([(name, len(x))]), fn(x))[1]

            return make

        return wrap

    for name in ("eager", "{cl}"):
        _replace_form(monkeypatch, name, counted(name))
    setup = BenchSetup(model_name="ghostnet_small_050", input_size=32, batch_sizes=(1, 4), threads=1, runs=5,
                       warmup=1, onnx=False, peers=False)  # fmt: skip
    result = run_latency(setup)
    for batch in (1, 4):
        assert calls[("eager", batch)] == calls[("{cl}", batch)] > 0
    assert [r.form for r in result.rows] == ["eager", "fused+cl"] and result.rows[0].ratio == 1.0


def test_matmul_gflops_runs_at_the_threads_it_is_given(monkeypatch):
    """The floor's matmul rate is measured at `threads` threads, and torch's thread count is put back after, also
    when the measurement fails."""
    from ghostnet.bench.setup import matmul_gflops

    before = torch.get_num_threads()
    target, seen, real_randn = before + 1, [], torch.randn

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return real_randn(*args, **kw)

    monkeypatch.setattr(torch, "randn", spy)
    assert matmul_gflops(target, n=8, runs=1) > 0
    assert seen and set(seen) == {target} and torch.get_num_threads() == before

    def broken(*args, **kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(torch, "randn", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        matmul_gflops(target, n=8, runs=1)
    assert torch.get_num_threads() == before


def test_bench_peers_follow_the_model_and_v3_is_timed_folded():
    pytest.importorskip("timm")
    from ghostnet.bench.latency import set_ratios
    from ghostnet.bench.models import peer_builders
    from ghostnet.bench.report import Row
    from ghostnet.nn import GhostModuleV3

    peers = peer_builders("ghostnetv3_100")
    assert "timm ghostnetv3_100" in peers and "tv mobilenet_v3_large" in peers
    timm_v3 = peers["timm ghostnetv3_100"]()
    assert not any("rpr" in n for n, _ in timm_v3.named_parameters())  # timm's, folded as it is deployed
    assert "timm ghostnet_100" in peer_builders("ghostnet_small_050")  # no such timm model: its GhostNet 1.0x
    repghost = peers["timm repghostnet_100"]()  # the concat-free GhostNet, timed as deployed: branches folded
    assert not repghost.training and not any("fusion_bn" in n for n, _ in repghost.named_parameters())
    rows = [
        Row("ghostnetv3_100", "eager", 1, 2.0, 2.0, {}, 0.1),
        Row("timm ghostnetv3_100", "eager", 1, 4.0, 4.0, {}, 0.1),
    ]
    assert set_ratios(rows, "", "ghostnetv3_100", print) == "timm ghostnetv3_100 / eager"
    assert rows[0].ratio == 0.5
    folded = create_model("ghostnetv3_050").eval().reparameterize()
    assert all(m.folded for m in folded.modules() if isinstance(m, GhostModuleV3))
