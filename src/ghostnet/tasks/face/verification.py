"""1:1 verification metrics on pairs of embeddings: the standard 10-fold accuracy, TAR at a FAR, the ROC.

The protocol of LFW and insightface's ``.bin`` sets: each image's embedding and its mirror image's are summed
and L2-normalised (`pair_scores` takes those), a pair's score is the cosine of its two embeddings, and

- 10-fold accuracy: the pairs are cut into 10 consecutive folds (LFW's folds); for each fold the threshold with
  the best accuracy on the other nine is chosen from a grid (cosine steps of 0.005, the same grid as
  insightface's squared-distance steps of 0.01) and the accuracy on the fold itself is recorded; reported as
  mean and standard deviation over the folds, with the mean of the chosen thresholds;
- TAR@FAR: over all pairs, the threshold that lets through at most FAR x (different-identity pairs) of them,
  and the fraction of same-identity pairs above it. With N different-identity pairs a FAR below 1/N cannot be
  resolved: the threshold is then the highest impostor score (FAR 0), and ``far_resolution`` says so.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

__all__ = [
    "THRESHOLDS",
    "pair_scores",
    "plot_roc",
    "roc_curve",
    "tar_at_far",
    "ten_fold_accuracy",
    "verification_report",
]

THRESHOLDS = np.round(np.arange(-1.0, 1.0 + 1e-9, 0.005), 3)


def pair_scores(embeddings: torch.Tensor) -> np.ndarray:
    """Cosine similarity of each pair of L2-normalised embeddings given in pair order (2P, E) -> (P,)."""
    e = embeddings.float()
    return (e[0::2] * e[1::2]).sum(1).numpy().astype(np.float64)


def _accuracy(scores: np.ndarray, issame: np.ndarray, threshold: float) -> float:
    return float(((scores > threshold) == issame).mean())


def ten_fold_accuracy(
    scores: np.ndarray, issame: np.ndarray, folds: int = 10, thresholds: np.ndarray = THRESHOLDS
) -> dict[str, Any]:
    """Accuracy with the threshold chosen on the other folds: ``{"accuracy", "std", "threshold", "fold_accuracy",
    "fold_threshold"}`` (accuracies as fractions)."""
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    if len(scores) != len(issame) or len(scores) < folds:
        raise ValueError(f"{len(scores)} scores for {len(issame)} pairs; the protocol needs at least {folds} pairs")
    fold_of = np.array_split(np.arange(len(scores)), folds)
    accs, chosen = [], []
    for test in fold_of:
        train = np.setdiff1d(np.arange(len(scores)), test)
        train_acc = [_accuracy(scores[train], issame[train], t) for t in thresholds]
        best = float(thresholds[int(np.argmax(train_acc))])  # the lowest of equally good thresholds
        chosen.append(best)
        accs.append(_accuracy(scores[test], issame[test], best))
    return {
        "accuracy": float(np.mean(accs)),
        "std": float(np.std(accs)),
        "threshold": float(np.mean(chosen)),
        "fold_accuracy": [float(a) for a in accs],
        "fold_threshold": chosen,
    }


def tar_at_far(scores: np.ndarray, issame: np.ndarray, far: float) -> dict[str, float]:
    """``{"tar", "far", "threshold", "far_resolution"}``: the TAR where at most `far` of impostor pairs pass."""
    if not 0 < far <= 1:
        raise ValueError(f"a FAR is a fraction of impostor pairs in (0, 1], got {far:g}")
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    impostor, genuine = np.sort(scores[~issame])[::-1], scores[issame]
    if len(impostor) == 0 or len(genuine) == 0:
        raise ValueError("TAR@FAR needs both same-identity and different-identity pairs")
    allowed = int(np.floor(far * len(impostor)))  # false accepts allowed
    threshold = float(impostor[min(allowed, len(impostor) - 1)])  # accept scores strictly above it
    return {
        "tar": float((genuine > threshold).mean()),
        "far": float((impostor > threshold).mean()),
        "threshold": threshold,
        "far_resolution": 1.0 / len(impostor),
    }


def roc_curve(scores: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(FAR, TAR, area under the curve) over every threshold, FAR increasing from 0 to 1.

    One point per distinct score: pairs with equal scores are accepted or rejected together, so the curve and its
    area do not depend on the order of the pairs (constant scores give the diagonal, AUC 0.5).
    """
    scores, issame = np.asarray(scores, np.float64), np.asarray(issame, bool)
    order = np.argsort(-scores, kind="stable")
    same, ranked = issame[order], scores[order]
    last = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], len(ranked) > 0))  # each run of equal scores' end
    tar = np.concatenate([[0.0], np.cumsum(same)[last] / max(1, same.sum())])
    far = np.concatenate([[0.0], np.cumsum(~same)[last] / max(1, (~same).sum())])
    return far, tar, _trapezoid(tar, far)


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule (``np.trapezoid`` is NumPy 2 only, ``np.trapz`` is gone from it)."""
    if len(x) < 2:
        return 0.0
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


def verification_report(
    scores: np.ndarray, issame: np.ndarray, fars: tuple[float, ...] = (1e-3, 1e-4)
) -> dict[str, Any]:
    """The full protocol on one set of pair scores: 10-fold accuracy (%), TAR@FAR for each of `fars`, AUC."""
    folds = ten_fold_accuracy(scores, issame)
    _, _, auc = roc_curve(scores, issame)
    return {
        "pairs": int(len(scores)),
        "same_pairs": int(np.asarray(issame, bool).sum()),
        "accuracy": 100 * folds["accuracy"],
        "accuracy_std": 100 * folds["std"],
        "threshold": folds["threshold"],
        "fold_accuracy": [100 * a for a in folds["fold_accuracy"]],
        "tar_at_far": {f"{far:g}": tar_at_far(scores, issame, far) for far in fars},
        "auc": auc,
    }


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "") -> None:
    """ROC curves (TAR against FAR on a log axis) of one or more models, as a PNG."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=100)
    for label, (far, tar) in curves.items():
        keep = far > 0
        ax.plot(far[keep], tar[keep], label=label)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
