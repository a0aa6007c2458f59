"""int8 exports of every model family in every runtime that writes int8 (slow): each is calibrated on real
photographs, holds int8 layers, and runs in the runtime's interpreter with outputs of PyTorch's shapes, all finite.
One model per family and width-independent op set (the other registered names are the same blocks at other
widths); float32 parity of every registered name is in each runtime's own test file. Closeness to float32 is
tested on small models there and on a trained one in docs/BENCHMARKS.md: a 1000-class network with random weights
has no accuracy for int8 to keep (OpenVINO's int8 random GhostNetV2 agrees with its float32 self on no image)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ghostnet.bench.models import as_trained
from ghostnet.deploy.runtime_export import export_to_runtime, sample_photos
from ghostnet.deploy.runtimes import RUNTIMES, installed
from ghostnet.models import create_model, model_entry
from ghostnet.nn.rep import reparameterize
from ghostnet.nn.surgery import fuse_bn

INT8_RUNTIMES = [name for name, runtime in RUNTIMES.items() if runtime.int8]
FAMILIES = [
    "ghostnet_050",
    "ghostnet_small_050",
    "ghostnetv2_100",
    "ghostnetv3_050",
    "ghost_resnet56",
    "resnet56",
    "ghost_vgg16",
    "vgg16",
    "ghostfacenet_v1",
    "ghostfacenet_v2",
]


def case_size(name: str) -> int:
    """ImageNet models at 64x64 (minutes less than 224, the same layers); CIFAR at 32, face models at 112."""
    size = int(model_entry(name).default_cfg.get("input_size", 224))
    return 64 if size == 224 else size


@pytest.mark.slow
@pytest.mark.parametrize("runtime", INT8_RUNTIMES)
@pytest.mark.parametrize("name", FAMILIES)
def test_every_model_family_exports_to_int8(name, runtime, tmp_path):
    if not installed(runtime):
        pytest.skip(f"{runtime} is not installed")
    size = case_size(name)
    torch.manual_seed(0)
    model: nn.Module = fuse_bn(reparameterize(as_trained(create_model(name), size))).eval()
    photos = sample_photos(10, (size, size), seed=5)
    path = tmp_path / f"{name}-int8{RUNTIMES[runtime].suffix}"
    # export_to_runtime checks the outputs' count, shapes and finiteness on the check photographs
    r = export_to_runtime(model, path, runtime, (size, size), images=photos[6:], calibration=list(photos[:6].split(1)))
    assert r.precision == "int8" and r.calibration_images == 6 and r.images == 4
    assert any(note.startswith("int8: ") for note in r.notes), r.notes
    assert path.exists() and r.size_bytes > 0


def test_the_families_cover_every_registered_architecture():
    from ghostnet.models import list_models
    from ghostnet.models.registry import IMAGE_TASKS

    def op_set(name: str) -> tuple[str, frozenset[str]]:
        """What a model is made of: its class and the classes of all its modules (not their widths)."""
        model = create_model(name)
        return type(model).__name__, frozenset(type(m).__name__ for m in model.modules())

    assert {op_set(n) for n in list_models(task=IMAGE_TASKS)} == {op_set(n) for n in FAMILIES}
