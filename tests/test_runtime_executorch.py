"""ExecuTorch (XNNPACK) runtime: fp32 parity with PyTorch on real photographs, delegation of GhostNetV2's DFC
gate, int8 that really is int8, thread pinning, the one-line refusal; the slow part covers every model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("executorch")
pytest.importorskip("torchao")

from ghostnet.bench.models import as_trained  # noqa: E402
from ghostnet.data.synth import random_background, sample_backgrounds  # noqa: E402
from ghostnet.deploy.runtime_export import float32_noise  # noqa: E402
from ghostnet.deploy.runtimes import executorch as et  # noqa: E402
from ghostnet.models import create_model, list_models, model_entry  # noqa: E402
from ghostnet.models.registry import IMAGE_TASKS
from ghostnet.nn.rep import reparameterize  # noqa: E402
from ghostnet.nn.surgery import fuse_bn  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@pytest.fixture(scope="module")
def photos():
    return sample_backgrounds()


def _images(photos, size: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """`n` normalised (1, 3, size, size) crops of the bundled photographs."""
    rng = np.random.default_rng(seed)
    crops = [(random_background(photos, size, rng) - MEAN) / STD for _ in range(n)]
    return [torch.from_numpy(np.ascontiguousarray(c.transpose(2, 0, 1), dtype=np.float32))[None] for c in crops]


def _inference_form(name: str, size: int, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    model = as_trained(create_model(name, **kwargs), size)
    return fuse_bn(reparameterize(model)).eval()


def _outputs(model: nn.Module, x: torch.Tensor) -> list[np.ndarray]:
    with torch.no_grad():
        y = model(x)
    return [t.numpy() for t in (y if isinstance(y, (list, tuple)) else [y])]


def _check_parity(model: nn.Module, path, images: list[torch.Tensor], threads: int | None = 1) -> None:
    run = et.load(path, threads)
    for x in images:
        got, want = run(x.numpy()), _outputs(model, x)
        assert len(got) == len(want)
        for g, w in zip(got, want):
            assert g.dtype == np.float32 and g.shape == w.shape
        close = all(np.abs(g - w).max() <= 1e-4 * max(1.0, float(np.abs(w).max())) for g, w in zip(got, want))
        assert close or float32_noise(model, x[0], [torch.from_numpy(g) for g in got], 1e-4)


@pytest.fixture(scope="module")
def fp32_files(tmp_path_factory, photos):
    """Three small models converted once: (model, path, images) by name."""
    out = {}
    for name in ("ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"):
        model = _inference_form(name, 64)
        path = tmp_path_factory.mktemp(name) / f"{name}.pte"
        images = _images(photos, 64, 3)
        et.convert(model, images[0], path, None)
        out[name] = (model, path, images)
    return out


@pytest.mark.parametrize("name", ["ghostnet_050", "ghostnetv2_100", "ghostnetv3_050"])
def test_fp32_matches_pytorch_on_photographs(fp32_files, name):
    model, path, images = fp32_files[name]
    _check_parity(model, path, images)
    assert et.files(path) == [path]
    assert "weights fp32" in et.notes(path)


def test_v2_dfc_gate_runs_in_xnnpack(fp32_files):
    """No avg pooling or nearest upsampling falls back to portable kernels (the only leftovers are the
    hard-sigmoid's scalar constant casts)."""
    said = et.notes(fp32_files["ghostnetv2_100"][1])
    assert said[0] == "every op delegated to XNNPACK" or (
        said[0].startswith("not delegated: ") and "upsample" not in said[0] and "pool" not in said[0]
    ), said
    assert "_to_dim_order_copy" in said[0] or said[0] == "every op delegated to XNNPACK"
    assert et.notes(fp32_files["ghostnet_050"][1])[0].startswith(("every op", "not delegated: dim_order"))


@pytest.mark.parametrize(
    ("size", "out"), [((4, 4), (8, 8)), ((3, 3), (7, 7)), ((4, 3), (7, 9)), ((2, 5), (2, 5)), ((1, 1), (2, 3))]
)
def test_nearest_copy_is_interpolate(size, out):
    x = torch.randn(2, 3, *size)
    op = torch.ops.aten.upsample_nearest2d.vec
    rows, cols = et.nearest_sources(tuple(x.shape), op, (list(out), None))
    assert torch.equal(et.nearest_copy(x, rows, cols), F.interpolate(x, size=out, mode="nearest"))


def test_threads_are_pinned(fp32_files):
    """The first program that runs sizes ExecuTorch's process-wide pool; another size later is refused, not a
    crash (this module's parity tests run at 1 thread first)."""
    model, path, images = fp32_files["ghostnet_050"]
    want = _outputs(model, images[0])[0]
    for run in (et.load(path, 1), et.load(path, None)):
        got = run(images[0].numpy())[0]
        assert et.thread_count() == 1
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))
    with pytest.raises(ValueError, match="process-wide"):
        et.load(path, 2)(images[0].numpy())
    with pytest.raises(ValueError, match="threads"):
        et.load(path, 0)


def test_int8_is_int8_and_agrees_with_fp32(tmp_path, photos, fp32_files):
    model, fp32_path, _ = fp32_files["ghostnet_050"]
    calibration = _images(photos, 64, 16, seed=1)
    path = tmp_path / "q.pte"
    et.convert(model, calibration[0], path, calibration)
    said = et.notes(path)
    int8 = next(s for s in said if s.startswith("int8: "))
    assert int(int8.split()[1]) > 50 and int8.endswith(", 0 kept fp32"), said
    assert path.stat().st_size < 0.5 * fp32_path.stat().st_size
    run = et.load(path, 1)
    test = _images(photos, 64, 8, seed=2)
    got = np.concatenate([run(x.numpy())[0] for x in test])
    want = np.concatenate([_outputs(model, x)[0] for x in test])
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() > 0.9, cosine


class _DataDependent(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2 if x.sum() > 0 else x - 1


def test_unconvertible_model_is_one_line(tmp_path):
    with pytest.raises(ValueError, match="^executorch cannot convert this model: ") as info:
        et.convert(_DataDependent().eval(), torch.randn(1, 3, 8, 8), tmp_path / "m.pte", None)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "m.pte").exists()


def _slow_cases() -> list[tuple[str, int]]:
    return [(n, model_entry(n).default_cfg.get("input_size", 64)) for n in list_models(task=IMAGE_TASKS)]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), _slow_cases())
def test_every_registered_model_fp32(tmp_path, photos, name, size):
    model = _inference_form(name, size)
    images = _images(photos, size, 2)
    et.convert(model, images[0], tmp_path / "m.pte", None)
    _check_parity(model, tmp_path / "m.pte", images)


@pytest.mark.slow
def test_ghostified_torchvision_model_fp32(tmp_path, photos):
    from torchvision.models import resnet18

    from ghostnet.nn import ghostify

    torch.manual_seed(0)
    model = fuse_bn(as_trained(ghostify(resnet18(num_classes=10)), 64))
    images = _images(photos, 64, 2)
    et.convert(model, images[0], tmp_path / "m.pte", None)
    _check_parity(model, tmp_path / "m.pte", images)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lraspp_ghostnet_100", "deeplabv3_ghostnet_100"])
def test_segmenter_logits_fp32(tmp_path, photos, name):
    from ghostnet.models import create_model
    from ghostnet.nn.surgery import SegmentationLogits

    torch.manual_seed(0)
    model = fuse_bn(SegmentationLogits(as_trained(create_model(name, num_classes=5), 64)).eval())
    images = _images(photos, 64, 2)
    et.convert(model, images[0], tmp_path / "m.pte", None)
    _check_parity(model, tmp_path / "m.pte", images)


@pytest.mark.slow
def test_detection_backbone_multi_output_fp32(tmp_path, photos):
    model = _inference_form("ghostnet_100", 64, features_only=True)
    images = _images(photos, 64, 2)
    et.convert(model, images[0], tmp_path / "m.pte", None)
    _check_parity(model, tmp_path / "m.pte", images)


def test_a_channels_last_example_still_gives_an_nchw_program(tmp_path):
    """torch.export keeps a channels-last example's layout; the program must still read plain NCHW arrays."""
    from ghostnet.deploy.runtime_export import export_to_runtime, sample_photos

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten()).eval()
    images = sample_photos(2, (16, 16), 3).to(memory_format=torch.channels_last)
    report = export_to_runtime(model, tmp_path / "m.pte", "executorch", (16, 16), images=images)
    assert report.max_abs_diff < 1e-5 and report.top1_agreement == 1.0
