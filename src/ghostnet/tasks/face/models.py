"""GhostFaceNets-style identity embedding models (Alansari et al., "GhostFaceNets: Lightweight Face Recognition
Model From Cheap Operations", IEEE Access 2023) on our GhostNet V1 and V2 backbones.

What we follow from the authors' release (``GhostFaceNets.py``, ``backbones/ghost_model.py``):

- the backbone is GhostNet without its classifier head (stem, the nine bottleneck stages and the 1x1 conv to
  960 x width channels), on 112 x 112 aligned faces, with the stem conv at stride 1 (their "-1" models; stride
  2 is their "-2"): the output stride is 16, a 7 x 7 map at 112;
- every ReLU becomes a PReLU with one slope per channel, initialised to 0.25 (``replace_ReLU_with_PReLU``);
- the GDC head: a depthwise conv whose kernel covers the whole final map (no bias), BN, dropout, a 1x1 conv
  to the embedding size (no bias), flatten, BN (with scale): the embedding. No global average pooling.

Where we differ: the backbone keeps GhostNet's stage table (the last bottleneck expands to 960 x width and the
1x1 conv stage has 960 x width channels) so that GhostNet classification weights load unchanged; the authors'
Keras V1 expands the last bottleneck to 512 and ends with a 512 x width conv, so their models are smaller than
ours at the same width (and their V2 backbone has its own tweaks, e.g. plain Ghost modules in the first stacks).

The model's forward returns the (unnormalised) embedding; the margin head that trains it (`ghostnet.tasks.face.margin`)
is not part of it. Inputs of another size than `input_size` are resized (bilinear) to the GDC's grid first (an
identity at `input_size`), so the model runs at any size, but it is meant for the size it was built for.
Weights of a GhostNet classification checkpoint of the same width and version load into the backbone
(`adapt_state_dict`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...models.ghostnet import GhostNet
from ...models.registry import register_model
from ...nn.surgery import Fusable, set_submodule

__all__ = [
    "GhostFaceNet",
    "gdc_grid",
    "ghostfacenet_v1",
    "ghostfacenet_v1_100",
    "ghostfacenet_v1_130",
    "ghostfacenet_v2",
    "ghostfacenet_v2_100",
    "ghostfacenet_v2_130",
    "relu_to_prelu",
]

_BACKBONE_PREFIXES = ("conv_stem.", "bn1.", "blocks.")


def gdc_grid(input_size: int, stem_stride: int) -> int:
    """The side of the final feature map for a square input: every stride-2 layer gives ceil(n / 2)."""
    n = input_size
    for _ in range(4 + (stem_stride == 2)):  # four stride-2 stages, plus the stem's
        n = -(-n // 2)
    return n


def relu_to_prelu(model: nn.Module, init: float = 0.25) -> int:
    """Replace every ReLU of `model` by a per-channel PReLU (slopes `init`); returns how many were replaced.

    The channel count of each ReLU is that of the conv or BN registered just before it, which is the layer
    feeding it in GhostNet's blocks (Ghost modules, SE, the stem, the 1x1 conv stage).
    """
    channels, targets = 0, []
    for name, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            channels = m.num_features
        elif isinstance(m, nn.Conv2d):
            channels = m.out_channels
        elif isinstance(m, nn.ReLU):
            targets.append((name, channels))
    for name, c in targets:
        set_submodule(model, name, nn.PReLU(c, init=init))
    return len(targets)


class GDC(nn.Module):
    """Global depthwise conv head: [resize to k x k], dw k x k conv, BN, dropout, 1x1 conv -> E, BN, flatten."""

    def __init__(self, in_chs: int, embedding_size: int, grid: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.grid = grid
        self.dw = nn.Conv2d(in_chs, in_chs, grid, groups=in_chs, bias=False)
        self.bn = nn.BatchNorm2d(in_chs)
        self.dropout = nn.Dropout(dropout)
        self.conv = nn.Conv2d(in_chs, embedding_size, 1, bias=False)
        # GhostFaceNets' "pre_embedding" BatchNorm1d, as a 2-D BN before the flatten: the same arithmetic, and
        # fuse_bn folds it into the 1x1 conv for deployment.
        self.bn_embedding = nn.BatchNorm2d(embedding_size)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Bilinear resizing to the kernel's grid: an exact identity at the size the model was built for, and
        # (unlike adaptive pooling) exportable to ONNX from any other size.
        x = F.interpolate(x, size=(self.grid, self.grid), mode="bilinear", align_corners=False)  # (B, C, k, k)
        x = self.bn(self.dw(x))  # (B, C, 1, 1)
        return self.flatten(self.bn_embedding(self.conv(self.dropout(x))))  # (B, E)


class GhostFaceNet(Fusable, nn.Module):
    """GhostNet stem (stride 1) and blocks, PReLU, GDC head -> embedding (B, embedding_size).

    Args:
        width: channel multiplier of the backbone (1.3 in the paper's best model).
        version: ``"v1"`` or ``"v2"`` (DFC attention) backbone.
        embedding_size: the embedding's width (None: 512, the paper's).
        input_size: the square input the GDC's kernel is made for (112 for aligned faces).
        in_chans: input channels.
        prelu: PReLU instead of ReLU everywhere (the paper's choice).
        stem_stride: 1 (output stride 16, the paper's "-1" models) or 2 (output stride 32, "-2").
        dropout: before the embedding's 1x1 conv.
        num_classes: accepted as another name for `embedding_size` (the output width), so that tools
            written for classifiers (``create_model(name, num_classes=n)``) work; give one or the other.
    """

    def __init__(
        self,
        width: float = 1.0,
        version: str = "v1",
        embedding_size: int | None = None,
        input_size: int = 112,
        in_chans: int = 3,
        prelu: bool = True,
        stem_stride: int = 1,
        dropout: float = 0.0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and embedding_size is not None and num_classes != embedding_size:
            raise ValueError(f"num_classes ({num_classes}) and embedding_size ({embedding_size}) disagree; give one")
        embedding_size = num_classes or embedding_size or 512
        _check_args(version, embedding_size, input_size, stem_stride, dropout)
        backbone = GhostNet(num_classes=0, width=width, in_chans=in_chans, version=version)
        backbone.conv_stem.stride = (stem_stride, stem_stride)
        self.conv_stem, self.bn1, self.act1, self.blocks = (
            backbone.conv_stem,
            backbone.bn1,
            backbone.act1,
            backbone.blocks,
        )
        self.num_features = backbone.num_features
        self.embedding_size, self.input_size, self.width, self.version = embedding_size, input_size, width, version
        self.gdc = GDC(self.num_features, embedding_size, gdc_grid(input_size, stem_stride), dropout)
        nn.init.xavier_normal_(self.gdc.conv.weight)  # GhostFaceNets' glorot_normal
        if prelu:
            relu_to_prelu(self)
        # Keys of a classification checkpoint that the embedding model does not have.
        self.dropped_prefixes = ("conv_head.", "classifier.")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and blocks: (B, in_chans, H, W) -> (B, num_features, H/16, W/16) (H/32 with stem_stride 2)."""
        return self.blocks(self.act1(self.bn1(self.conv_stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gdc(self.forward_features(x))  # (B, embedding_size)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A GhostNet classification checkpoint (no GDC head) initialises the backbone; the GDC head and any
        PReLU slopes it lacks keep their initial values. Our own face checkpoints pass unchanged."""
        if any(k.startswith("gdc.") for k in state_dict):
            return state_dict
        own = self.state_dict()
        backbone = {k: v for k, v in state_dict.items() if k.startswith(_BACKBONE_PREFIXES) or k not in own}
        return {**{k: v for k, v in own.items() if k not in backbone}, **backbone}


def _check_args(version: str, embedding_size: int, input_size: int, stem_stride: int, dropout: float) -> None:
    if version not in ("v1", "v2"):
        raise ValueError(f"version must be 'v1' or 'v2' for a GhostFaceNet, got {version!r}")
    if not isinstance(embedding_size, int) or embedding_size < 1:
        raise ValueError(f"embedding_size must be a positive integer, got {embedding_size!r}")
    if not isinstance(input_size, int) or input_size < 16:
        raise ValueError(f"input_size must be an integer >= 16, got {input_size!r}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")


def _fixed(width: float, version: str, kwargs: dict[str, Any]) -> GhostFaceNet:
    for fixed in ("width", "version"):
        if fixed in kwargs:
            raise ValueError(f"the named models fix their {fixed}; use 'ghostfacenet_{version}' for another")
    return GhostFaceNet(width=width, version=version, **kwargs)


@register_model(default_width=1.0, input_size=112, task="face")
def ghostfacenet_v1(width: float = 1.0, **kwargs: Any) -> GhostFaceNet:
    """GhostFaceNet on GhostNetV1 at any width: 112x112 faces -> 512-d embedding (PReLU, GDC head)."""
    return GhostFaceNet(width=width, version="v1", **kwargs)


@register_model(default_width=1.0, input_size=112, task="face")
def ghostfacenet_v2(width: float = 1.0, **kwargs: Any) -> GhostFaceNet:
    """GhostFaceNet on GhostNetV2 (DFC attention) at any width: 112x112 faces -> 512-d embedding."""
    return GhostFaceNet(width=width, version="v2", **kwargs)


@register_model(default_width=1.0, input_size=112, task="face")
def ghostfacenet_v1_100(**kwargs: Any) -> GhostFaceNet:
    """GhostFaceNetV1 1.0x, stem stride 1: 3.22M params, 139.2M MACs at 112."""
    return _fixed(1.0, "v1", kwargs)


@register_model(default_width=1.3, input_size=112, task="face")
def ghostfacenet_v1_130(**kwargs: Any) -> GhostFaceNet:
    """GhostFaceNetV1 1.3x, stem stride 1: 5.19M params, 224.8M MACs at 112."""
    return _fixed(1.3, "v1", kwargs)


@register_model(default_width=1.0, input_size=112, task="face")
def ghostfacenet_v2_100(**kwargs: Any) -> GhostFaceNet:
    """GhostFaceNetV2 1.0x, stem stride 1: 4.20M params, 165.1M MACs at 112."""
    return _fixed(1.0, "v2", kwargs)


@register_model(default_width=1.3, input_size=112, task="face")
def ghostfacenet_v2_130(**kwargs: Any) -> GhostFaceNet:
    """GhostFaceNetV2 1.3x, stem stride 1: 6.80M params, 267.1M MACs at 112 (the width and stride of GhostFaceNetV2-1)."""
    return _fixed(1.3, "v2", kwargs)
