"""Training and evaluating the segmenters: the segmentation task for the shared loop, full-image mIoU, loading a
trained segmenter.

    ghostnet segment train --dataset folder --data-dir data/seg --model lraspp_ghostnet_100 --crop-size 160
    ghostnet segment eval runs/RUN/best.pth
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...engine.distributed import Dist, all_reduce_sum, init_distributed
from ...engine.loop import run_training
from ...engine.task import Task, autocast, check_batch_size, check_one_batch
from ...engine.weights import task_checkpoint
from ...models import create_model, list_models, model_entry, model_spec
from ...models.checkpoint import load_weights
from .config import SegmentConfig
from .data import IGNORE_INDEX, SegmentationLoader, SegSplit, download_voc, load_segmentation_split
from .metrics import confusion_matrix, segmentation_metrics

__all__ = [
    "SegmentationTask",
    "evaluate_checkpoint",
    "evaluate_segmenter",
    "load_segmenter",
    "segmentation_loss",
    "train_segmenter",
]


def load_splits(cfg: SegmentConfig, verbose: bool = True) -> tuple[SegSplit, SegSplit]:
    """The checked train and val splits of a config (VOC fetched first with ``download``)."""
    root = cfg.data_dir
    if cfg.download:
        root = str(download_voc(cfg.data_dir))
    train = load_segmentation_split(cfg.dataset, root, cfg.train_split)  # type: ignore[arg-type]
    val = load_segmentation_split(cfg.dataset, root, cfg.val_split)  # type: ignore[arg-type]
    if verbose:
        print(f"train {train.report()}\nval   {val.report()}")
    return train, val


def segmentation_loss(out: dict[str, torch.Tensor], masks: torch.Tensor, aux_weight: float) -> torch.Tensor:
    """Cross-entropy of the logits against the masks (255 ignored), plus `aux_weight` x the auxiliary head's."""
    loss = F.cross_entropy(out["out"].float(), masks, ignore_index=IGNORE_INDEX)
    if "aux" in out:
        loss = loss + aux_weight * F.cross_entropy(out["aux"].float(), masks, ignore_index=IGNORE_INDEX)
    return loss


class SegmentationTask(Task):
    """Segmentation: pixel-wise cross-entropy on random crops is trained, full-image mIoU picks the best checkpoint."""

    metric = "eval_miou"

    def setup(self, cfg: SegmentConfig, d: Dist, device: torch.device) -> None:
        self.cfg = cfg
        self.train_split, self.val_split = load_splits(cfg, verbose=d.is_main)
        if cfg.train_subset:
            self.train_split.images = self.train_split.images[: cfg.train_subset]
            self.train_split.masks = self.train_split.masks[: cfg.train_subset]
        check_batch_size(cfg.batch_size, d.world_size)
        kwargs = {"num_classes": len(self.train_split.classes), **cfg.segmenter_options()}
        model = create_model(cfg.model, **kwargs)
        if cfg.init_checkpoint:
            heads = model_entry(cfg.model).classifier_prefixes
            load_weights(model, cfg.init_checkpoint, ignore_classifier="mismatched", classifier=heads)
        self.model = model.to(device)
        self.spec = model_spec(cfg.model, kwargs, model)
        common: dict[str, Any] = dict(
            seed=cfg.seed, rank=d.rank, world_size=d.world_size, num_workers=cfg.num_workers, device=device
        )
        self.train_loader = SegmentationLoader(
            self.train_split,
            cfg.batch_size,
            train=True,
            crop=cfg.crop_size,
            scale_range=(cfg.scale_min, cfg.scale_max),
            flip=cfg.flip,
            **common,
        )
        self.eval_loader = SegmentationLoader(self.val_split, cfg.eval_batch_size, train=False, **common)
        check_one_batch(self.train_loader, len(self.train_split), cfg.batch_size)

    def describe(self) -> str:
        from ...analysis.profile import count_params

        return (
            f"{self.spec.name} (GhostNet {self.cfg.version}, output stride {self.cfg.output_stride}) on "
            f"{self.train_split.root}: {len(self.train_split):,} train / {len(self.val_split):,} val images, "
            f"{len(self.train_split.classes)} classes, {count_params(self.model):,} params, {self.cfg.crop_size}px crops"
        )

    def stat_names(self) -> list[str]:
        return ["images", "loss", "pixels", "correct"]

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        images, masks = batch
        with autocast(images.device, self.cfg.amp):
            out = net(images)
        loss = segmentation_loss(out, masks, self.cfg.aux_weight)
        keep = masks != IGNORE_INDEX
        correct = (out["out"].detach().argmax(1) == masks)[keep].sum()
        n = len(images)
        return loss, [n, loss.item() * n, float(keep.sum()), float(correct)]

    def train_row(self, sums: list[float]) -> dict[str, float]:
        return {"train_loss": sums[1] / max(1.0, sums[0]), "train_pixel_acc": 100 * sums[3] / max(1.0, sums[2])}

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        m = evaluate_segmenter(model, self.eval_loader, self.val_split.classes, d, cfg.amp, progress=cfg.progress)
        return {
            "eval_miou": m["miou"],
            "eval_pixel_acc": m["pixel_acc"],
            "eval_mean_acc": m["mean_acc"],
            "eval_class_iou": m["per_class_iou"],
        }

    def checkpoint_data(self) -> dict[str, Any]:
        from ...data.datasets import IMAGENET_MEAN, IMAGENET_STD

        return {
            "classes": self.train_split.classes,
            "task": "segmentation",
            "format": self.cfg.dataset,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        }

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        from ...analysis.profile import count_params

        final = history[-1] if history else {}
        summary = {
            "dataset": str(self.train_split.root),
            "params": count_params(model),
            "final_miou": final.get("eval_miou"),
            "final_pixel_acc": final.get("eval_pixel_acc"),
            "best_miou": best,
        }
        miou, acc = final.get("eval_miou", math.nan), final.get("eval_pixel_acc", math.nan)
        text = f"val mIoU {miou:.2f} (best {best:.2f}), pixel acc. {acc:.2f}"
        return summary, text


def train_segmenter(cfg: SegmentConfig) -> dict[str, Any]:
    """Train and evaluate a segmenter (`ghostnet segment train`); returns the run summary."""
    return run_training(cfg, SegmentationTask())


@torch.no_grad()
def evaluate_segmenter(
    model: nn.Module,
    loader: SegmentationLoader,
    classes: list[str],
    d: Dist | None = None,
    amp: str = "none",
    progress: bool = False,
) -> dict[str, Any]:
    """mIoU etc. (`seg_metrics.segmentation_metrics`) of `model` on whole images at their own resolution; every
    rank's confusion matrix is summed, so each rank returns the same result."""
    from tqdm import tqdm

    d = d or Dist()
    model.eval()
    n = len(classes)
    cm = torch.zeros(n, n, dtype=torch.int64)
    for images, masks in tqdm(
        loader.batches(), total=len(loader), desc="eval", leave=False, disable=not (progress and d.is_main)
    ):
        for x, y in _same_size_groups(images, masks):
            with autocast(x.device, amp):
                pred = model(x)["out"].argmax(1)  # (B, H, W): the heads upsample to the input size
            cm += confusion_matrix(pred, y, n)
    device = next(model.parameters()).device
    cm = torch.tensor(all_reduce_sum(cm.flatten().double().tolist(), d, device)).long().reshape(n, n)
    return segmentation_metrics(cm, classes)


def _same_size_groups(images: list[torch.Tensor], masks: list[torch.Tensor]):
    """Runs of consecutive images of one size, stacked: ((B, 3, H, W), (B, H, W))."""
    start = 0
    for i in range(1, len(images) + 1):
        if i == len(images) or images[i].shape != images[start].shape:
            yield torch.stack(images[start:i]), torch.stack(masks[start:i])
            start = i


def load_segmenter(
    path: str | os.PathLike | dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """A segmenter from a `ghostnet segment train` checkpoint (a path, or the checkpoint already read), in eval mode:
    (model, data info, training config)."""
    segmenters = list_models(task="segment")
    ckpt, name, kwargs = task_checkpoint(path, segmenters, "a segmenter trained with `ghostnet segment train`")
    model = create_model(name, **kwargs)
    load_weights(model, ckpt["model"])
    return model.to(device).eval(), ckpt.get("data", {}), ckpt.get("config", {})


def evaluate_checkpoint(
    path: str | os.PathLike,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    batch_size: int = 1,
    device: str = "auto",
    num_workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """Full-image mIoU of a trained segmenter on a split: the given one, or the validation split it was trained with."""
    d, dev = init_distributed(device)
    model, data, config = load_segmenter(path, dev)
    fmt = dataset or config.get("dataset")
    root = data_dir or config.get("data_dir")
    if root is None and fmt == "voc" and config.get("download"):  # where seg-train --download put VOC
        from ...data.download import download_dir

        root = str(download_dir(None) / "VOCdevkit" / "VOC2012")
    seg = load_segmentation_split(fmt, root, split or config.get("val_split", "val"))  # type: ignore[arg-type]
    if list(seg.classes) != list(data["classes"]):
        differ = next((i for i, (a, b) in enumerate(zip(seg.classes, data["classes"])) if a != b), None)
        raise ValueError(
            f"{seg.root} has {len(seg.classes)} classes, the segmenter was trained on {len(data['classes'])}"
            if differ is None
            else f"{seg.root}'s class {differ} is {seg.classes[differ]!r}, the segmenter's is {data['classes'][differ]!r}"
        )
    loader = SegmentationLoader(
        seg, batch_size, train=False, rank=d.rank, world_size=d.world_size, num_workers=num_workers, device=dev
    )
    m = evaluate_segmenter(model, loader, data["classes"], d, progress=progress)
    return {**m, "checkpoint": str(path), "images": len(seg), "report": seg.report(), "is_main": d.is_main}
