"""`ghostnet bench` pairs: each Ghost CIFAR model against its own baseline, ``ghostify:NAME`` against torchvision's."""

import pytest
import torch
import torchvision.models as tvm

from ghostnet.bench import BenchSetup, run_latency
from ghostnet.bench.models import build_ours, ghostified_torchvision, peer_builders
from ghostnet.models.cifar import VGG, CifarResNet
from ghostnet.nn import GhostModule


@pytest.mark.parametrize(
    ("ours", "base", "cls"), [("ghost_resnet56", "resnet56", CifarResNet), ("ghost_vgg16", "vgg16", VGG)]
)
def test_cifar_ghost_models_are_paired_with_their_baseline_only(ours, base, cls):
    peers = peer_builders(ours)
    assert list(peers) == [base]
    model = peers[base]()
    assert type(model) is cls and not any(isinstance(m, GhostModule) for m in model.modules())
    assert any(isinstance(m, GhostModule) for m in build_ours(ours).modules())


def test_ghostify_spelling_builds_the_ghost_model_and_its_torchvision_peer():
    assert ghostified_torchvision("ghostify:resnet18") == "resnet18"
    assert ghostified_torchvision("ghostnet_100") is None
    ours = build_ours("ghostify:resnet18")
    ghosts = [m for m in ours.modules() if isinstance(m, GhostModule)]
    assert len(ghosts) == 19  # every conv but the stem: 16 3x3 convs and 3 1x1 downsample convs
    peers = peer_builders("ghostify:resnet18")
    assert list(peers) == ["tv resnet18"]
    peer = peers["tv resnet18"]()
    assert type(peer) is tvm.ResNet and not any(isinstance(m, GhostModule) for m in peer.modules())
    x = torch.randn(1, 3, 64, 64)
    assert ours.eval()(x).shape == peer.eval()(x).shape == (1, 1000)


def test_ghostify_of_an_unknown_model_is_one_clear_error():
    with pytest.raises(ValueError, match="torchvision has no classification model 'resnet5000'"):
        build_ours("ghostify:resnet5000")


def test_bench_times_ghost_resnet56_against_resnet56():
    setup = BenchSetup(
        model_name="ghost_resnet56", input_size=32, batch_sizes=(1,), runs=3, warmup=1, threads=1, onnx=False
    )
    result = run_latency(setup).to_dict()
    rows = {(r["model"], r["form"]): r for r in result["rows"]}
    assert {m for m, _ in rows} == {"ghost_resnet56", "resnet56"}
    assert ("resnet56", "eager") in rows and ("ghost_resnet56", "fused+cl") in rows
    macs = {m: r["macs"] for (m, _), r in rows.items()}
    assert 1.8 < macs["resnet56"] / macs["ghost_resnet56"] < 2.1  # the paper's ~2x fewer MACs
