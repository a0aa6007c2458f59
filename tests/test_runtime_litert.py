"""The LiteRT (TFLite) runtime: float32 files agree with PyTorch on real photographs, int8 files hold int8 and agree
with float32, multi-output order, threads, and refusals named in one line."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert")

from ghostnet.bench.models import as_trained  # noqa: E402
from ghostnet.data.datasets import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from ghostnet.data.synth import random_background, sample_backgrounds  # noqa: E402
from ghostnet.deploy.runtimes import litert  # noqa: E402
from ghostnet.models import create_model  # noqa: E402
from ghostnet.nn.blocks import ConvBnAct, GhostBottleneck  # noqa: E402
from ghostnet.nn.rep import reparameterize  # noqa: E402
from ghostnet.nn.surgery import fuse_bn  # noqa: E402
from runtime_cases import DataDependent, ThreeHeads, assert_refused_in_one_line  # noqa: E402

SIZE = 64


def photographs(n: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """`n` crops of scikit-learn's two photographs, ImageNet-normalised, each (1, 3, size, size) float32."""
    photos, rng = sample_backgrounds(), np.random.default_rng(seed)
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    crops = [(random_background(photos, size, rng) - mean) / std for _ in range(n)]
    return [torch.from_numpy(c.astype(np.float32)).permute(2, 0, 1)[None].contiguous() for c in crops]


def inference_form(name: str, size: int, **kwargs) -> nn.Module:
    """A registered model with realistic BN statistics, V3 branches folded, BN folded: what the export receives."""
    torch.manual_seed(0)
    model = as_trained(create_model(name, **kwargs), size)
    return fuse_bn(reparameterize(model))


def as_list(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def assert_matches_pytorch(model: nn.Module, path: Path, images: list[torch.Tensor], tol: float = 1e-4) -> None:
    """`model` converted to float32 at `path` gives PyTorch's outputs (shapes, order, values) on `images`: within
    `tol` (relative where the outputs exceed 1), or no further from the float64 result than twice PyTorch's own
    float32 error (random weights can blow a photograph's activations up to where float32 rounding shows)."""
    litert.convert(model, images[0], path, None)
    run = litert.load(path, 1)
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        for image in images:
            expected = [t.numpy() for t in as_list(model(image))]
            float64 = [t.numpy() for t in as_list(exact(image.double()))]
            got = run(image.numpy())
            assert [g.shape for g in got] == [e.shape for e in expected]
            for g, e, e64 in zip(got, expected, float64):
                assert g.dtype == np.float32
                own = float(np.abs(e - e64).max())
                allowed = max(tol * max(1.0, float(np.abs(e).max())), 2 * own)
                assert np.abs(g - e64).max() <= allowed, path.name


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    return photographs(10, SIZE)


@pytest.mark.parametrize(
    "name, delegation",
    [
        ("ghostnet_050", "every op delegated to XNNPACK"),
        ("ghostnetv2_100", "not delegated to XNNPACK: RESIZE_NEAREST_NEIGHBOR (x14)"),  # the DFC gates' upsampling
        ("ghostnetv3_050", "not delegated to XNNPACK: RESIZE_NEAREST_NEIGHBOR (x14)"),  # V3 keeps V2's DFC gates
    ],
)
def test_float32_matches_pytorch_on_photographs(name, delegation, images, tmp_path):
    model = inference_form(name, SIZE)
    path = tmp_path / f"{name}.tflite"
    assert_matches_pytorch(model, path, images[:3])
    assert litert.files(path) == [path]
    said = litert.notes(path)
    assert said[0] == "weights fp32" and len(said) == 2
    assert said[1].startswith(delegation)


def test_outputs_come_in_the_models_order_and_layout(images, tmp_path):
    torch.manual_seed(0)
    model = ThreeHeads().eval()
    path = tmp_path / "heads.tflite"
    assert_matches_pytorch(model, path, images[:2])  # shapes (1, 8), (1, 8, 32, 32), (1, 3, 64, 64) in this order


class PooledGate(nn.Module):
    """GhostNetV2's DFC gate in miniature: 2x2 average pooling, then nearest upsampling back to the input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.interpolate(F.avg_pool2d(x, 2, 2).sigmoid(), size=x.shape[-2:], mode="nearest")
        return x * gate


@pytest.mark.parametrize("size", [7, 8])
def test_nearest_upsampling_of_odd_maps_copies_pytorchs_pixels(size, tmp_path):
    x = photographs(1, 64)[0][:, :, :size, :size].contiguous()  # 7x7 -> 3x3 -> 7x7 is a non-integer factor
    path = tmp_path / "gate.tflite"
    assert_matches_pytorch(PooledGate().eval(), path, [x])
    assert litert.notes(path)[-1].endswith("GATHER_ND (x2)" if size == 7 else "RESIZE_NEAREST_NEIGHBOR (x1)")


def tiny_ghostnet(attention: bool = False) -> nn.Module:
    """Stem, two Ghost bottlenecks (one strided with squeeze-excite; with `attention`, V2's DFC gates), pooling and
    a classifier: every Ghost op."""
    torch.manual_seed(0)
    model = nn.Sequential(
        ConvBnAct(3, 16, 3, stride=2),
        GhostBottleneck(16, 32, 24, stride=2, se_ratio=0.25, attention=attention),
        GhostBottleneck(24, 48, 24, attention=attention),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 10),
    )
    return fuse_bn(as_trained(model, SIZE))


@pytest.fixture(scope="module")
def int8_file(images, tmp_path_factory) -> tuple[nn.Module, Path]:
    model = tiny_ghostnet()
    path = tmp_path_factory.mktemp("int8") / "tiny_int8.tflite"
    litert.convert(model, images[0], path, images[:8])
    return model, path


def test_int8_file_holds_int8_weights_and_agrees_with_float32(int8_file, images):
    from ai_edge_litert import schema_py_generated as schema

    model, path = int8_file
    flat = schema.ModelT.InitFromObj(schema.Model.GetRootAs(path.read_bytes(), 0))
    graph = flat.subgraphs[0]
    weighted = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    weighted.add(schema.BuiltinOperator.FULLY_CONNECTED)
    convs = [op for op in graph.operators if flat.operatorCodes[op.opcodeIndex].builtinCode in weighted]
    assert len(convs) >= 10  # stem, the Ghost modules' primary and cheap convs, shortcut, SE, classifier
    assert all(graph.tensors[op.inputs[1]].type == schema.TensorType.INT8 for op in convs)
    said = litert.notes(path)
    assert said[0].startswith(f"int8: {len(convs)} convs/linears, 0 kept fp32")
    assert_close_to_float32(model, path, images[8:])  # photographs not used for calibration


@torch.no_grad()
def assert_close_to_float32(model: nn.Module, path: Path, images: list[torch.Tensor], spread: float = 0.1) -> None:
    """The int8 file at `path` gives nearly `model`'s float32 outputs on each image: cosine above 0.98, largest
    error under `spread` of the output's largest magnitude."""
    run = litert.load(path, 1)
    for image in images:
        expected = model(image).numpy()
        (got,) = run(image.numpy())
        assert got.dtype == np.float32 and got.shape == expected.shape
        cosine = float((got * expected).sum() / (np.linalg.norm(got) * np.linalg.norm(expected)))
        assert cosine > 0.98
        assert np.abs(got - expected).max() < spread * np.abs(expected).max()


def test_threads_give_the_same_outputs_and_bad_counts_are_refused(int8_file, images):
    _, path = int8_file
    x = images[9].numpy()
    one, two, default = litert.load(path, 1)(x), litert.load(path, 2)(x), litert.load(path, None)(x)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[0], default[0])
    with pytest.raises(ValueError, match="threads must be at least 1"):
        litert.load(path, 0)


def test_a_wrong_input_shape_is_one_clear_error(int8_file):
    _, path = int8_file
    with pytest.raises(ValueError, match=r"takes inputs of shape \(1, 3, 64, 64\), got \(1, 3, 32, 32\)"):
        litert.load(path, 1)(np.zeros((1, 3, 32, 32), np.float32))


class SingularValues(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linalg.svdvals(x[0, 0])  # no TFLite lowering


@pytest.mark.parametrize(
    "model, names",
    [(DataDependent(), "if x.sum() > 0:"), (SingularValues(), "aten._linalg_svd.default is not supported")],
)
def test_a_model_the_converter_refuses_is_one_line_naming_the_construct(model, names, tmp_path):
    assert_refused_in_one_line(
        litert.convert, model, tmp_path / "m.tflite", "tflite cannot convert this model: ", names
    )


# --- every model family, slow -------------------------------------------------------------------------------------


def classification_cases() -> list[tuple[str, int]]:
    from ghostnet.models import list_models, model_entry
    from ghostnet.models.registry import IMAGE_TASKS

    # ImageNet models at 224x224, where the last stage is 7x7 and a DFC gate upsamples by a non-integer factor
    return [(name, int(model_entry(name).default_cfg.get("input_size", 224))) for name in list_models(task=IMAGE_TASKS)]


@pytest.mark.slow
@pytest.mark.parametrize("name, size", classification_cases())
def test_every_registered_model_matches_pytorch(name, size, tmp_path):
    model = inference_form(name, size)
    assert_matches_pytorch(model, tmp_path / f"{name}.tflite", photographs(2, size, seed=1))


@pytest.mark.slow
def test_ghostified_torchvision_model_matches_pytorch(tmp_path):
    from torchvision.models import mobilenet_v2

    from ghostnet.nn import ghostify

    torch.manual_seed(0)
    model = fuse_bn(as_trained(ghostify(mobilenet_v2(num_classes=10)), SIZE))
    assert_matches_pytorch(model, tmp_path / "ghost_mobilenet_v2.tflite", photographs(2, SIZE, seed=2))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lraspp_ghostnet_100", "deeplabv3_ghostnet_100"])
def test_segmentation_logits_match_pytorch(name, tmp_path):
    from ghostnet.models import create_model
    from ghostnet.nn.surgery import SegmentationLogits

    torch.manual_seed(0)
    model = fuse_bn(SegmentationLogits(as_trained(create_model(name, num_classes=5), SIZE)).eval())
    assert_matches_pytorch(model, tmp_path / f"{name}.tflite", photographs(2, SIZE, seed=3))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ghostnet_100", "ghostnetv2_100"])
def test_detection_backbone_feature_maps_match_pytorch(name, tmp_path):
    model = inference_form(name, SIZE, features_only=True)
    assert_matches_pytorch(model, tmp_path / f"{name}_features.tflite", photographs(2, SIZE, seed=4))


@pytest.mark.slow
def test_int8_batch_of_32_calibrates_on_every_image_and_runs(tmp_path):
    model = tiny_ghostnet()
    images = photographs(40, SIZE, seed=5)
    path = tmp_path / "tiny_int8_b32.tflite"
    litert.convert(model, torch.cat(images[:32]), path, images)
    batch = torch.cat(images[8:40])
    got = litert.load(path, 1)(batch.numpy())[0]
    with torch.no_grad():
        expected = model(batch).numpy()
    assert got.shape == (32, 10)
    assert (got.argmax(1) == expected.argmax(1)).mean() > 0.8


def test_the_converters_log_is_held_back_unless_it_fails(capfd, tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()).eval()
    litert.convert(model, torch.zeros(1, 3, 16, 16), tmp_path / "m.tflite", None)
    out, err = capfd.readouterr()
    assert (tmp_path / "m.tflite").exists() and "I0000" not in err and "━" not in out


def test_int8_ghostnetv2_blocks_agree_with_float32(images, tmp_path):
    model = tiny_ghostnet(attention=True)
    path = tmp_path / "tiny_v2_int8.tflite"
    litert.convert(model, images[0], path, images[:8])
    assert litert.notes(path)[0].startswith("int8: ")
    assert_close_to_float32(model, path, images[8:], spread=0.2)  # the gates' int8 sigmoid is one more rounding


def test_int8_ghostnetv2_converts_where_the_converters_own_pad_was_refused(tmp_path):
    """At 32x32 the converter refused int8 GhostNetV2 ('tfl.pad' same-scale constraint: a PAD it added for a
    strided conv's padding sat between two int8 scales); the retry with that padding as a node of its own
    converts it, and the file runs."""
    torch.manual_seed(0)
    model = fuse_bn(as_trained(create_model("ghostnetv2_100"), 32)).eval()
    images = photographs(3, 32, seed=1)
    path = tmp_path / "v2_int8.tflite"
    litert.convert(model, images[0], path, images[:2])
    assert litert.notes(path)[0].startswith("int8: ")
    (got,) = litert.load(path, 1)(images[2].numpy())
    assert got.shape == (1, 1000) and np.isfinite(got).all()


@pytest.mark.parametrize("size, stride, padding, explicit", [(8, 2, 1, True), (7, 2, 1, False), (8, 1, 1, False)])
def test_padding_that_same_cannot_express_becomes_a_node_and_changes_nothing(size, stride, padding, explicit):
    from ghostnet.deploy.runtimes.litert import _explicit_padding  # noqa: PLC2701  (the rewrite itself)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride, padding), nn.ReLU(), nn.Conv2d(4, 4, (1, 5), 1, (0, 2))).eval()
    x = torch.randn(1, 3, size, size)
    graph = torch.export.export(model, (x,)).module()
    _explicit_padding(graph)
    pads = [n for n in graph.graph.nodes if n.target == torch.ops.aten.constant_pad_nd.default]
    assert len(pads) == int(explicit)  # 8 -> 4 at stride 2: SAME pads (0, 1), PyTorch (1, 1); the 1x5 conv is SAME
    torch.testing.assert_close(graph(x), model(x), rtol=0, atol=1e-6)
