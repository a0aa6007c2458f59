import pytest
import torch

from ghostnet import GhostNet, create_model, list_models
from ghostnet.models import GHOSTNET_STAGES
from ghostnet.models.registry import IMAGE_TASKS

MODELS = list_models(task=IMAGE_TASKS)
NAMED = ["ghostnet_050", "ghostnet_100", "ghostnet_130"]  # the paper's ImageNet models (timm has these)


def test_registry_lists_the_named_models():
    assert {"ghostnet", "ghostnet_050", "ghostnet_100", "ghostnet_130", "vgg16", "ghost_resnet56"} <= set(MODELS)
    assert list_models("ghostnet_1*") == ["ghostnet_100", "ghostnet_130"]
    with pytest.raises(ValueError, match="unknown model 'resnet9000'"):
        create_model("resnet9000")


def test_table_has_sixteen_bottlenecks():
    assert sum(len(stage) for stage in GHOSTNET_STAGES) == 16
    model = create_model("ghostnet_100")
    assert len(model.blocks) == 10  # 9 bottleneck stages + the 1x1 conv stage


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward_small_input(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    assert y.shape == (2, 10)
    assert torch.isfinite(y).all()
    y.logsumexp(1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a gradient: {no_grad[:5]}"


@pytest.mark.parametrize("name", MODELS)
def test_eval_is_deterministic(name):
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (64, 96)])
def test_any_input_size(size):
    model = create_model("ghostnet_050", num_classes=3).eval()
    assert model(torch.randn(1, 3, *size)).shape == (1, 3)


def test_grayscale_and_widths():
    assert create_model("ghostnet_050", in_chans=1, num_classes=5)(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    m = create_model("ghostnet", width=1.1)
    assert m.conv_stem.out_channels == 16  # make_divisible(17.6, 4): 16 keeps more than 90%
    assert m.feature_info[-1]["num_chs"] == 176


def test_model_contract():
    model = create_model("ghostnet_100", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 2, 2) and model.num_features == 960
    assert model.forward_head(feats, pre_logits=True).shape == (2, 1280)
    assert torch.equal(model.forward_head(feats), model(x))
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.get_classifier().out_features == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 1280)
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f["num_chs"] for f in model.feature_info] == [16, 24, 40, 80, 160]


@pytest.mark.parametrize("name", NAMED)
@pytest.mark.parametrize("out_indices", [(0, 1, 2, 3, 4), (2, 3, 4), (1,)])
def test_features_only_matches_feature_info(name, out_indices):
    model = create_model(name, features_only=True, out_indices=out_indices).eval()
    x = torch.randn(1, 3, 64, 96)
    feats = model(x)
    assert len(feats) == len(model.feature_info) == len(out_indices)
    for f, info in zip(feats, model.feature_info):
        assert f.shape[1] == info["num_chs"]
        assert (f.shape[2], f.shape[3]) == (64 // info["reduction"], 96 // info["reduction"])
    assert not hasattr(model, "classifier")


def test_features_only_equals_full_model_intermediates():
    torch.manual_seed(0)
    full = create_model("ghostnet_050").eval()
    feat = create_model("ghostnet_050", features_only=True, out_indices=(2,)).eval()
    from ghostnet import load_weights

    load_weights(feat, full.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = full.blocks[:4](full.act1(full.bn1(full.conv_stem(x))))
        assert torch.equal(feat(x)[0], ref)


@pytest.mark.parametrize(
    "kwargs,arg",
    [
        ({"width": 0}, "width"),
        ({"num_classes": -1}, "num_classes"),
        ({"in_chans": 0}, "in_chans"),
        ({"drop_rate": 1.5}, "drop_rate"),
        ({"features_only": True, "out_indices": (5,)}, "out_indices"),
        ({"ratio": 0}, "ratio"),
        ({"dw_size": 4}, "dw_size"),
    ],
)
def test_bad_model_arguments(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        GhostNet(**kwargs)


def test_named_models_fix_their_width():
    with pytest.raises(ValueError, match="fix their width"):
        create_model("ghostnet_100", width=2.0)


@pytest.mark.parametrize("name,features_only", [("ghostnet_050", False), ("ghostnet_100", True)])
def test_torch_export_round_trip(tmp_path, name, features_only):
    model = (
        create_model(name, num_classes=10, features_only=features_only).eval()
        if not features_only
        else (create_model(name, features_only=True, out_indices=(2, 3, 4)).eval())
    )
    x = torch.randn(2, 3, 64, 64)
    ep = torch.export.export(model, (x,))
    path = tmp_path / "model.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path).module()
    with torch.no_grad():
        ref, out = model(x), loaded(x)
    if features_only:
        for a, b in zip(ref, out):
            torch.testing.assert_close(a, b)
    else:
        torch.testing.assert_close(ref, out)


@pytest.mark.parametrize("name", NAMED)
def test_timm_state_dict_loads_strictly_with_identical_logits(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model(name).eval()
    # Give BN non-trivial statistics so the comparison covers every buffer.
    for m in theirs.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = create_model(name).eval()
    sd = theirs.state_dict()
    assert set(sd) == set(ours.state_dict())
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-5)


def test_full_model_forward_intermediates_gives_all_five_levels():
    model = create_model("ghostnet_100").eval()
    x = torch.randn(1, 3, 64, 64)
    feats = model.forward_intermediates(x)  # raised AttributeError on the full model
    assert [f.shape[1] for f in feats] == [info["num_chs"] for info in model.feature_info]
    assert [64 // f.shape[-1] for f in feats] == [2, 4, 8, 16, 32]
    backbone = create_model("ghostnet_100", features_only=True)
    backbone.load_state_dict(model.state_dict(), strict=False)
    for a, b in zip(feats, backbone.eval()(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_reset_classifier_builds_the_head_where_the_model_lives(device):
    model = create_model("ghostnet_050").to(device=device, dtype=torch.float64)
    model.reset_classifier(7)  # was always a float32 head on the CPU
    assert model.classifier.weight.device.type == device and model.classifier.weight.dtype == torch.float64
    assert model.classifier.out_features == 7


def test_docstring_figures_are_the_profilers():
    import re

    from ghostnet.analysis.profile import profile_model
    from ghostnet.models import model_entry

    for name in MODELS:
        entry = model_entry(name)
        stated = re.search(r"([\d.]+)M params, ([\d.]+)M MACs", entry.description)
        if stated is None:
            continue
        size = entry.default_cfg.get("input_size", 224)
        p = profile_model(create_model(name), (size, size))
        places = len(stated.group(1).split(".")[1])
        assert stated.group(1) == f"{p.params / 1e6:.{places}f}", name
        assert stated.group(2) == f"{p.macs / 1e6:.{len(stated.group(2).split('.')[1])}f}", name


def test_a_keyword_the_model_does_not_take_is_a_value_error():
    with pytest.raises(ValueError, match="model 'resnet56' does not take 'width'"):
        create_model("resnet56", width=2.0)
    assert create_model("resnet56", drop_rate=0.2).dropout.p == 0.2


def test_detector_builders_take_the_declared_options():
    import dataclasses
    import inspect

    from ghostnet.tasks.detect.models import DetectorOptions, fasterrcnn_ghostnet, retinanet_ghostnet

    options = {f.name: f for f in dataclasses.fields(DetectorOptions)}
    for builder in (retinanet_ghostnet, fasterrcnn_ghostnet):
        params = inspect.signature(builder).parameters
        for name, f in options.items():
            if name == "rois_per_image" and builder is retinanet_ghostnet:
                continue
            default = f.default_factory() if callable(f.default_factory) else f.default
            assert name in params, f"{builder.__name__} lacks {name}"
            expected = tuple(default) if isinstance(default, list) else default
            assert params[name].default == expected, f"{builder.__name__}.{name}"
            assert f.metadata.get("help"), name


def test_readme_list_models_line_is_what_list_models_returns():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith('list_models("ghostnet*")'))
    assert line.split("#", 1)[1].strip() == repr(list_models("ghostnet*"))


@pytest.mark.parametrize(
    "name,classifier", [("ghostnet_050", "classifier"), ("vgg16", "classifier.3"), ("resnet56", "fc")]
)
def test_a_checkpoint_with_other_classes_is_adopted_unless_num_classes_is_given(tmp_path, name, classifier):
    from ghostnet import save_weights

    trained = create_model(name, num_classes=7)
    save_weights(trained, tmp_path / "w.pth")
    model = create_model(name, checkpoint_path=str(tmp_path / "w.pth"))  # was: the default head, random, silently
    head = model.get_submodule(classifier)
    assert head.out_features == 7
    torch.testing.assert_close(head.weight, trained.get_submodule(classifier).weight)
    finetune = create_model(name, num_classes=3, checkpoint_path=str(tmp_path / "w.pth"))
    assert finetune.get_submodule(classifier).out_features == 3  # asked for: a new head, the rest loaded


def test_a_width_that_cannot_fit_in_memory_is_refused_before_building(capsys):
    from ghostnet.cli import main

    with pytest.raises(ValueError, match=r"width must be in \(0, 10\]"):
        create_model("ghostnet", width=1e9)
    with pytest.raises(SystemExit) as e:
        main(["profile", "ghostnet", "--width", "1e9"])
    assert e.value.code == 2 and "width must be in" in capsys.readouterr().err
