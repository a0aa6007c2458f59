"""The paper's CIFAR-10 experiments (Sec. 4.1, Tables 2-4): VGG-16 and ResNet-56, and their Ghost versions.

The Ghost versions are the baselines with every conv except the first replaced by a Ghost module of the
same in/out channels, kernel and stride (`ghostify`), so the two always differ in exactly that.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.blocks import init_weights
from ..nn.ghostify import ghostify
from ..nn.surgery import Fusable
from .registry import register_model

__all__ = ["VGG", "CifarResNet", "BasicBlock", "VGG16_LAYERS", "vgg16", "ghost_vgg16", "resnet56", "ghost_resnet56"]

# VGG-16's 13 conv layers (output channels) and its 5 max-pools ("M"), Simonyan & Zisserman 2015, config D.
VGG16_LAYERS: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)


class VGG(Fusable, nn.Module):
    """[3x3 conv, BN, ReLU] x 13 with 5 max-pools; flatten; FC 512, ReLU, dropout, FC classes (the paper's CIFAR VGG-16)."""

    def __init__(self, layers=VGG16_LAYERS, num_classes: int = 10, in_chans: int = 3, drop_rate: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1 or in_chans < 1:
            raise ValueError(f"num_classes and in_chans must be >= 1, got {num_classes}, {in_chans}")
        self.num_classes = num_classes
        feats: list[nn.Module] = []
        c = in_chans
        for v in layers:
            if v == "M":
                feats.append(nn.MaxPool2d(2, 2))
            else:
                feats += [nn.Conv2d(c, int(v), 3, padding=1, bias=False), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                c = int(v)
        self.features = nn.Sequential(*feats)
        self.pool = nn.AdaptiveAvgPool2d(1)  # 1x1 already at 32x32; keeps other sizes working
        self.num_features = c
        self.classifier = nn.Sequential(
            nn.Linear(c, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(drop_rate),
            nn.Linear(512, num_classes),
        )
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, 512, H/32, W/32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.forward_features(x)).flatten(1)  # (B, 512)
        return self.classifier(x)


class BasicBlock(nn.Module):
    """3x3 conv (stride), BN, ReLU, 3x3 conv, BN, + shortcut (identity, or 1x1 conv stride 2 + BN), ReLU."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_chs != out_chs:  # projection shortcut (the ResNet paper's option B)
            self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(Fusable, nn.Module):
    """3x3 conv 16, BN, ReLU; 3 stages of n basic blocks (16, 32, 64 channels; strides 1, 2, 2); avg pool, [dropout], FC."""

    def __init__(
        self, depth: int = 56, num_classes: int = 10, in_chans: int = 3, widths=(16, 32, 64), drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        if num_classes < 1 or in_chans < 1:
            raise ValueError(f"num_classes and in_chans must be >= 1, got {num_classes}, {in_chans}")
        self.num_classes = num_classes
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [BasicBlock(c, w, 1 if i == 0 else 2)] + [BasicBlock(w, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = c
        self.dropout = nn.Dropout(drop_rate)  # none in the ResNet paper; there for recipes that ask for it
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, 16, H, W)
        return self.layer3(self.layer2(self.layer1(x)))  # (B, 64, H/4, W/4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(self.forward_features(x)).flatten(1)))


def _ghost(model: nn.Module, ratio: int, dw_size: int) -> nn.Module:
    return ghostify(model, ratio=ratio, dw_size=dw_size, inplace=True)


@register_model(input_size=32)
def vgg16(**kwargs) -> VGG:
    """VGG-16 for 32x32 images (13 conv+BN, FC 512-512-classes): 14.99M params, 313.5M MACs (paper: 93.6% CIFAR-10)."""
    return VGG(VGG16_LAYERS, **kwargs)


@register_model(input_size=32)
def ghost_vgg16(ratio: int = 2, dw_size: int = 3, **kwargs) -> nn.Module:
    """Ghost-VGG-16: VGG-16 with Ghost modules (s=2, d=3): 7.65M params, 158.7M MACs (paper: 93.7%)."""
    return _ghost(VGG(VGG16_LAYERS, **kwargs), ratio, dw_size)


@register_model(input_size=32)
def resnet56(**kwargs) -> CifarResNet:
    """ResNet-56 for 32x32 images (3 x 9 basic blocks, 16/32/64 channels): 0.86M params, 125.7M MACs (paper: 93.0%)."""
    return CifarResNet(56, **kwargs)


@register_model(input_size=32)
def ghost_resnet56(ratio: int = 2, dw_size: int = 3, **kwargs) -> nn.Module:
    """Ghost-ResNet-56: ResNet-56 with Ghost modules (s=2, d=3): 0.44M params, 65.5M MACs (paper: 92.7%)."""
    return _ghost(CifarResNet(56, **kwargs), ratio, dw_size)
