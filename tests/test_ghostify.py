import pytest
import torch
from torch import nn

from ghostnet import GhostModule, create_model
from ghostnet.analysis.profile import profile_model
from ghostnet.cli import main
from ghostnet.nn import ghostify, ghostify_report


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("base,ghost", [("vgg16", "ghost_vgg16"), ("resnet56", "ghost_resnet56")])
@pytest.mark.parametrize("ratio,dw", [(2, 3), (4, 5)])
def test_ghostify_reproduces_the_registered_ghost_models(base, ghost, ratio, dw):
    report = ghostify_report(create_model(base), ratio=ratio, dw_size=dw)
    assert _shapes(report.model) == _shapes(create_model(ghost, ratio=ratio, dw_size=dw))
    assert report.layers[0].action == "kept" and "first conv" in report.layers[0].reason
    assert all(r.action == "replaced" for r in report.layers[1:])
    assert all(r.absorbed_bn for r in report.layers[1:])  # every conv+BN became one Ghost module
    assert not any(
        isinstance(report.model.get_submodule(r.absorbed_bn), torch.nn.BatchNorm2d) for r in report.layers[1:]
    )


def test_ghostify_keeps_shapes_and_trains():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 13, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(13, 16, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=0),
    )
    x = torch.randn(2, 3, 17, 17)
    report = ghostify_report(model, ratio=3, dw_size=3)
    assert report.model is not model and isinstance(model[2], nn.Conv2d)  # a copy by default
    assert [r.action for r in report.layers] == ["kept", "replaced", "replaced", "replaced"]
    g = report.model
    assert isinstance(g[2], GhostModule) and g[4].primary_conv[0].dilation == (2, 2)
    assert g(x).shape == model(x).shape == (2, 16, 7, 7)
    g(x).sum().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_ghostify_keeps_depthwise_and_skipped_layers():
    import torchvision

    report = ghostify_report(torchvision.models.mobilenet_v2(), skip=["features.18.*"])
    kept = {r.name: r.reason for r in report.kept}
    assert kept["features.1.conv.0.0"] == "grouped/depthwise (already cheap)"
    assert kept["features.18.0"] == "skipped by request"
    assert report.replaced and "replaced" in report.message
    assert report.model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_ghostify_returns_the_model():
    import torchvision

    base = torchvision.models.resnet18()
    model = ghostify(base, ratio=2, dw_size=3)  # what every user writes first
    assert isinstance(model, nn.Module) and not isinstance(model, type(ghostify_report(base)))
    assert isinstance(model.layer1[0].conv1, GhostModule) and isinstance(model.layer1[0].bn1, nn.Identity)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv0, self.conv1, self.bn1 = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8)

    def forward(self, x):
        x = self.conv0(x)
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 2
        return self.bn1(self.conv1(x))


def test_ghostify_refuses_an_untraceable_model_instead_of_keeping_stray_bns():
    with pytest.raises(ValueError, match="cannot trace _Untraceable.*absorb_bn=False"):
        ghostify(_Untraceable())
    report = ghostify_report(_Untraceable(), absorb_bn=False)
    assert isinstance(report.model.conv1, GhostModule) and isinstance(report.model.bn1, nn.BatchNorm2d)
    assert report.layers[1].absorbed_bn == ""


def test_ghostify_refuses_a_model_without_convs():
    with pytest.raises(ValueError, match="has no Conv2d layers"):
        ghostify(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))


def test_ghostify_depthwise_only_replaces_nothing_and_says_so():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Conv2d(4, 4, 3, padding=1, groups=4))
    report = ghostify_report(model, keep_first=False)
    assert not report.replaced
    assert report.message == "nothing replaced: all 2 Conv2d layers were kept (grouped/depthwise (already cheap))"


@pytest.mark.parametrize("kwargs,arg", [({"ratio": 0}, "ratio"), ({"dw_size": 2}, "dw_size")])
def test_ghostify_bad_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ghostify(create_model("resnet56"), **kwargs)


@pytest.mark.parametrize("ratio,paper_macs", [(2, 2.2e9), (4, 1.2e9)])
def test_ghost_resnet50(ratio, paper_macs):
    import torchvision

    base = torchvision.models.resnet50()
    report = ghostify_report(base, ratio=ratio)
    before, after = profile_model(base, (224, 224)), profile_model(report.model, (224, 224))
    assert (before.params, before.macs) == (25_557_032, 4_089_184_256)
    assert abs(after.macs - paper_macs) / paper_macs < 0.03
    # Params: 14.0M (s=2) and 8.2M (s=4) against the paper's 13.0M / 6.5M; the 2.05M FC layer stays a Linear.
    assert after.params == {2: 13_953_512, 4: 8_151_752}[ratio]
    assert len(report.replaced) == 52


def test_cli_ghostify(capsys):
    assert main(["ghostify", "resnet18", "--ratio", "2", "--input-size", "64", "64"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.conv1" in out and "replaced 19 of 20 Conv2d layers" in out and "x fewer" in out
    with pytest.raises(SystemExit) as e:
        main(["ghostify", "resnet9000"])
    assert e.value.code == 2 and "unknown model 'resnet9000'" in capsys.readouterr().err


def test_ghostified_model_profile_counts_cheap_ops():
    p = profile_model(create_model("ghost_resnet56"), (32, 32))
    assert 0 < p.cheap_macs < 0.05 * p.macs


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_ghostify_puts_in_the_successors_modules(version):
    import torchvision

    from ghostnet.nn import GhostModuleV2, GhostModuleV3, reparameterize

    torch.manual_seed(0)
    base = torchvision.models.resnet18(num_classes=10)
    report = ghostify_report(base, version=version)
    kind = GhostModuleV2 if version == "v2" else GhostModuleV3
    assert isinstance(report.model.layer1[0].conv1, kind) and len(report.replaced) == 19
    model = report.model
    for m in model.modules():  # BN statistics from data, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (2, 10)
        if version == "v3":  # the re-parameterisable branches fold like GhostNetV3's
            assert (reparameterize(model)(x) - y).abs().max() <= 1e-4 * max(1.0, float(y.abs().max()))


def test_ghostify_v3_keeps_convs_it_cannot_fold():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=0), nn.Conv2d(8, 8, 3, padding=1))
    report = ghostify_report(model, version="v3")
    assert [r.action for r in report.layers] == ["kept", "kept", "replaced"]
    assert "same' padding" in report.layers[1].reason
    with pytest.raises(ValueError, match="version must be one of"):
        ghostify(model, version="v4")
