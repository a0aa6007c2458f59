"""Face (identity) recognition on the shared loop: a GhostFaceNet embedding trained through a margin head
(ArcFace, CosFace, or plain softmax), evaluated each epoch by 1:1 verification of held-out pairs.

    ghostnet face train --dataset folder --data-dir CASIA --val-bin lfw.bin --model ghostfacenet_v1_130
    ghostnet face eval runs/RUN/best.pth --bin agedb_30.bin --roc roc.png

The margin head is the task's `loss_head`: optimised with the model and saved in the checkpoint (under
"loss_head"), while the checkpoint's "model" is the embedding network alone, which `ghostnet classify export` exports.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...data import TensorLoader
from ...data.images import Preprocess
from ...data.loaders import sample_seed
from ...engine.config import RunConfig, option
from ...engine.distributed import Dist, init_distributed
from ...engine.loop import run_training
from ...engine.task import Task, autocast, check_batch_size, check_one_batch
from ...models import create_model, model_spec
from ...models.checkpoint import CheckpointError
from .data import IdentityImageFiles, PairList, decode_pair_images, load_pair_images
from .loaders import (
    BUILTIN_IDENTITY_SETS,
    FACE_MEAN,
    FACE_STD,
    FaceData,
    IdentityFileLoader,
    embed_batches,
    load_face_data,
    validation_pairs,
)
from .margin import MARGIN_HEADS, create_margin_head
from .verification import pair_scores, roc_curve, verification_report

__all__ = ["FaceConfig", "FaceTask", "evaluate_face_checkpoint", "load_face_model", "train_face"]


@dataclass
class FaceConfig(RunConfig):
    """A face (identity) embedding run (`ghostnet face train`)."""

    # --- data
    dataset: str = option("folder", "folder (DATA_DIR/<identity>/*.jpg) | fashion_mnist | mnist | digits")
    data_dir: str | None = option(None, "the folder of identity folders; for the built-in sets, where to look first")
    download: bool = option(False, "built-in sets: fetch (Fashion-)MNIST when missing (checksum-verified)")
    train_identities: list[int] = option(
        factory=list, help="built-in sets: the classes trained on (none: the first 60%); the others give the test pairs"
    )
    image_size: int = option(112, "input resolution (images are resized to it)")
    in_chans: int | None = option(None, "model input channels; None = the data's; 3 on grayscale data replicates it")
    min_images: int = option(2, "folder: leave out identities with fewer images than this (with a warning)")
    val_pairs: str | None = option(None, "folder: an LFW-style pairs.txt to verify on (images under VAL_ROOT)")
    val_root: str | None = option(None, "folder: the images VAL_PAIRS names; None = DATA_DIR")
    val_bin: str | None = option(
        None, "folder: an insightface .bin verification set (lfw.bin, cfp_fp.bin, agedb_30.bin)"
    )
    holdout_identities: float = option(
        0.2, "folder without VAL_PAIRS/VAL_BIN: this fraction of identities is held out and gives the pairs"
    )
    num_pairs: int = option(1000, "generated verification pairs (half same-identity)")
    augment: str = option(
        "flip",
        "flip (horizontal flips only, as for aligned faces) | crop_flip (pad 4 + random crop + flip) | crop | none",
    )
    # --- model and head
    model: str = option("ghostfacenet_v1", "a GhostFaceNet model (`ghostnet list ghostfacenet*`)")
    embedding_size: int = option(512, "the embedding's width")
    prelu: bool = option(True, "PReLU instead of ReLU (GhostFaceNets)")
    stem_stride: int = option(1, "1 (output stride 16, the paper's '-1' models) or 2")
    dropout: float = option(0.0, "dropout in the GDC head")
    head: str = option("arcface", "arcface | cosface | softmax (a plain linear classifier, the baseline)")
    margin: float | None = option(None, "ArcFace: radians (default 0.5); CosFace: cosine offset (default 0.35)")
    scale: float = option(64.0, "logit scale s of ArcFace / CosFace")
    easy_margin: bool = option(False, "ArcFace: margin only where cos(theta) > 0 (else insightface's threshold form)")
    # --- optimisation
    weight_decay: float = option(5e-4, "L2 weight decay; not applied to BN weights, biases and PReLU slopes")
    metric_fars: list[float] = option(factory=lambda: [1e-3, 1e-4], help="FARs at which TAR is reported")

    def data_name(self) -> str:
        return self.dataset

    def validate(self) -> None:
        super().validate()
        checks = (
            (
                self.dataset in ("folder", *BUILTIN_IDENTITY_SETS),
                "dataset must be folder, fashion_mnist, mnist or digits",
            ),
            (self.image_size >= 16, "image_size must be >= 16"),
            (self.in_chans in (None, 1, 3), "in_chans must be 1 or 3"),
            (self.min_images >= 1, "min_images must be >= 1"),
            (0 < self.holdout_identities < 1, "holdout_identities must be a fraction in (0, 1)"),
            (self.num_pairs >= 20, "num_pairs must be >= 20 (10 folds of both kinds)"),
            (self.augment in ("flip", "crop_flip", "crop", "none"), "augment must be flip, crop_flip, crop or none"),
            (self.embedding_size >= 1, "embedding_size must be >= 1"),
            (self.stem_stride in (1, 2), "stem_stride must be 1 or 2"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.head in MARGIN_HEADS, f"head must be one of {', '.join(MARGIN_HEADS)}"),
            (self.scale > 0, "scale must be > 0"),
            (self.margin is None or self.margin >= 0, "margin must be >= 0"),
            (all(0 < f < 1 for f in self.metric_fars), "metric_fars must be in (0, 1)"),
            (not (self.val_pairs and self.val_bin), "give val_pairs or val_bin, not both"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def _model_kwargs(cfg: FaceConfig, in_chans: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(
        embedding_size=cfg.embedding_size, input_size=cfg.image_size, in_chans=in_chans, prelu=cfg.prelu,
        stem_stride=cfg.stem_stride, dropout=cfg.dropout,
    )  # fmt: skip
    if cfg.width is not None:
        kwargs["width"] = cfg.width
    return kwargs


class FlipLoader:
    """A training `TensorLoader` whose batches are mirrored image by image with probability 1/2 (no crop: aligned
    faces keep their landmarks in place). The coin of sample j of batch i in an epoch is fixed by (seed, epoch, i),
    drawn over the global batch and sharded as the loader shards it, so resuming mid-epoch and DDP see the same flips.
    """

    def __init__(self, loader: TensorLoader) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ld = self.loader
        for i, (x, y) in enumerate(ld.batches(epoch, start), start):
            coins = torch.rand(
                ld.batch_size, generator=torch.Generator().manual_seed(sample_seed(ld.seed, epoch, i, 2))
            )
            mine = (coins[ld.rank :: ld.world_size] < 0.5).to(x.device)
            yield torch.where(mine[:, None, None, None], x.flip(3), x), y


def _train_loader(cfg: FaceConfig, data: FaceData, d: Dist, norm: dict[str, Any]) -> Any:
    """Identity folders: read from their files per batch (`IdentityFileLoader`); built-in sets: in memory."""
    shard: dict[str, Any] = dict(seed=cfg.seed, rank=d.rank, world_size=d.world_size, **norm)
    if isinstance(data.train, IdentityImageFiles):
        return IdentityFileLoader(data.train, cfg.batch_size, augment=cfg.augment, num_workers=cfg.num_workers, **shard)
    assert data.train is not None
    augment = "none" if cfg.augment == "flip" else cfg.augment
    loader = TensorLoader(data.train, cfg.batch_size, train=True, augment=augment, **shard)
    return FlipLoader(loader) if cfg.augment == "flip" else loader


class FaceTask(Task):
    """Identity embeddings: cross-entropy through a margin head; 10-fold verification accuracy picks best.pth."""

    metric = "eval_acc"

    def setup(self, cfg: FaceConfig, d: Dist, device: torch.device) -> None:
        self.cfg = cfg
        self.data = load_face_data(cfg)
        assert self.data.train is not None
        check_batch_size(cfg.batch_size, d.world_size)
        self.in_chans = cfg.in_chans or self.data.in_chans
        model = create_model(cfg.model, checkpoint_path=cfg.init_checkpoint, **_model_kwargs(cfg, self.in_chans))
        embedding_size = getattr(model, "embedding_size", None)
        if not isinstance(embedding_size, int):
            raise ValueError(f"model {cfg.model!r} is not an embedding model; use a ghostfacenet_* model")
        self.model = model.to(device)
        self.spec = model_spec(cfg.model, _model_kwargs(cfg, self.in_chans), model)
        n_ids = len(self.data.identities)
        self.loss_head = create_margin_head(cfg.head, embedding_size, n_ids, cfg.scale, cfg.margin, cfg.easy_margin).to(
            device
        )
        norm: dict[str, Any] = dict(mean=self.data.mean, std=self.data.std, in_chans=self.in_chans, device=device)
        self.train_loader = _train_loader(cfg, self.data, d, norm)
        # Every rank embeds all pairs (the sets are small): the metrics are the same everywhere.
        self.eval_loader = TensorLoader(self.data.pairs.images, cfg.eval_batch_size, train=False, **norm)
        check_one_batch(self.train_loader, len(self.data.train), cfg.batch_size)
        self.threshold = math.nan

    def describe(self) -> str:
        from ...analysis.profile import count_params

        return (
            f"{self.spec.name} ({self.model.embedding_size}-d embedding, {count_params(self.model):,} params), "
            f"{self.cfg.head} head, trained on {self.data.describe()}; {self.data.image_size}x{self.data.image_size} inputs"
        )

    def stat_names(self) -> list[str]:
        return ["images", "loss", "correct"]

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        x, y = batch
        with autocast(x.device, self.cfg.amp):
            logits = net(x, y)  # the margin head's logits: the target class carries the margin
        loss = F.cross_entropy(logits.float(), y)
        n = len(y)
        return loss, [n, loss.item() * n, (logits.argmax(1) == y).sum().item()]

    def train_row(self, sums: list[float]) -> dict[str, float]:
        n = max(1.0, sums[0])
        return {"train_loss": sums[1] / n, "train_acc": 100 * sums[2] / n}

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        emb = embed_batches(model, self.eval_loader, cfg.amp)
        r = verification_report(pair_scores(emb), self.data.pairs.issame.numpy(), tuple(cfg.metric_fars))
        if model is self.model:
            self.threshold = r["threshold"]
        row = {"eval_acc": r["accuracy"], "eval_acc_std": r["accuracy_std"], "eval_threshold": r["threshold"]}
        row.update({f"eval_tar_far_{k}": 100 * v["tar"] for k, v in r["tar_at_far"].items()})
        return row

    def checkpoint_data(self) -> dict[str, Any]:
        return {
            "task": "face",
            "identities": self.data.identities,
            "image_size": self.data.image_size,
            "in_chans": self.in_chans,
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            "embedding_size": self.model.embedding_size,
            "threshold": self.threshold,  # calibrated on the validation pairs at the last evaluation
            "pairs": self.data.pairs.source,
        }

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        final = history[-1] if history else {}
        summary = {
            "dataset": self.data.describe(),
            "head": self.cfg.head,
            "final_acc": final.get("eval_acc"),
            "final_acc_std": final.get("eval_acc_std"),
            "best_acc": best,
            "threshold": self.threshold,
        }
        text = (
            f"verification accuracy {final.get('eval_acc', math.nan):.2f} +- {final.get('eval_acc_std', math.nan):.2f}% "
            f"(best {best:.2f}%), threshold {self.threshold:.3f}"
        )
        return summary, text


def train_face(cfg: FaceConfig) -> dict[str, Any]:
    """Train and verify an identity embedding model (`ghostnet face train`); returns the run summary."""
    return run_training(cfg, FaceTask())


# ---------------------------------------------------------------- a trained embedding model


def load_face_model(
    checkpoint: str | os.PathLike, embedding_size: int | None = None
) -> tuple[nn.Module, Preprocess, dict[str, Any], dict[str, Any]]:
    """The embedding model of a `face-train` checkpoint, in eval mode: (model, preprocessing, data info, config).

    Raises:
        CheckpointError: not a face checkpoint; ValueError: `embedding_size` given and not the checkpoint's.
    """
    from ...models.checkpoint import FORMAT, load_weights, read_checkpoint

    ckpt = read_checkpoint(checkpoint)  # read once: the weights and the data info come from the same dict
    data = ckpt.get("data") or {}
    if ckpt.get("format") != FORMAT or not ckpt.get("model_name") or data.get("task") != "face":
        raise CheckpointError(f"{checkpoint} is not an embedding model trained with `ghostnet face train`")
    model = create_model(ckpt["model_name"], **dict(ckpt.get("model_kwargs") or {}))
    if not hasattr(model, "embedding_size"):
        raise CheckpointError(f"{checkpoint} is not an embedding model trained with `ghostnet face train`")
    load_weights(model, ckpt)
    if embedding_size is not None and embedding_size != model.embedding_size:
        raise ValueError(
            f"{checkpoint} makes {model.embedding_size}-d embeddings, not {embedding_size}-d (--embedding-size)"
        )
    mean = tuple(data.get("mean", FACE_MEAN))
    prep = Preprocess(
        image_size=data.get("image_size", 112),
        in_chans=data.get("in_chans", 3),
        data_chans=len(mean),
        mean=mean,
        std=tuple(data.get("std", FACE_STD)),
        center_crop=False,  # trained on whole (aligned) images resized to image_size
    )
    return model.eval(), prep, data, ckpt.get("config") or {}


def _pairs_for(
    config: dict[str, Any], image_size: int, gray: bool, pairs: str | None, root: str | None, bin_path: str | None
) -> PairList:
    if bin_path:
        return decode_pair_images(bin_path, image_size, gray)
    if pairs:
        if not root:
            raise ValueError("--pairs needs --root: the folder of identity folders the pairs name")
        return load_pair_images(pairs, root, image_size, gray)
    known = {k: v for k, v in config.items() if k in FaceConfig.__dataclass_fields__}
    return validation_pairs(FaceConfig(**known))


def evaluate_face_checkpoint(
    checkpoint: str | os.PathLike,
    pairs: str | None = None,
    root: str | None = None,
    bin_path: str | None = None,
    batch_size: int = 128,
    device: str = "auto",
    fars: tuple[float, ...] = (1e-3, 1e-4),
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """The verification protocol for a face checkpoint on a ``.bin`` set, a ``pairs.txt`` (with `root`), or (by
    default) the validation pairs it was trained with.

    Returns:
        (the `verification_report` with the checkpoint, the pairs' source and the threshold calibrated in
        training; the ROC as (FAR, TAR) arrays, for `plot_roc`).
    """
    _, dev = init_distributed(device)
    model, prep, data, config = load_face_model(checkpoint)
    pair_list = _pairs_for(config, prep.image_size, prep.data_chans == 1, pairs, root, bin_path)
    loader = TensorLoader(
        pair_list.images, batch_size, train=False, mean=prep.mean, std=prep.std, in_chans=prep.in_chans, device=dev
    )
    scores = pair_scores(embed_batches(model.to(dev), loader))
    issame = pair_list.issame.numpy()
    r = verification_report(scores, issame, fars)
    far, tar, _ = roc_curve(scores, issame)
    report = {
        **r,
        "checkpoint": str(checkpoint),
        "source": pair_list.source,
        "trained_threshold": data.get("threshold"),
    }
    return report, (far, tar)
