"""Training and evaluating the detectors: the detection task for the shared loop, COCO mAP (pycocotools),
loading a trained detector.

    ghostnet detect train --data-dir DATA --model fasterrcnn_ghostnet --min-size 512
    ghostnet detect eval runs/RUN/best.pth
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Any

import torch
from torch import nn

from ...engine.distributed import Dist, broadcast, gather, init_distributed
from ...engine.loop import run_training
from ...engine.task import Task, autocast, check_batch_size, check_one_batch
from ...engine.weights import task_checkpoint
from ...models import create_model, list_models, model_entry, model_spec
from ...models.checkpoint import load_weights
from .coco import CocoSplit, DetectionLoader, find_coco_split, load_coco_split
from .config import DetectConfig

__all__ = ["DetectionTask", "coco_metrics", "evaluate_detector", "load_detector", "train_detector"]

# What each detector's training losses are called (torchvision's names), in a fixed order for the epoch sums.
LOSS_NAMES = {
    "retinanet_ghostnet": ["classification", "bbox_regression"],
    "fasterrcnn_ghostnet": ["loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"],
}


def load_splits(cfg: DetectConfig, verbose: bool = True) -> tuple[CocoSplit, CocoSplit]:
    """The checked train and val splits of a config (val labelled with the training categories)."""
    train_dir, train_ann = find_coco_split(cfg.data_dir, "train", cfg.train_images, cfg.train_annotations)
    val_dir, val_ann = find_coco_split(cfg.data_dir, "val", cfg.val_images, cfg.val_annotations)
    train = load_coco_split(train_dir, train_ann, cfg.bad_annotations)
    val = load_coco_split(val_dir, val_ann, cfg.bad_annotations, categories=train.category_ids)
    if verbose:
        print(f"train {train.report()}\nval   {val.report()}")
    return train, val


class DetectionTask(Task):
    """Detection on COCO-format data: the summed detector losses are trained, COCO mAP picks the best checkpoint."""

    metric = "eval_map"

    def setup(self, cfg: DetectConfig, d: Dist, device: torch.device) -> None:
        self.cfg = cfg
        self.train_split, self.val_split = load_splits(cfg, verbose=d.is_main)
        if cfg.train_subset:
            if cfg.train_subset > len(self.train_split):
                raise ValueError(
                    f"train_subset {cfg.train_subset} is larger than the training split ({len(self.train_split)} images)"
                )
            self.train_split.images = self.train_split.images[: cfg.train_subset]
        check_batch_size(cfg.batch_size, d.world_size)
        kwargs = {"num_classes": self.train_split.num_classes, **cfg.detector_options()}
        model = create_model(cfg.model, **kwargs)
        if cfg.init_checkpoint:
            heads = model_entry(cfg.model).classifier_prefixes
            load_weights(model, cfg.init_checkpoint, ignore_classifier="mismatched", classifier=heads)
        self.model = model.to(device)
        self.spec = model_spec(cfg.model, kwargs, model)
        common: dict[str, Any] = dict(
            seed=cfg.seed, rank=d.rank, world_size=d.world_size, num_workers=cfg.num_workers, device=device
        )
        self.train_loader = DetectionLoader(self.train_split, cfg.batch_size, train=True, flip=cfg.flip, **common)
        self.eval_loader = DetectionLoader(self.val_split, cfg.eval_batch_size, train=False, **common)
        check_one_batch(self.train_loader, len(self.train_split), cfg.batch_size)
        self.losses = LOSS_NAMES[cfg.model]

    def describe(self) -> str:
        from ...analysis.profile import count_params

        n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        return (
            f"{self.spec.name} (GhostNet {self.cfg.width}x + FPN) on {self.train_split.annotations}: {len(self.train_split):,} train / "
            f"{len(self.val_split):,} val images, {len(self.train_split.classes)} classes, {count_params(self.model):,} params "
            f"({n_train:,} trained), images resized to {self.cfg.min_size} (long side <= {self.cfg.max_size})"
        )

    def stat_names(self) -> list[str]:
        return ["images", "loss", *self.losses]

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        images, targets = batch
        with autocast(images[0].device, self.cfg.amp):
            parts = net(images, targets)
        parts = {k: v.float() for k, v in parts.items()}
        loss = sum(parts[k] for k in self.losses)
        n = len(images)
        return loss, [n, loss.item() * n, *(parts[k].item() * n for k in self.losses)]

    def train_row(self, sums: list[float]) -> dict[str, float]:
        n = max(1.0, sums[0])
        row = {"train_loss": sums[1] / n}
        row.update({f"train_{k.removeprefix('loss_')}": v / n for k, v in zip(self.losses, sums[2:])})
        return row

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        m = evaluate_detector(model, self.eval_loader, self.val_split, d, cfg.amp, progress=cfg.progress)
        return {
            "eval_map": m["map"],
            "eval_map50": m["map50"],
            "eval_map75": m["map75"],
            "eval_class_ap": m["per_class"],
        }

    def checkpoint_data(self) -> dict[str, Any]:
        return {"classes": self.train_split.classes, "category_ids": self.train_split.category_ids, "task": "detection"}

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        from ...analysis.profile import count_params

        final = history[-1] if history else {}
        summary = {
            "dataset": str(self.train_split.annotations),
            "params": count_params(model),
            "final_map": final.get("eval_map"),
            "final_map50": final.get("eval_map50"),
            "best_map": best,
        }
        text = f"val mAP {final.get('eval_map', math.nan):.2f} (best {best:.2f}), mAP@0.5 {final.get('eval_map50', math.nan):.2f}"
        return summary, text


def train_detector(cfg: DetectConfig) -> dict[str, Any]:
    """Train and evaluate a detector (`ghostnet detect train`); returns the run summary."""
    return run_training(cfg, DetectionTask())


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_detector(
    model: nn.Module,
    loader: DetectionLoader,
    split: CocoSplit,
    d: Dist | None = None,
    amp: str = "none",
    progress: bool = False,
) -> dict[str, Any]:
    """COCO box AP of `model` over the whole split (every rank's detections gathered on rank 0, result shared)."""
    from tqdm import tqdm

    d = d or Dist()
    model.eval()
    records: list[dict[str, Any]] = []
    for images, targets in tqdm(
        loader.batches(), total=len(loader), desc="eval", leave=False, disable=not (progress and d.is_main)
    ):
        with autocast(images[0].device, amp):
            outputs = model(images)
        for t, o in zip(targets, outputs):
            records.extend(_records(t["image_id"], o, split.category_ids))
    everything = [r for part in gather(records, d) for r in part]
    metrics = coco_metrics(split, everything) if d.is_main else None
    return broadcast(metrics, d)


def _records(image_id: int, out: dict[str, torch.Tensor], category_ids: list[int]) -> list[dict[str, Any]]:
    boxes, scores, labels = out["boxes"].float().cpu(), out["scores"].float().cpu(), out["labels"].cpu()
    rows = []
    for (x0, y0, x1, y1), s, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
        if 1 <= label <= len(category_ids):  # 0 is the background
            rows.append(
                {
                    "image_id": image_id,
                    "category_id": category_ids[label - 1],
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": s,
                }
            )
    return rows


def coco_metrics(split: CocoSplit, records: list[dict[str, Any]]) -> dict[str, Any]:
    """COCO's box AP for detections in result format (``image_id, category_id, bbox [x, y, w, h], score``), in %.

    Returns:
        ``{"map", "map50", "map75", "per_class": {name: {"ap", "ap50"} or None if the class has no boxes}, "detections"}``
    """
    from pycocotools.cocoeval import COCOeval

    gt = split.coco
    names = dict(zip(split.category_ids, split.classes))
    empty = {
        "map": 0.0,
        "map50": 0.0,
        "map75": 0.0,
        "detections": 0,
        "per_class": {n: ({"ap": 0.0, "ap50": 0.0} if gt.getAnnIds(catIds=[c]) else None) for c, n in names.items()},
    }
    if not records:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(records)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.params.catIds = list(split.category_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # (IoU thresholds, recall points, classes, areas, max dets)
    per_class: dict[str, Any] = {}
    for k, c in enumerate(ev.params.catIds):
        p_all, p50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        valid = p_all[p_all > -1]
        per_class[names[c]] = (
            None if valid.size == 0 else {"ap": 100 * float(valid.mean()), "ap50": 100 * float(p50[p50 > -1].mean())}
        )
    stats = [max(0.0, float(v)) * 100 for v in ev.stats[:3]]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2], "per_class": per_class, "detections": len(records)}


# ---------------------------------------------------------------- a trained detector


def load_detector(
    path: str | os.PathLike | dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any], dict[str, Any]]:
    """A detector from a `ghostnet detect train` checkpoint (a path, or the checkpoint already read), in eval mode:
    (model, data info, training config)."""
    detectors = list_models(task="detect")
    ckpt, name, kwargs = task_checkpoint(path, detectors, "a detector trained with `ghostnet detect train`")
    if "out_indices" in kwargs:
        kwargs["out_indices"] = tuple(kwargs["out_indices"])
    model = create_model(name, **kwargs)
    load_weights(model, ckpt["model"])
    return model.to(device).eval(), ckpt.get("data", {}), ckpt.get("config", {})


def evaluate_checkpoint(
    path: str | os.PathLike,
    data_dir: str | None = None,
    images: str | None = None,
    annotations: str | None = None,
    batch_size: int = 4,
    device: str = "auto",
    num_workers: int = 2,
    progress: bool = True,
) -> dict[str, Any]:
    """COCO mAP of a trained detector on a split: the given one, or the validation split it was trained with."""
    d, dev = init_distributed(device)
    model, data, config = load_detector(path, dev)
    if images or annotations or data_dir:
        img_dir, ann = find_coco_split(data_dir, "val", images, annotations)
    else:
        img_dir, ann = find_coco_split(
            config.get("data_dir"), "val", config.get("val_images"), config.get("val_annotations")
        )
    split = load_coco_split(img_dir, ann, config.get("bad_annotations", "skip"), categories=data["category_ids"])
    loader = DetectionLoader(
        split, batch_size, train=False, rank=d.rank, world_size=d.world_size, num_workers=num_workers, device=dev
    )
    m = evaluate_detector(model, loader, split, d, progress=progress)
    return {
        **m,
        "checkpoint": str(path),
        "annotations": str(ann),
        "images": len(split),
        "report": split.report(),
        "is_main": d.is_main,
    }
