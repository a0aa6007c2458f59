"""Human-facing summaries of runs: the epoch table, the training-curve PNG, the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["format_history", "plot_curves", "format_confusion"]


# Column headers and formats for the epoch table; columns a run does not log are left out.
_COLUMNS = [
    ("train_loss", "train loss", "{:.4f}"),
    ("train_top1", "train top-1", "{:.2f}%"),
    ("eval_loss", "eval loss", "{:.4f}"),
    ("eval_top1", "top-1", "{:.2f}%"),
    ("eval_top5", "top-5", "{:.2f}%"),
    ("eval_map", "mAP", "{:.2f}"),
    ("eval_map50", "mAP@0.5", "{:.2f}"),
    ("train_acc", "train acc", "{:.2f}%"),
    ("eval_acc", "verif. acc", "{:.2f}%"),
    ("lr", "lr", "{:.5f}"),
    ("epoch_time_s", "time", "{:.1f}s"),
]


def format_history(history: list[dict[str, Any]]) -> str:
    """One row per epoch: losses, the evaluation metrics, learning rate, time."""
    if not history:
        return "(no epochs)"
    cols = [("epoch", "epoch", "{}")] + [c for c in _COLUMNS if c[0] in history[0]]
    cells = [[fmt.format(r[key]) for key, _, fmt in cols] for r in history]
    widths = [max(len(title), *(len(row[i]) for row in cells)) for i, (_, title, _) in enumerate(cols)]
    header = " ".join(f"{title:>{w}}" for (_, title, _), w in zip(cols, widths))
    lines = [header, "-" * len(header)]
    lines += [" ".join(f"{c:>{w}}" for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def plot_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Losses and the evaluation metric per epoch, side by side, as a PNG. Nothing is written for no epochs."""
    if not history:
        return None
    from matplotlib.figure import Figure  # no pyplot: the user's backend and figure list are left alone

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    if "eval_loss" in history[0]:
        ax_loss.plot(epochs, [r["eval_loss"] for r in history], "s-", label="eval")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    if "eval_top1" in history[0]:
        curves = [
            ("train_top1", "o-", "train top-1"),
            ("eval_top1", "s-", "eval top-1"),
            ("ema_eval_top1", "^--", "EMA eval top-1"),
        ]
        metric, ylabel, unit = "eval_top1", "accuracy (%)", "%"
    elif "eval_miou" in history[0]:
        curves = [
            ("eval_miou", "s-", "eval mIoU"),
            ("eval_pixel_acc", "o-", "eval pixel acc."),
            ("train_pixel_acc", "^--", "train pixel acc."),
        ]
        metric, ylabel, unit = "eval_miou", "mIoU / accuracy (%)", ""
    elif "eval_acc" in history[0]:  # face: 10-fold verification accuracy on held-out pairs
        curves = [("eval_acc", "s-", "verification acc."), ("train_acc", "o-", "train acc. (with margin)")]
        metric, ylabel, unit = "eval_acc", "accuracy (%)", "%"
    else:
        curves = [("eval_map", "s-", "mAP@[.5:.95]"), ("eval_map50", "o-", "mAP@0.5")]
        metric, ylabel, unit = "eval_map", "COCO AP (%)", ""
    for key, style, label in curves:
        if key in history[0]:
            ax_acc.plot(epochs, [r[key] for r in history], style, label=label)
    best = max(history, key=lambda r: r[metric])
    ax_acc.annotate(
        f"{best[metric]:.2f}{unit}",
        (best["epoch"], best[metric]),
        textcoords="offset points",
        xytext=(0, 8),
        ha="center",
    )
    ax_acc.set(xlabel="epoch", ylabel=ylabel, title=ylabel.split(" (")[0])
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        if len(epochs) < 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    tmp.replace(path)
    return path


def format_confusion(matrix: list[list[int]], classes: list[str]) -> str:
    """A confusion matrix as text: rows are the true class, columns the prediction, with per-class recall."""
    names = [c[:9] for c in classes]
    width = max(5, max(len(n) for n in names), len(str(max(max(r) for r in matrix))))
    lines = [" " * (width + 1) + " ".join(f"{n:>{width}}" for n in names) + "   recall"]
    for name, row in zip(names, matrix):
        total = sum(row)
        recall = 100 * row[names.index(name)] / total if total else 0.0
        lines.append(f"{name:>{width}} " + " ".join(f"{v:>{width}}" for v in row) + f"  {recall:6.2f}%")
    return "\n".join(lines)
