"""Feature-map figures (paper Fig. 1 and Fig. 6) and a dataset preview, as PNG files.

- `plot_ghost_maps`: a Ghost module's intrinsic maps, each beside the ghost maps made from it (Fig. 6).
- `plot_redundant_pairs`: the most similar pairs of an ordinary layer's output maps (Fig. 1), with the
  similarity matrix: the redundancy that motivates the paper.
- `plot_dataset_preview`: a grid of a dataset's images titled with their class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.blocks import GhostModule

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["capture", "plot_ghost_maps", "plot_redundant_pairs", "plot_dataset_preview", "map_similarity"]


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure of its own: no pyplot state and no backend switch, so the user's matplotlib setup is left alone."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _module(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n][:12]
        raise ValueError(f"the model has no layer {name!r}; layers include: {', '.join(names)}, ...") from None


@torch.no_grad()
def capture(model: nn.Module, modules: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of `modules` (first sample) when `model` runs on `x`."""
    store: dict[int, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, a, out, i=i: store.__setitem__(i, out.detach()[0].clone()))
        for i, m in enumerate(modules)
    ]
    try:
        model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return [store[i] for i in range(len(modules))]


def map_similarity(maps: torch.Tensor) -> torch.Tensor:
    """Pearson correlation (cosine similarity of the mean-centred maps) of every pair: (C, H, W) -> (C, C).

    Centring keeps two maps that merely share a positive offset from looking alike; a constant map
    correlates with nothing (0).
    """
    flat = maps.flatten(1).float()
    flat = F.normalize(flat - flat.mean(dim=1, keepdim=True), dim=1)
    return flat @ flat.T


def plot_ghost_maps(
    model: nn.Module, x: torch.Tensor, layer: str | None, path: str | Path, n_maps: int = 8
) -> dict[str, Any]:
    """Rows of [intrinsic map i | its s-1 ghost maps], with each ghost's cosine similarity to its source.

    Args:
        model: a model holding Ghost modules (GhostNet, a Ghost-VGG, or any ghostified CNN).
        x: one preprocessed image batch (1, C, H, W).
        layer: the Ghost module's name; default the first one with at least `n_maps` intrinsic maps.
        path: the PNG to write.
        n_maps: how many intrinsic maps (rows) to show.
    """
    ghosts = [(n, m) for n, m in model.named_modules() if isinstance(m, GhostModule)]
    if not ghosts:
        raise ValueError("the model has no Ghost modules; add --ghostify, or show the 'redundancy' figure")
    if layer is None:
        layer = next((n for n, m in ghosts if m.new_channels and m.init_channels >= n_maps), ghosts[0][0])
    module = _module(model, layer)
    if not isinstance(module, GhostModule) or module.new_channels == 0:
        raise ValueError(
            f"{layer!r} is not a Ghost module with ghost maps (ratio >= 2); Ghost modules: {', '.join(n for n, _ in ghosts[:8])}"
        )
    intrinsic, ghost = capture(model, [module.primary_conv, module.cheap_operation], x)
    s = module.ratio
    rows = min(n_maps, module.init_channels)
    shown = intrinsic.flatten(1).std(dim=1).argsort(descending=True)[:rows].sort().values.tolist()  # the liveliest maps
    fig = _figure((2.6 * s + 0.4, 2.1 * rows + 0.5))
    axes = fig.subplots(rows, s, squeeze=False)
    sims = []
    for r, i in enumerate(shown):
        row_maps = [intrinsic[i]] + [
            ghost[i * (s - 1) + j] for j in range(s - 1)
        ]  # groups=m: ghosts of map i are adjacent
        for j, fmap in enumerate(row_maps):
            ax = axes[r][j]
            im = ax.imshow(fmap.cpu().numpy(), cmap="viridis")  # each map on its own scale: the pattern is what matters
            fig.colorbar(im, ax=ax, shrink=0.75)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_title(f"intrinsic {i}", fontsize=9)
            else:
                sim = float(map_similarity(torch.stack([row_maps[0], fmap]))[0, 1])
                sims.append(sim)
                ax.set_title(f"ghost {i}.{j}  r = {sim:.2f}", fontsize=9)
    fig.suptitle(f"{layer}\nintrinsic maps | ghosts made from them (s={s}, d={module.dw_size})", fontsize=10)
    _save(fig, path)
    return {"layer": layer, "ratio": s, "rows": rows, "mean_correlation": sum(sims) / max(1, len(sims))}


def plot_redundant_pairs(
    model: nn.Module, x: torch.Tensor, layer: str | None, path: str | Path, n_pairs: int = 6
) -> dict[str, Any]:
    """The `n_pairs` most similar pairs of a layer's output maps, side by side, and the full similarity matrix.

    Args:
        model: any CNN.
        x: one preprocessed image batch (1, C, H, W).
        layer: the layer's name (e.g. ``layer1.0`` for ResNet-50's first residual block, paper Fig. 1);
            default the first Conv2d with at least 16 output channels.
        path: the PNG to write.
    """
    if layer is None:
        layer = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and m.out_channels >= 16), None)
        if layer is None:
            raise ValueError("no Conv2d with >= 16 output maps; name a layer with --layer")
    (maps,) = capture(model, [_module(model, layer)], x)
    if maps.dim() != 3 or maps.shape[0] < 2:
        raise ValueError(f"{layer!r} outputs {tuple(maps.shape)}, not a stack of 2D feature maps")
    sim = map_similarity(maps)
    c = sim.shape[0]
    iu = torch.triu_indices(c, c, offset=1)
    order = sim[iu[0], iu[1]].argsort(descending=True)[: min(n_pairs, iu.shape[1])]
    pairs = [(int(iu[0, k]), int(iu[1, k]), float(sim[iu[0, k], iu[1, k]])) for k in order]

    n = len(pairs)
    fig = _figure((4.4 * 2 + 4.5, 2.1 * max(n, 2)))
    grid = fig.add_gridspec(max(n, 2), 3, width_ratios=[1, 1, 2.2])
    for r, (i, j, s) in enumerate(pairs):
        lo, hi = float(torch.minimum(maps[i].min(), maps[j].min())), float(torch.maximum(maps[i].max(), maps[j].max()))
        for col, idx in enumerate((i, j)):
            ax = fig.add_subplot(grid[r, col])
            ax.imshow(maps[idx].cpu().numpy(), cmap="viridis", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"map {idx}" + (f"   r = {s:.3f}" if col == 0 else ""), fontsize=9)
    ax = fig.add_subplot(grid[:, 2])
    im = ax.imshow(sim.cpu().numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set(title=f"correlation between the {c} maps", xlabel="map", ylabel="map")
    fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(f"{layer}: the most similar pairs of output maps (candidates for cheap ghosts)", fontsize=10)
    _save(fig, path)
    return {"layer": layer, "maps": c, "pairs": pairs}


def plot_dataset_preview(
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    path: str | Path,
    per_class: int = 4,
    title: str = "",
) -> Path:
    """A grid with `per_class` images of each class (rows), titled with the class names.

    Args:
        images: uint8 (N, C, H, W).
        labels: (N,).
        classes: class names.
    """
    n_cls = len(classes)
    fig = _figure((1.5 * per_class + 1.2, 1.45 * n_cls))
    axes = fig.subplots(n_cls, per_class, squeeze=False)
    for c in range(n_cls):
        idx = (labels == c).nonzero().flatten()[:per_class].tolist()
        for k in range(per_class):
            ax = axes[c][k]
            ax.set_xticks([])
            ax.set_yticks([])
            if k < len(idx):
                img = images[idx[k]]
                if img.shape[0] == 1:
                    ax.imshow(img[0].cpu().numpy(), cmap="gray", vmin=0, vmax=255)
                else:
                    ax.imshow(img.permute(1, 2, 0).cpu().numpy())
            if k == 0:
                ax.set_ylabel(classes[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(
        f"{title}: {len(labels):,} images, {n_cls} classes" if title else f"{len(labels):,} images, {n_cls} classes",
        fontsize=10,
    )
    return _save(fig, path)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG; the PNG writer is picked for the file, whatever the user's backend."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
