"""`ghost_deploy_form`: Ghost modules without the concat, exact for every registered model and in ONNX Runtime."""

import pytest
import torch
from torch import nn

from ghostnet.bench.models import as_trained
from ghostnet.deploy.export import export_model, onnx_session
from ghostnet.models import create_model, list_models, model_entry
from ghostnet.models.registry import IMAGE_TASKS
from ghostnet.nn import GhostBottleneck, GhostModule, GhostModuleV2, SqueezeExcite, fuse_bn
from ghostnet.nn.ghost_deploy import GhostDeploy, ghost_deploy_form

EXPORTED = ["ghost_resnet56", "ghostnet_100", "ghostnetv2_100", "ghostnetv3_050", "ghostfacenet_v1"]

# One model per kind in the default run (CIFAR pair, V1 bottlenecks, folded V3); every registered model (V2's DFC
# gates, face models' PReLUs at 112x112, all widths) under `pytest -m slow`: minutes on a 2-core machine.
FAST = ["ghost_resnet56", "ghost_vgg16", "ghostnet_small_050", "ghostnetv3_050", "resnet56"]
MODELS = [pytest.param(n, marks=[] if n in FAST else pytest.mark.slow) for n in list_models(task=IMAGE_TASKS)]
EXPORTS = [pytest.param(n, marks=[] if n == "ghost_resnet56" else pytest.mark.slow) for n in EXPORTED]


def _size(name: str) -> int:
    """The model's own input size where it has one (CIFAR 32, faces 112), else a small 64 for speed."""
    return int(model_entry(name).default_cfg.get("input_size", 64))


def _trained(model: nn.Module, in_chans: int, size: int) -> nn.Module:
    """`model` in eval mode with BN statistics measured on random batches (`as_trained` for other inputs)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(4, in_chans, size, size))
    return model.eval()


def _close(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return float((out - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("name", MODELS)
def test_every_registered_model_is_exact(name):
    torch.manual_seed(0)
    size = _size(name)
    model = as_trained(create_model(name), size)
    deployed = ghost_deploy_form(model)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref, out = model(x), deployed(x)
    assert out.shape == ref.shape
    assert _close(out, ref)
    assert torch.equal(out.argmax(1), ref.argmax(1))
    rewritten = sum(isinstance(m, GhostDeploy) for m in deployed.modules())
    assert rewritten == deployed.ghost_deploy_modules
    has_ghosts = any(isinstance(m, GhostModule) or "Ghost" in type(m).__name__ for m in model.modules())
    assert (rewritten > 0) == (has_ghosts and name not in ("resnet56", "vgg16"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())


@pytest.mark.parametrize("name", EXPORTS)
def test_onnx_export_of_the_rewritten_model_keeps_parity(name, tmp_path):
    torch.manual_seed(0)
    size = _size(name)
    model = as_trained(create_model(name), size)
    deployed = ghost_deploy_form(model)
    report = export_model(deployed, tmp_path / "m.onnx", "onnx", (size, size), dynamic_batch=True)
    assert report.max_abs_diff <= 1e-4 * 10
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        ref = model(x)
    (out,) = onnx_session(tmp_path / "m.onnx", 1).run(None, {"input": x.numpy()})
    assert _close(torch.from_numpy(out), ref)
    assert torch.equal(torch.from_numpy(out).argmax(1), ref.argmax(1))


def test_ghost_resnet56_rewrites_the_modules_inside_each_block_only():
    model = as_trained(create_model("ghost_resnet56"), 32)
    deployed = ghost_deploy_form(model)
    block = deployed.layer2[3]
    assert isinstance(block.conv1, GhostDeploy)  # read by ReLU then conv2: takes the interleaved order
    assert isinstance(block.conv2, GhostModule)  # joins the residual add: keeps its order
    assert deployed.ghost_deploy_modules == 27  # one per basic block
    assert block.conv2.primary_conv[0].in_channels == 32  # 16 intrinsic maps x 2, interleaved
    assert isinstance(model.layer2[3].conv1, GhostModule)  # the original is untouched


def test_bottleneck_permutes_its_strided_dw_conv_and_se():
    torch.manual_seed(0)
    block = nn.Sequential(GhostBottleneck(8, 24, 16, stride=2, se_ratio=0.25), nn.ReLU())
    block = _trained(block, 8, 16)
    deployed = ghost_deploy_form(block)
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        assert _close(deployed(x), block(x))
    assert isinstance(deployed[0].ghost1, GhostDeploy)
    assert isinstance(deployed[0].se, SqueezeExcite)
    dw = fuse_bn(block)[0].conv_dw.weight
    # interleaved channel 1 is the first intrinsic map's ghost, channel m = 12 of the concat; channel 2 is map 1
    assert torch.equal(deployed[0].conv_dw.weight[1], dw[12]) and torch.equal(deployed[0].conv_dw.weight[2], dw[1])


def test_trimmed_module_with_prelu_and_gate_is_exact():
    torch.manual_seed(0)
    # 7 outputs from 4 intrinsic maps x 2: the eighth map is computed, then given zero weights downstream
    model = nn.Sequential(
        GhostModuleV2(3, 7, relu=True),
        nn.PReLU(7),
        nn.Conv2d(7, 7, 3, padding=1, groups=7),
        GhostModule(7, 5, kernel_size=3, relu=False),
        nn.Conv2d(5, 4, 1),
    )
    model = as_trained(model, 16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    deployed = ghost_deploy_form(model)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert _close(deployed(x), model(x))
    assert [type(m).__name__ for m in deployed] == ["GhostDeploy", "PReLU", "Conv2d", "GhostDeploy", "Conv2d"]
    assert deployed[1].weight.numel() == 8 and deployed[2].groups == 8
    assert deployed[2].weight[7].abs().sum() == 0  # the trimmed channel's weights are zero


def test_a_module_whose_output_leaves_the_model_is_kept():
    model = nn.Sequential(GhostModule(3, 8, relu=True), nn.ReLU()).eval()
    deployed = ghost_deploy_form(model)
    assert isinstance(deployed[0], GhostModule) and deployed.ghost_deploy_modules == 0


def test_training_mode_and_untraceable_models_are_refused():
    with pytest.raises(ValueError, match="eval mode"):
        ghost_deploy_form(create_model("ghost_resnet56").train())

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="torch.fx"):
        ghost_deploy_form(Branchy().eval())


def test_an_already_fused_model_is_copied_not_refolded():
    model = as_trained(create_model("ghost_vgg16"), 32)
    fused = fuse_bn(model)
    deployed = ghost_deploy_form(fused)
    assert not any(isinstance(m, GhostDeploy) for m in fused.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert _close(deployed(x), fused(x))
