"""Human-facing summaries of runs: the epoch table, the training-curve PNG, the confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["format_history", "plot_curves", "format_confusion"]


def format_history(history: list[dict[str, Any]]) -> str:
    """One row per epoch: losses, accuracies, learning rate, time."""
    header = f"{'epoch':>5} {'train loss':>10} {'train top-1':>11} {'eval loss':>9} {'top-1':>7} {'top-5':>7} {'lr':>9} {'time':>7}"
    lines = [header, "-" * len(header)]
    for r in history:
        lines.append(
            f"{r['epoch']:>5} {r['train_loss']:>10.4f} {r['train_top1']:>10.2f}% {r['eval_loss']:>9.4f} "
            f"{r['eval_top1']:>6.2f}% {r['eval_top5']:>6.2f}% {r['lr']:>9.5f} {r['epoch_time_s']:>6.1f}s"
        )
    return "\n".join(lines)


def plot_curves(history: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Loss and accuracy per epoch, train and eval, side by side, as a PNG. Nothing is written for no epochs."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["eval_loss"] for r in history], "s-", label="eval")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.plot(epochs, [r["train_top1"] for r in history], "o-", label="train top-1")
    ax_acc.plot(epochs, [r["eval_top1"] for r in history], "s-", label="eval top-1")
    if "ema_eval_top1" in history[0]:
        ax_acc.plot(epochs, [r["ema_eval_top1"] for r in history], "^--", label="EMA eval top-1")
    best = max(history, key=lambda r: r["eval_top1"])
    ax_acc.annotate(f"{best['eval_top1']:.2f}%", (best["epoch"], best["eval_top1"]), textcoords="offset points", xytext=(0, 8), ha="center")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
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
    plt.close(fig)
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
