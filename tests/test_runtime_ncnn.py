"""The ncnn runtime (`ghostnet.deploy.runtimes.ncnn`, converted by pnnx): float32 files agree with PyTorch on real
photographs, hold fp32 weights and run in fp32, give every output in order with its batch axis, run a batch image
by image, and refuse what they cannot do in one line."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ncnn")
pytest.importorskip("pnnx")

from ghostnet.bench.models import as_trained  # noqa: E402
from ghostnet.deploy.runtime_export import export_to_runtime, float32_noise, sample_photos  # noqa: E402
from ghostnet.deploy.runtimes import RUNTIMES, convert_quietly  # noqa: E402
from ghostnet.deploy.runtimes import ncnn as ncnn_runtime  # noqa: E402
from ghostnet.models import create_model, model_entry  # noqa: E402
from ghostnet.nn.rep import reparameterize  # noqa: E402
from ghostnet.nn.surgery import fuse_bn  # noqa: E402
from runtime_cases import DataDependent, ThreeHeads, assert_refused_in_one_line  # noqa: E402

SIZE = 64


def inference_form(name: str, size: int, **kwargs) -> nn.Module:
    """A registered model with realistic BN statistics, V3 branches folded, BN folded: what the export receives."""
    torch.manual_seed(0)
    return fuse_bn(reparameterize(as_trained(create_model(name, **kwargs), size)))


def outputs(y) -> list[torch.Tensor]:
    return list(y) if isinstance(y, (list, tuple)) else [y]


@torch.no_grad()
def assert_matches_pytorch(model: nn.Module, path: Path, images: torch.Tensor) -> list[np.ndarray]:
    """`model` converted for ncnn at `path` gives PyTorch's outputs (count, order, shapes) on each of `images`,
    within 1e-4 (relative above 1) or within float32 rounding of the float64 answer; the outputs of the last."""
    convert_quietly(ncnn_runtime, model, images[:1], path, None)
    run = ncnn_runtime.load(path, 1)
    for image in images.split(1):
        expected, got = outputs(model(image)), run(image.numpy())
        assert [g.shape for g in got] == [tuple(e.shape) for e in expected]
        assert all(g.dtype == np.float32 for g in got)
        close = all(np.abs(g - e.numpy()).max() <= 1e-4 * max(1.0, float(e.abs().max())) for g, e in zip(got, expected))
        assert close or float32_noise(model, image[0], [torch.from_numpy(g) for g in got], 1e-4), path.name
    return got


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    return sample_photos(6, (SIZE, SIZE))


@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"])
def test_float32_matches_pytorch_on_photographs(name, photos, tmp_path):
    path = tmp_path / f"{name}.ncnn.param"
    assert_matches_pytorch(inference_form(name, SIZE), path, photos[:3])
    assert ncnn_runtime.files(path) == [path, path.with_suffix(".bin")]
    said = ncnn_runtime.notes(path)
    assert said[0].startswith(f"input 3x{SIZE}x{SIZE} per image")
    assert said[1] == "weights fp32, run with fp16/bf16 storage and arithmetic off"
    assert "ConvolutionDepthWise" in said[2]  # the cheap operations, as ncnn's own depthwise layer


def test_weights_are_stored_in_fp32(tmp_path, photos):
    # pnnx's default stores fp16 weights (errors near 1e-3): the .bin must hold 4 bytes per parameter
    model = inference_form("ghostnet_050", SIZE)
    path = tmp_path / "g.ncnn.param"
    convert_quietly(ncnn_runtime, model, photos[:1], path, None)
    params = sum(p.numel() for p in model.parameters())
    assert path.with_suffix(".bin").stat().st_size >= 4 * params


def test_outputs_come_in_the_models_order_with_their_batch_axis(photos, tmp_path):
    torch.manual_seed(0)
    got = assert_matches_pytorch(ThreeHeads().eval(), tmp_path / "heads.ncnn.param", photos[:2])
    assert [g.shape for g in got] == [(1, 8), (1, 8, 32, 32), (1, 3, 64, 64)]


def test_a_list_of_feature_maps_becomes_one_output_each(photos, tmp_path):
    model = inference_form("ghostnet_050", SIZE, features_only=True)  # returns a list, which pnnx cannot take
    got = assert_matches_pytorch(model, tmp_path / "features.ncnn.param", photos[:1])
    assert len(got) == 5  # every level, stride 2 to 32


def test_a_batch_runs_image_by_image_and_other_shapes_are_refused(photos, tmp_path):
    model = inference_form("ghostnet_050", SIZE)
    path = tmp_path / "g.ncnn.param"
    convert_quietly(ncnn_runtime, model, photos[:1], path, None)
    run = ncnn_runtime.load(path, 1)
    (batch,) = run(photos[:4].numpy())
    assert batch.shape == (4, 1000)
    for i in range(4):
        np.testing.assert_array_equal(batch[i : i + 1], run(photos[i : i + 1].numpy())[0])
    with pytest.raises(ValueError, match=r"takes inputs of shape \(N, 3, 64, 64\); got \(1, 3, 32, 32\)"):
        run(np.zeros((1, 3, 32, 32), np.float32))


def test_a_file_that_is_not_an_ncnn_graph_is_refused_in_one_line(tmp_path):
    path = tmp_path / "m.ncnn.param"
    path.write_text("<?xml version='1.0'?>\n<net/>\n")  # e.g. an OpenVINO IR given the wrong name
    with pytest.raises(ValueError, match=r"^m\.ncnn\.param is not an ncnn \.param file"):
        ncnn_runtime.load(path, 1)


def test_threads_give_the_same_outputs_and_bad_counts_are_refused(photos, tmp_path):
    path = tmp_path / "g.ncnn.param"
    convert_quietly(ncnn_runtime, inference_form("ghostnet_050", SIZE), photos[:1], path, None)
    x = photos[:1].numpy()
    one, two = ncnn_runtime.load(path, 1)(x)[0], ncnn_runtime.load(path, 2)(x)[0]
    np.testing.assert_allclose(one, two, atol=1e-5)
    with pytest.raises(ValueError, match="threads must be at least 1"):
        ncnn_runtime.load(path, 0)


class TopK(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.topk(x, 2, dim=-1)[0]  # pnnx has no ncnn layer for it


@pytest.mark.parametrize(
    "model, names", [(DataDependent(), "data-dependent control flow"), (TopK(), "no ncnn layer for torch.topk (x1)")]
)
def test_a_model_ncnn_cannot_take_is_one_line_naming_the_construct(model, names, tmp_path):
    assert_refused_in_one_line(
        ncnn_runtime.convert, model, tmp_path / "m.ncnn.param", "ncnn cannot convert this model: ", names
    )


def test_int8_is_refused_saying_which_tools_it_needs(tmp_path, photos):
    assert not RUNTIMES["ncnn"].int8
    with pytest.raises(ValueError, match="ncnn2table and ncnn2int8"):
        ncnn_runtime.convert(ThreeHeads().eval(), photos[:1], tmp_path / "m.ncnn.param", list(photos[:2].split(1)))
    with pytest.raises(ValueError, match="^ncnn exports are float32 only: ncnn's int8 needs"):
        export_to_runtime(
            ThreeHeads().eval(), tmp_path / "m.ncnn.param", "ncnn", (SIZE, SIZE), calibration=[photos[:1]]
        )
    assert list(tmp_path.iterdir()) == []


def test_export_to_runtime_places_the_pair_and_reports(tmp_path):
    model = inference_form("ghostnet_050", SIZE)
    r = export_to_runtime(copy.deepcopy(model), tmp_path / "g.ncnn.param", "ncnn", (SIZE, SIZE))
    assert r.files == [str(tmp_path / "g.ncnn.param"), str(tmp_path / "g.ncnn.bin")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.ncnn.bin", "g.ncnn.param"]  # no pnnx leftovers
    assert r.precision == "fp32" and r.top1_agreement == 1.0 and r.max_abs_diff < 1e-4
    (tmp_path / "ov.bin").write_bytes(b"an OpenVINO IR's weights")
    with pytest.raises(ValueError, match=r"ncnn exports are \.ncnn\.param files; got ov\.param"):
        export_to_runtime(model, tmp_path / "ov.param", "ncnn", (SIZE, SIZE))  # would pair with ov.bin


# ---- every model family (slow) ----------------------------------------------------------------------------------


def classification_cases() -> list[tuple[str, int]]:
    from ghostnet.models import list_models
    from ghostnet.models.registry import IMAGE_TASKS

    # ImageNet models at 224x224, where the last stage is 7x7 and a DFC gate upsamples by a non-integer factor
    return [(name, int(model_entry(name).default_cfg.get("input_size", 224))) for name in list_models(task=IMAGE_TASKS)]


@pytest.mark.slow
@pytest.mark.parametrize("name, size", classification_cases())
def test_every_registered_model_matches_pytorch(name, size, tmp_path):
    assert_matches_pytorch(inference_form(name, size), tmp_path / f"{name}.ncnn.param", sample_photos(2, (size, size)))


@pytest.mark.slow
def test_a_ghostified_torchvision_model_matches_pytorch(tmp_path):
    from torchvision.models import resnet18

    from ghostnet.nn import ghostify

    torch.manual_seed(0)
    model = fuse_bn(as_trained(ghostify(resnet18(num_classes=10)), SIZE))
    assert_matches_pytorch(model, tmp_path / "ghost_resnet18.ncnn.param", sample_photos(2, (SIZE, SIZE), seed=2))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lraspp_ghostnet_100", "deeplabv3_ghostnet_100"])
def test_segmentation_logits_match_pytorch(name, tmp_path):
    from ghostnet.models import create_model
    from ghostnet.nn.surgery import SegmentationLogits

    torch.manual_seed(0)
    model = fuse_bn(SegmentationLogits(as_trained(create_model(name, num_classes=5), 96)).eval())
    assert_matches_pytorch(model, tmp_path / f"{name}.ncnn.param", sample_photos(2, (96, 96), seed=3))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ghostnet_100", "ghostnetv2_100"])
def test_detection_backbone_feature_maps_match_pytorch(name, tmp_path):
    model = inference_form(name, 96, features_only=True)
    got = assert_matches_pytorch(model, tmp_path / f"{name}_features.ncnn.param", sample_photos(2, (96, 96), seed=4))
    assert len(got) == 5  # every level, stride 2 to 32
