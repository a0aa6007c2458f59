"""Detection builders (the backbone/FPN part of the detection work; data, training and CLI come later)."""

import pytest
import torch

from ghostnet import create_model, save_weights
from ghostnet.detection import fasterrcnn_ghostnet, ghostnet_fpn_backbone, retinanet_ghostnet
from torchvision.ops.misc import FrozenBatchNorm2d


def _targets():
    return [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 60.0]]), "labels": torch.tensor([1])},
            {"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0], [40.0, 30.0, 90.0, 70.0]]), "labels": torch.tensor([2, 1])}]


@pytest.mark.parametrize("width", [0.5, 1.1])
def test_backbone_levels_and_channels(width):
    b = ghostnet_fpn_backbone(width=width).eval()
    out = b(torch.randn(1, 3, 128, 160))
    assert list(out) == ["0", "1", "2", "pool"]
    assert [tuple(v.shape[2:]) for v in out.values()] == [(16, 20), (8, 10), (4, 5), (2, 3)]
    assert all(v.shape[1] == 256 for v in out.values())


def test_trainable_layers_and_frozen_bn():
    b = ghostnet_fpn_backbone(width=0.5, trainable_layers=2)
    trainable = {".".join(n.split(".")[:2]) for n, p in b.body.named_parameters() if p.requires_grad}
    assert trainable == {"blocks.7", "blocks.6"}
    assert not any(type(m) is torch.nn.BatchNorm2d for m in b.body.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in b.body.modules())
    with pytest.raises(ValueError, match="trainable_layers"):
        ghostnet_fpn_backbone(trainable_layers=11)


def test_backbone_loads_classification_weights(tmp_path):
    cls = create_model("ghostnet", width=0.5)
    path = save_weights(cls, tmp_path / "w.pth")
    b = ghostnet_fpn_backbone(width=0.5, backbone_weights=path, frozen_bn=False)
    assert torch.equal(b.body.blocks[2][0].ghost1.primary_conv[0].weight, cls.blocks[2][0].ghost1.primary_conv[0].weight)


@pytest.mark.parametrize("builder", [retinanet_ghostnet, fasterrcnn_ghostnet])
def test_detectors_train_and_predict(builder):
    torch.manual_seed(0)
    model = builder(num_classes=3, width=0.5, min_size=128, max_size=160)
    images = [torch.rand(3, 100, 120), torch.rand(3, 96, 128)]
    losses = model(images, _targets())
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "scores", "labels"}
