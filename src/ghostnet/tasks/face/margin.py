"""Margin heads for training identity embeddings: ArcFace, CosFace, and a plain softmax head to compare with.

A head maps embeddings (B, E) and labels (B,) to logits (B, classes) for the cross-entropy. Its weight holds the
class centres: it is trained with the model and saved in the training checkpoint, but it is not part of the
embedding model, so it never reaches an exported file.

Written here rather than taken from PyTorch Metric Learning (whose ``ArcFaceLoss`` takes the margin in degrees)
for three reasons: the threshold branch of ArcFace (insightface's form, used by GhostFaceNets) and the
easy-margin branch are both needed and selectable; the cosines are computed in float32 and clamped away from
+-1 so the square root in ``sin = sqrt(1 - cos^2)`` has a finite gradient under fp16/bf16 autocast; and a head
returning logits (not a loss) lets the task report training accuracy and use one cross-entropy for all heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ArcFace", "CosFace", "SoftmaxHead", "MARGIN_HEADS", "create_margin_head"]

_EPS = 1e-7  # cosines are clamped to [-1 + eps, 1 - eps]: sqrt(1 - cos^2) stays differentiable


class _NormedHead(nn.Module):
    """Cosine of each embedding to each (normalised) class centre, scaled by `scale`."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float, margin: float) -> None:
        super().__init__()
        if embedding_size < 1 or num_classes < 2:
            raise ValueError(
                f"a margin head needs embedding_size >= 1 and num_classes >= 2, got {embedding_size}, {num_classes}"
            )
        if scale <= 0 or margin < 0:
            raise ValueError(f"scale must be > 0 and margin >= 0, got scale {scale}, margin {margin}")
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))  # (classes, E): the class centres
        nn.init.normal_(self.weight, 0, 0.01)

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, E) -> (B, classes) cosines in float32, clamped to [-1 + eps, 1 - eps]."""
        with torch.autocast(embeddings.device.type, enabled=False):  # float32 even inside an fp16/bf16 region
            e = F.normalize(embeddings.float(), dim=1)
            w = F.normalize(self.weight.float(), dim=1)
            return (e @ w.t()).clamp(-1 + _EPS, 1 - _EPS)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Scaled cosines (B, classes); with `labels`, each sample's own class gets the margin."""
        cos = self.cosine(embeddings)
        if labels is None:
            return cos * self.scale
        own = cos.gather(1, labels.view(-1, 1))  # (B, 1)
        return cos.scatter(1, labels.view(-1, 1), self.target_logit(own)) * self.scale


class ArcFace(_NormedHead):
    """Additive angular margin (Deng et al., CVPR 2019): the target logit is s cos(theta + m).

    Args:
        margin: m in radians (0.5 in ArcFace and GhostFaceNets; PyTorch Metric Learning's 28.6 degrees).
        easy_margin: apply the margin only where cos(theta) > 0 (theta < 90 degrees), else keep cos(theta).
            Without it (the default, insightface's form), where theta + m would pass pi the target becomes
            cos(theta) - m sin(m), which keeps the logit decreasing in theta.
    """

    def __init__(
        self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.5, easy_margin: bool = False
    ) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)
        if margin >= math.pi / 2:
            raise ValueError(f"ArcFace margin is in radians and must be < pi/2, got {margin}")
        self.easy_margin = easy_margin
        self.cos_m, self.sin_m = math.cos(margin), math.sin(margin)
        self.threshold = math.cos(math.pi - margin)  # theta + m > pi beyond this cosine
        self.fallback = math.sin(math.pi - margin) * margin  # = m sin(m)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        sin = torch.sqrt(1.0 - cos * cos)
        phi = cos * self.cos_m - sin * self.sin_m  # cos(theta + m)
        if self.easy_margin:
            return torch.where(cos > 0, phi, cos)
        return torch.where(cos > self.threshold, phi, cos - self.fallback)


class CosFace(_NormedHead):
    """Additive cosine margin (Wang et al., CVPR 2018; "LMCL"): the target logit is s (cos(theta) - m)."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.35) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)

    def target_logit(self, cos: torch.Tensor) -> torch.Tensor:
        return cos - self.margin


class SoftmaxHead(nn.Module):
    """Linear layer (bias) on the raw embedding: the plain softmax baseline a margin head is compared with."""

    def __init__(self, embedding_size: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embedding_size, num_classes)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc(embeddings.float())


MARGIN_HEADS = ("arcface", "cosface", "softmax")


def create_margin_head(
    kind: str,
    embedding_size: int,
    num_classes: int,
    scale: float = 64.0,
    margin: float | None = None,
    easy_margin: bool = False,
) -> nn.Module:
    """A head by name: ``arcface`` (margin 0.5 rad by default), ``cosface`` (0.35) or ``softmax`` (no margin).

    Args:
        kind: one of `MARGIN_HEADS`.
        embedding_size, num_classes: the embedding width and the number of training identities.
        scale: s, the logit scale of the normalised heads.
        margin: m (radians for ArcFace, a cosine offset for CosFace); None = the paper's value.
        easy_margin: ArcFace only; see `ArcFace`.
    """
    if kind == "arcface":
        return ArcFace(embedding_size, num_classes, scale, 0.5 if margin is None else margin, easy_margin)
    if kind == "cosface":
        return CosFace(embedding_size, num_classes, scale, 0.35 if margin is None else margin)
    if kind == "softmax":
        return SoftmaxHead(embedding_size, num_classes)
    raise ValueError(f"unknown margin head {kind!r}; choose one of {', '.join(MARGIN_HEADS)}")
