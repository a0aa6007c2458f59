"""GhostNetV2 (DFC attention) and GhostNetV3 (re-parameterisable branches): shapes, folding, complexity, weights."""

import pytest
import torch

from ghostnet import create_model, list_models, load_weights, save_weights
from ghostnet.analysis import profile_model
from ghostnet.models.checkpoint import CheckpointError
from ghostnet.nn import DFCAttention, GhostBottleneckV3, GhostModuleV3, fuse_bn, reparameterize

V2 = ["ghostnetv2_100", "ghostnetv2_130", "ghostnetv2_160"]
V3 = ["ghostnetv3_050", "ghostnetv3_100", "ghostnetv3_130", "ghostnetv3_160"]


def _calibrated(model: torch.nn.Module, size: int = 64) -> torch.nn.Module:
    """`model` in eval mode with BN statistics measured on random batches, so activations stay O(1)."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, size, size))
    return model.eval()


def _real_images(size: int = 64) -> torch.Tensor:
    from sklearn.datasets import load_sample_images

    photos = torch.stack(
        [torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255 for im in load_sample_images().images]
    )
    return torch.nn.functional.interpolate(photos, size=(size, size), mode="bilinear", antialias=True)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_the_family_is_registered():
    assert set(V2 + V3 + ["ghostnetv2", "ghostnetv3"]) <= set(list_models("ghostnetv*"))
    with pytest.raises(ValueError, match="fix their width"):
        create_model("ghostnetv3_100", width=2.0)
    with pytest.raises(ValueError, match="folded applies to version 'v3'"):
        create_model("ghostnetv2_100", folded=True)


@pytest.mark.parametrize("name", ["ghostnetv2_100", "ghostnetv3_050"])
def test_model_contract(name):
    model = create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 2, 2)
    assert model.forward_head(feats).shape == (2, 10)
    backbone = create_model(name, features_only=True, out_indices=(2, 3, 4)).eval()
    maps = backbone(x)
    assert [m.shape[1] for m in maps] == [f["num_chs"] for f in backbone.feature_info]
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    model.train()(x).sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_dfc_attention_is_a_gate_in_0_1_and_sits_on_layers_2_to_15():
    gate = DFCAttention(8, 16)
    g = gate(torch.randn(2, 8, 15, 11))
    assert g.shape == (2, 16, 15, 11) and 0 <= g.min() and g.max() <= 1
    for name in ("ghostnetv2_100", "ghostnetv3_100"):
        blocks = [b for stage in create_model(name).blocks[:9] for b in stage]
        gated = [getattr(b.ghost1, "short_conv", None) is not None for b in blocks]
        assert gated == [False, False] + [True] * 14
        assert all(getattr(b.ghost2, "short_conv", None) is None for b in blocks)


@pytest.mark.parametrize("name", ["ghostnetv3_100", "ghostnetv3_130"])
def test_the_folded_model_costs_what_ghostnet_v2_costs(name):
    """Params and MACs of every V2/V3 model are in tests/golden.py (checked by test_profile.py)."""
    folded = profile_model(create_model(name).eval().reparameterize(), (224, 224))
    v2 = profile_model(create_model(name.replace("v3", "v2")), (224, 224))
    assert folded.macs == v2.macs and abs(folded.params - v2.params) < 0.002 * v2.params  # BN affine weights aside


def test_profile_rows_name_the_dfc_and_the_branches():
    rows = {r.name for r in profile_model(create_model("ghostnetv3_050"), (64, 64)).layers}
    assert "blocks.2.0.ghost1.short_conv.0" in rows
    assert {"blocks.1.0.ghost1.primary_rpr_conv.2.conv", "blocks.1.0.ghost1.cheap_rpr_scale.conv"} <= rows
    assert "blocks.1.0.dw_rpr_conv.0.conv" in rows and "blocks.1.0.ghost1.cheap_rpr_skip" in rows


@pytest.mark.parametrize("name", ["ghostnetv3_050", "ghostnetv3_100"])
def test_folding_is_exact_idempotent_and_eval_only(name):
    model = _calibrated(create_model(name))
    folded = reparameterize(model)
    assert folded.folded and not model.folded  # a copy: the training form is kept
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and "rpr" in n for n, m in folded.named_modules())
    with torch.no_grad():
        for x in (torch.randn(3, 3, 64, 64), _real_images()):
            assert _rel(folded(x), model(x)) < 1e-5
        again = reparameterize(folded)
        assert torch.equal(again(x), folded(x))
    with pytest.raises(ValueError, match="eval mode"):
        reparameterize(create_model(name).train())


def test_blocks_fold_on_their_own():
    torch.manual_seed(0)
    for block, x in (
        (GhostModuleV3(8, 16, attention=True), torch.randn(2, 8, 12, 12)),
        (GhostModuleV3(8, 8, kernel_size=3), torch.randn(2, 8, 12, 12)),  # with the 1x1 scale and identity branches
        (GhostBottleneckV3(8, 24, 16, 5, 2, 0.25), torch.randn(2, 8, 12, 12)),
    ):
        block = _calibrated_block(block, x)
        with torch.no_grad():
            ref = block(x)
            block.reparameterize()
            assert block.folded and _rel(block(x), ref) < 1e-5


def _calibrated_block(block: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    block.train()
    with torch.no_grad():
        block(torch.randn_like(x))
    return block.eval()


@pytest.mark.parametrize("name", ["ghostnetv2_100", "ghostnetv3_100"])
def test_fuse_and_export_take_v2_and_v3(tmp_path, name):
    pytest.importorskip("onnxruntime")
    from ghostnet.deploy import export_model

    model = _calibrated(create_model(name))
    fused = fuse_bn(model)  # V3: folds the branches first
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel(fused(x), model(x)) < 1e-5
    report = export_model(fused, tmp_path / "m.onnx", "onnx", input_size=(64, 64))
    assert report.max_abs_diff < 1e-4


def test_training_and_folded_checkpoints_convert_or_say_what_to_do(tmp_path):
    trained = _calibrated(create_model("ghostnetv3_050", num_classes=10))
    save_weights(trained, tmp_path / "train.pth")
    folded = create_model("ghostnetv3_050", num_classes=10, folded=True).eval()
    load_weights(folded, tmp_path / "train.pth")  # training form into the folded model: folded on the way in
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert _rel(folded(x), trained(x)) < 1e-5
    save_weights(trained.reparameterize(), tmp_path / "folded.pth")
    with pytest.raises(CheckpointError, match=r"folded \(inference\) form.*folded=True"):
        load_weights(create_model("ghostnetv3_050", num_classes=10), tmp_path / "folded.pth")
    again = create_model("ghostnetv3_050", folded=True, checkpoint_path=str(tmp_path / "folded.pth")).eval()
    with torch.no_grad():
        assert _rel(again(x), trained(x)) < 1e-5


def test_a_v1_checkpoint_in_a_v2_model_names_the_missing_dfc_keys(tmp_path):
    save_weights(create_model("ghostnet_100"), tmp_path / "v1.pth", "ghostnet_100", dict())
    with pytest.raises(CheckpointError) as e:
        load_weights(create_model("ghostnetv2_100"), tmp_path / "v1.pth")
    message = str(e.value)
    assert "\n" not in message and "missing key(s)" in message and "short_conv" in message


def test_official_v2_files_carry_thop_counters_that_are_dropped():
    model = create_model("ghostnetv2_100")
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd.update({"total_ops": torch.zeros(1), "blocks.0.0.ghost1.total_params": torch.zeros(1)})
    load_weights(model, {"state_dict": {f"module.{k}": v for k, v in sd.items()}})


timm = pytest.importorskip("timm", reason="timm is the parity reference")


@pytest.mark.parametrize("name", V2 + V3)
def test_logits_equal_timm_with_the_same_weights(name):
    theirs = _calibrated(timm.create_model(name))
    ours = create_model(name).eval()
    load_weights(ours, theirs.state_dict())  # timm's V3 spells a branch's BN ".bn1": renamed on the way in
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() <= 1e-4
        if name in V3:
            from timm.utils.model import reparameterize_model

            their_folded = reparameterize_model(theirs)
            our_folded = create_model(name, folded=True).eval()
            load_weights(our_folded, their_folded.state_dict())  # timm's folded checkpoints load as they are
            assert (our_folded(x) - their_folded(x)).abs().max() <= 1e-4
            assert (ours.reparameterize()(x) - their_folded(x)).abs().max() <= 1e-4
