"""The paper's s/d ablation (Tables 2-3): train each Ghost variant of a CIFAR model with one recipe and seed.

    ghostnet ablate --model vgg16 --ratios 2 3 4 5 --dw-sizes 1 3 5 7 --dataset cifar10

A sweep folder holds one run folder per variant (each resumable) and the table as results.md / results.csv,
plus acc_vs_macs.png. Running the same command again skips finished variants and resumes a broken one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...analysis.profile import profile_model
from ...models import create_model
from .config import TrainConfig

__all__ = ["Variant", "ablation_variants", "run_ablation", "format_markdown"]

BASELINES = {"vgg16": "ghost_vgg16", "resnet56": "ghost_resnet56"}


@dataclass
class Variant:
    """One row of the ablation table."""

    name: str  # run folder name, e.g. "ghost_vgg16-s2-d3"
    model: str
    ratio: int | None  # None for the baseline
    dw_size: int | None
    params: int = 0
    macs: int = 0
    top1: float | None = None
    top5: float | None = None
    train_time_s: float | None = None


def ablation_variants(model: str, ratios: list[int], dw_sizes: list[int]) -> list[Variant]:
    """The baseline, then s in `ratios` at d=3, then d in `dw_sizes` at s=2 (the paper's two tables), deduplicated."""
    if model not in BASELINES:
        raise ValueError(f"ablation is defined for {', '.join(BASELINES)}; got {model!r}")
    ghost = BASELINES[model]
    pairs = [(s, 3) for s in ratios] + [(2, d) for d in dw_sizes]
    variants = [Variant(model, model, None, None)]
    for s, d in dict.fromkeys(pairs):
        variants.append(Variant(f"{ghost}-s{s}-d{d}", ghost, s, d))
    return variants


def run_ablation(
    model: str,
    ratios: list[int],
    dw_sizes: list[int],
    base: TrainConfig,
    sweep_dir: str | Path,
    complexity_only: bool = False,
) -> list[Variant]:
    """Measure (and unless `complexity_only`, train and evaluate) every variant; write the tables and the plot.

    Args:
        model: ``vgg16`` or ``resnet56``.
        ratios, dw_sizes: the s and d values to sweep.
        base: the shared recipe (dataset, epochs, seed, ...); model, ratio, dw_size, output_dir and name are set per variant.
        sweep_dir: the sweep folder (created; reused to resume).
        complexity_only: only params and MACs, in seconds.
    """
    from ...data import load_dataset

    sweep_dir = Path(sweep_dir)
    variants = ablation_variants(model, ratios, dw_sizes)
    size, num_classes, in_chans = base.image_size or 32, 10, base.in_chans or 3  # CIFAR-10 unless told
    if not complexity_only:
        data = load_dataset(base.dataset, base.data_dir, base.download, base.image_size)
        size, num_classes, in_chans = data.image_size, data.num_classes, base.in_chans or data.in_chans
    for v in variants:
        kwargs: dict[str, Any] = {"ratio": v.ratio, "dw_size": v.dw_size} if v.ratio else {}
        p = profile_model(create_model(v.model, num_classes=num_classes, in_chans=in_chans, **kwargs), (size, size))
        v.params, v.macs = p.params, p.macs
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not complexity_only:
        for v in variants:
            _train_variant(v, base, sweep_dir)
    _write_tables(variants, sweep_dir, size)
    if not complexity_only:
        plot_acc_vs_macs(
            variants, sweep_dir / "acc_vs_macs.png", title=f"{model} and its Ghost variants on {base.dataset}"
        )
    return variants


def _train_variant(v: Variant, base: TrainConfig, sweep_dir: Path) -> None:
    """Train one variant in SWEEP_DIR/NAME (resuming it, or skipping it when finished) and read its accuracy."""
    from .task import train

    run = sweep_dir / v.name
    summary_path = run / "summary.json"
    if not summary_path.exists():
        cfg = dataclasses.replace(
            base,
            model=v.model,
            ratio=v.ratio,
            dw_size=v.dw_size,
            output_dir=str(sweep_dir),
            name=v.name,
            resume=(run / "last.pth").exists() or (run / "best.pth").exists(),
            overwrite=False,
        )
        if run.exists() and not cfg.resume:  # started but never checkpointed: nothing to keep
            cfg.overwrite = True
        print(f"== {v.name}: {'resuming' if cfg.resume else 'training'}")
        train(cfg)
    else:
        print(f"== {v.name}: done, skipping")
    summary = json.loads(summary_path.read_text())
    v.top1, v.top5, v.train_time_s = summary["final_top1"], summary["final_top5"], summary["train_time_s"]


def _row(v: Variant) -> dict[str, Any]:
    return {
        "variant": v.name,
        "s": v.ratio or "",
        "d": v.dw_size or "",
        "params": v.params,
        "macs": v.macs,
        "top1": "" if v.top1 is None else round(v.top1, 2),
        "top5": "" if v.top5 is None else round(v.top5, 2),
        "train_time_s": "" if v.train_time_s is None else round(v.train_time_s, 1),
    }


def format_markdown(variants: list[Variant], input_size: int) -> str:
    """The paper-style table."""
    lines = [
        f"| variant | s | d | params (M) | MACs (M) at {input_size}x{input_size} | top-1 (%) | top-5 (%) | train time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        r = _row(v)
        lines.append(
            f"| {r['variant']} | {r['s'] or '-'} | {r['d'] or '-'} | {v.params / 1e6:.2f} | {v.macs / 1e6:.1f} | "
            f"{r['top1'] if r['top1'] != '' else '-'} | {r['top5'] if r['top5'] != '' else '-'} | {r['train_time_s'] or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _write_tables(variants: list[Variant], sweep_dir: Path, size: int) -> None:
    (sweep_dir / "results.md").write_text(format_markdown(variants, size))
    with open(sweep_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(_row(variants[0])))
        w.writeheader()
        w.writerows(_row(v) for v in variants)


def plot_acc_vs_macs(variants: list[Variant], path: Path, title: str = "") -> None:
    """Accuracy against MACs, one labelled point per variant."""
    from matplotlib.figure import Figure  # no pyplot: the user's backend and figure list are left alone

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for v in variants:
        if v.top1 is None:
            continue
        marker, color = ("s", "tab:red") if v.ratio is None else ("o", "tab:blue")
        ax.scatter(v.macs / 1e6, v.top1, marker=marker, color=color, s=50)
        ax.annotate(
            "baseline" if v.ratio is None else f"s={v.ratio}, d={v.dw_size}",
            (v.macs / 1e6, v.top1),
            textcoords="offset points",
            xytext=(5, 5),
            fontsize=9,
        )
    ax.set(xlabel="MACs (M)", ylabel="top-1 accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)
