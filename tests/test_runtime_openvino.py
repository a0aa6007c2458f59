"""The OpenVINO runtime (`ghostnet.deploy.runtimes.openvino`): IR conversion, parity with PyTorch on real
photographs, NNCF int8, threads and refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("openvino")
pytest.importorskip("nncf")

from ghostnet.bench.models import as_trained  # noqa: E402
from ghostnet.data import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ghostnet.deploy.runtime_export import float32_noise  # noqa: E402
from ghostnet.deploy.runtimes import openvino as ov_runtime  # noqa: E402
from ghostnet.models import create_model  # noqa: E402
from ghostnet.nn.blocks import GhostModule  # noqa: E402
from ghostnet.nn.rep import reparameterize  # noqa: E402
from ghostnet.nn.surgery import fuse_bn  # noqa: E402


def photos(n: int, size: int, seed: int = 0, in_chans: int = 3) -> torch.Tensor:
    """`n` crops of scikit-learn's two photographs at `size`, ImageNet-normalised: (n, C, size, size)."""
    from ghostnet.data.synth import random_background, sample_backgrounds

    pics, rng = sample_backgrounds(), np.random.default_rng(seed)
    x = torch.stack([torch.from_numpy(random_background(pics, size, rng).copy()) for _ in range(n)]).permute(0, 3, 1, 2)
    x = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return x.mean(1, keepdim=True) if in_chans == 1 else x


def as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


@torch.no_grad()
def check_parity(model: nn.Module, size: int | tuple[int, int], tmp_path, n: int = 2, in_chans: int = 3) -> list[str]:
    """Convert `model` for (1, C, size) in float32, run the IR on `n` photographs and assert it matches PyTorch
    to 1e-4 (relative where outputs exceed 1) or within float32 rounding of the float64 answer; the notes."""
    hw = (size, size) if isinstance(size, int) else size
    x = photos(n, max(hw), seed=1, in_chans=in_chans)[..., : hw[0], : hw[1]].contiguous()
    path = tmp_path / "model.xml"
    ov_runtime.convert(model, x[:1], path, None)
    run = ov_runtime.load(path, 1)
    for img in x:
        refs, outs = as_list(model(img[None])), run(img[None].numpy())
        assert len(outs) == len(refs)
        for ref, out in zip(refs, outs):
            assert out.dtype == np.float32 and out.shape == tuple(ref.shape)
        close = all(
            float((torch.from_numpy(out) - ref).abs().max()) <= 1e-4 * max(1.0, float(ref.abs().max()))
            for ref, out in zip(refs, outs)
        )
        assert close or float32_noise(model, img, [torch.from_numpy(o) for o in outs], 1e-4)
    return ov_runtime.notes(path)


def folded(name: str, size: int, **kwargs) -> nn.Module:
    """A registered model with trained-like BN statistics, in its inference form (V3 folded, then BN fused)."""
    torch.manual_seed(0)
    model = as_trained(create_model(name, **kwargs), size)
    return fuse_bn(reparameterize(model) if name.startswith("ghostnetv3") else model)


@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"])
def test_fp32_ir_matches_pytorch_on_photographs(name, tmp_path):
    model = folded(name, 64)
    notes = check_parity(model, 64, tmp_path)
    assert notes[0].startswith("input 1x3x64x64 f32")
    assert notes[1].endswith(" conv/matmul)") and notes[1].startswith("weights fp32 (") and "," not in notes[1]
    # the .bin holds the parameters in 4 bytes each: save_model's default fp16 compression would halve it
    params = sum(p.numel() for p in model.parameters())
    assert ov_runtime.files(tmp_path / "model.xml") == [tmp_path / "model.xml", tmp_path / "model.bin"]
    assert (tmp_path / "model.bin").stat().st_size >= 3 * params


class TinyDigitNet(nn.Sequential):
    """conv 3x3 + BN + ReLU, Ghost module (stride 2), global pool, linear: a model that trains in seconds."""

    def __init__(self) -> None:
        super().__init__(
            nn.Conv2d(1, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            GhostModule(16, 32, kernel_size=3, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )


@pytest.fixture(scope="module")
def digits():
    """A TinyDigitNet trained for a few steps on scikit-learn's real handwritten digits (16x16), BN fused, and
    the normalised (train, test) images and test labels."""
    from ghostnet.data.digits import load_digits

    train, test, _ = load_digits(16)
    torch.manual_seed(0)
    model, norm = TinyDigitNet(), lambda u: (u.float() / 255 - 0.3) / 0.4
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(len(train), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(norm(train.images[idx])), train.labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return fuse_bn(model.eval()), norm(train.images[:48]), norm(test.images[:200]), test.labels[:200]


@pytest.fixture(scope="module")
def digits_fp32(digits, tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "digits.xml"
    with torch.no_grad():
        ov_runtime.convert(digits[0], digits[2][:1], path, None)
    return path


def outputs(run, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([run(img[None].numpy())[0] for img in x]))


@torch.no_grad()
def test_int8_ir_holds_int8_and_agrees_with_fp32(digits, digits_fp32, tmp_path):
    model, calib, x, labels = digits
    path = tmp_path / "digits.int8.xml"
    ov_runtime.convert(model, x[:1], path, [img[None] for img in calib])

    import openvino as ov

    ir = ov.Core().read_model(str(path))
    kinds = [op.get_type_name() for op in ir.get_ops()]
    assert kinds.count("FakeQuantize") >= 3  # the input of each conv and the linear layer
    assert ov_runtime.weight_types(ir) == ["i8"] * 4  # conv, Ghost primary and cheap convs, linear
    assert ov_runtime.weight_types(ov.Core().read_model(str(digits_fp32))) == ["f32"] * 4
    assert (
        ov_runtime.notes(path)[1]
        == f"int8: {kinds.count('FakeQuantize')} FakeQuantize nodes, 4 conv/matmul weights int8, 0 kept fp32"
    )
    assert (tmp_path / "digits.int8.bin").stat().st_size < (digits_fp32.with_suffix(".bin")).stat().st_size / 2

    ref, fp32 = model(x), outputs(ov_runtime.load(digits_fp32, None), x)
    int8 = outputs(ov_runtime.load(path, None), x)
    assert (fp32 - ref).abs().max() <= 1e-4 * max(1.0, float(ref.abs().max()))
    assert (ref.argmax(1) == labels).float().mean() >= 0.8  # the model did learn
    assert (int8.argmax(1) == ref.argmax(1)).float().mean() >= 0.95
    assert not torch.equal(int8, fp32)  # really quantized


@torch.no_grad()
def test_a_batched_ir_takes_exactly_its_batch(digits, tmp_path):
    model, calib, x, _ = digits
    path = tmp_path / "b.xml"
    ov_runtime.convert(model, x[:5], path, [img[None] for img in calib])  # int8 at batch 5
    assert ov_runtime.notes(path)[0].startswith("input 5x1x16x16 f32")
    out = ov_runtime.load(path, 1)(x[:5].numpy())
    assert len(out) == 1 and out[0].shape == (5, 10)
    assert (torch.from_numpy(out[0]).argmax(1) == model(x[:5]).argmax(1)).float().mean() >= 0.8
    with pytest.raises(ValueError, match=r"b.xml takes inputs of shape \(5, 1, 16, 16\); got \(1, 1, 16, 16\)"):
        ov_runtime.load(path, 1)(x[:1].numpy())


def test_threads_are_pinned(digits_fp32):
    assert ov_runtime.compile_ir(digits_fp32, 1).get_property("INFERENCE_NUM_THREADS") == 1
    assert ov_runtime.compile_ir(digits_fp32, 2).get_property("INFERENCE_NUM_THREADS") == 2
    import openvino as ov

    assert ov_runtime.compile_ir(digits_fp32, None).get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    with pytest.raises(ValueError, match="threads must be at least 1"):
        ov_runtime.load(digits_fp32, 0)


class DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:  # a branch torch.jit.trace would silently bake in
            return x * 2
        return x - 1


class Bessel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)


@pytest.mark.parametrize(
    "model, message",
    [
        (DataDependent(), r"data-dependent control flow at test_runtime_openvino.py:\d+: if x.mean\(\) > 0:"),
        (Bessel(), r"aten.special_bessel_j0.default is not supported \(no OpenVINO conversion rule\)"),
    ],
)
def test_a_model_openvino_cannot_take_is_one_line(model, message, tmp_path):
    with pytest.raises(ValueError, match="^openvino cannot convert this model: " + message) as info:
        ov_runtime.convert(model, torch.randn(1, 3, 8, 8), tmp_path / "m.xml", None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.xml").exists()


# ---- every model family (slow) ----------------------------------------------------------------------------------


def _classifiers() -> list[str]:
    from ghostnet.models import list_models
    from ghostnet.models.registry import IMAGE_TASKS

    return list_models(task=IMAGE_TASKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", _classifiers())
def test_every_registered_model_converts(name, tmp_path):
    from ghostnet.models import model_entry

    size = model_entry(name).default_cfg.get("input_size", 64)
    size = 64 if size == 224 else size  # ImageNet models at 64x64; CIFAR at 32, face models at 112
    notes = check_parity(folded(name, size), size, tmp_path, n=1)
    assert notes[1].startswith("weights fp32")


@pytest.mark.slow
def test_a_ghostified_torchvision_model_converts(tmp_path):
    from torchvision.models import resnet18

    from ghostnet.nn import ghostify

    model = as_trained(ghostify(resnet18(num_classes=10)), 64)
    check_parity(fuse_bn(model), 64, tmp_path, n=1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lraspp_ghostnet_100", "deeplabv3_ghostnet_100"])
def test_segmenter_logits_convert(name, tmp_path):
    from ghostnet.models import create_model
    from ghostnet.nn.surgery import SegmentationLogits

    model = as_trained(create_model(name, num_classes=5), 96).eval()
    check_parity(SegmentationLogits(model).eval(), 96, tmp_path, n=1)


@pytest.mark.slow
def test_a_detection_backbone_converts_with_every_output(tmp_path):
    model = folded("ghostnet_100", 96, features_only=True)
    check_parity(model, 96, tmp_path, n=1)
    assert len(ov_runtime.load(tmp_path / "model.xml", 1)(np.zeros((1, 3, 96, 96), np.float32))) == 5
