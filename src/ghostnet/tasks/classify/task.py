"""Image classification on the shared loop: the data and model for a run, cross-entropy (plus, with a
teacher, GhostNetV3's distillation term), top-1/top-5.

from ghostnet.tasks.classify import load_recipe, train
summary = train(load_recipe("digits", {"epochs": 3}))
"""

from __future__ import annotations

import sys
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ...data import DataBundle, DatasetError, FolderLoader, ImageData, TensorLoader, load_dataset
from ...engine.distributed import Dist, all_reduce_sum
from ...engine.loop import run_training
from ...engine.task import Task, autocast, check_batch_size
from ...engine.weights import load_model
from ...models import create_model, model_spec
from .config import TrainConfig

__all__ = [
    "ClassificationTask",
    "build_loaders",
    "build_model_for_data",
    "count_skipped",
    "distillation_loss",
    "evaluate",
    "load_teacher",
    "skipped_files_note",
    "subset",
    "train",
]


# ---------------------------------------------------------------- data and model


def subset(split: Any, n: int) -> Any:
    """The first `n` samples of a split (in-memory or folder)."""
    if n > len(split):
        raise ValueError(f"train_subset {n} is larger than the training split ({len(split)} images)")
    if isinstance(split, ImageData):
        return ImageData(split.images[:n], split.labels[:n])
    return torch.utils.data.Subset(split, range(n))


def build_loaders(cfg: TrainConfig, data: DataBundle, d: Dist, device: torch.device, in_chans: int):
    """The train and eval loaders of `data` for this rank."""
    check_batch_size(cfg.batch_size, d.world_size)
    common: dict[str, Any] = dict(
        seed=cfg.seed, rank=d.rank, world_size=d.world_size, device=device, channels_last=cfg.channels_last
    )
    train: TensorLoader | FolderLoader
    test: TensorLoader | FolderLoader
    if data.in_memory:
        augment = cfg.augment or data.augment
        if augment == "imagenet":
            raise ValueError("augment 'imagenet' is for image folders; use crop_flip, crop or none")
        norm: dict[str, Any] = dict(mean=data.mean, std=data.std, in_chans=in_chans)
        train = TensorLoader(data.train, cfg.batch_size, train=True, augment=augment, **norm, **common)
        test = TensorLoader(data.test, cfg.eval_batch_size, train=False, **norm, **common)
    else:
        if cfg.augment not in (None, "imagenet"):
            raise ValueError("image folders use augment 'imagenet' (RandomResizedCrop + flip)")
        folder: dict[str, Any] = dict(
            image_size=data.image_size,
            mean=data.mean,
            std=data.std,
            in_chans=in_chans,
            num_workers=cfg.num_workers,
            bad_images=cfg.bad_images,
        )
        train = FolderLoader(data.train, cfg.batch_size, train=True, color_jitter=cfg.color_jitter, **folder, **common)
        test = FolderLoader(data.test, cfg.eval_batch_size, train=False, **folder, **common)
    if len(train) == 0:
        raise ValueError(f"the training split has {len(data.train)} images, fewer than one batch of {cfg.batch_size}")
    return train, test


def count_skipped(loaders: list[Any], d: Dist, device: torch.device) -> tuple[list[int], str]:
    """How many unreadable images each loader dropped in its latest pass, not yet counted (summed over ranks),
    and the first of them on this rank (``""`` if none). In-memory loaders never drop any."""
    taken = [loader.take_skipped() if isinstance(loader, FolderLoader) else [] for loader in loaders]
    counts = all_reduce_sum([float(len(t)) for t in taken], d, device)
    first = next((t[0] for t in taken if t), "")
    return [int(n) for n in counts], first


def skipped_files_note(data: DataBundle) -> str:
    """``"; left out N files that are not images (first: ...)"`` for an image folder that had some, else ``""``."""
    skipped = data.meta.get("skipped_files", {})
    files = [f for split in ("train", "test") for f in skipped.get(split, [])]
    return f"; left out {len(files)} files that are not images (first: {files[0]})" if files else ""


def model_kwargs_for_data(cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
    """The configured model's keyword arguments, with a classifier for the dataset's classes."""
    kwargs: dict[str, Any] = {"num_classes": data.num_classes, "in_chans": cfg.in_chans or data.in_chans}
    for name in ("drop_rate", "width", "ratio", "dw_size"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    return kwargs


def build_model_for_data(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """The configured model with a classifier for the dataset's classes."""
    return create_model(cfg.model, checkpoint_path=cfg.init_checkpoint, **model_kwargs_for_data(cfg, data))


# ---------------------------------------------------------------- knowledge distillation


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """GhostNetV3's distillation term: ``T^2 * mean_batch(-sum_c softmax(teacher/T)_c * log_softmax(student/T)_c)``.

    The cross-entropy of the student's tempered prediction against the teacher's. It is KL(teacher || student)
    plus the teacher's entropy, which does not depend on the student, so its gradients are KL's. The factor T^2
    (Hinton et al.) keeps the gradients' size when T changes; at T = 1 the term is exactly the paper's.
    """
    t = float(temperature)
    soft_targets = F.softmax(teacher_logits.float() / t, dim=1)
    log_probs = F.log_softmax(student_logits.float() / t, dim=1)
    return -(soft_targets * log_probs).sum(dim=1).mean() * (t * t)


def load_teacher(cfg: TrainConfig, data: DataBundle, in_chans: int, device: torch.device) -> tuple[nn.Module, str]:
    """The frozen teacher of a distillation run (eval mode, no gradients, on `device`), checked on the student's input.

    Returns:
        (teacher, a warning, or ``""``, when the teacher was trained on another normalisation or input size).

    Raises:
        ValueError (one line): the checkpoint is missing or holds another model, the teacher does not take the
        student's input (channels), or it predicts another number of classes than the dataset has.
    """
    name, path = cfg.teacher, cfg.teacher_checkpoint
    assert name is not None and path is not None  # TrainConfig.validate
    # The teacher's constructor draws random initial weights (on the CPU) before its checkpoint replaces them;
    # forking the CPU RNG keeps the run's random stream exactly that of the same run without a teacher.
    with torch.random.fork_rng(devices=[]):
        try:
            teacher, prep, _ = load_model(path, name)
        except ValueError as e:
            raise type(e)(f"teacher: {e}") from None
    teacher = teacher.to(device).eval().requires_grad_(False)
    if cfg.channels_last:
        teacher = teacher.to(memory_format=torch.channels_last)
    size = data.image_size
    try:
        with torch.no_grad():
            out = teacher(torch.zeros(1, in_chans, size, size, device=device))
    except RuntimeError as e:
        raise ValueError(
            f"teacher {name} ({path}) does not take the student's {in_chans}x{size}x{size} input "
            f"(in_chans 3 replicates grayscale data): {str(e).splitlines()[0]}"
        ) from None
    if out.ndim != 2 or out.shape[1] != data.num_classes:
        raise ValueError(
            f"teacher {name} ({path}) predicts {out.shape[-1]} classes but {data.name} has {data.num_classes}"
        )
    note = ""
    same_norm = [round(v, 4) for v in (*prep.mean, *prep.std)] == [round(v, 4) for v in (*data.mean, *data.std)]
    if not same_norm or prep.image_size != size:
        note = (
            f"warning: the teacher was trained on {prep.image_size}x{prep.image_size} inputs normalised with mean "
            f"{tuple(prep.mean)} std {tuple(prep.std)}; it sees the student's {size}x{size} batch, normalised with "
            f"mean {tuple(data.mean)} std {tuple(data.std)}"
        )
    return teacher, note


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    num_classes: int,
    d: Dist | None = None,
    device: torch.device | None = None,
    amp: str = "none",
    confusion: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Top-1, top-5 and mean loss over the whole split (exact across ranks: no padded samples).

    Returns:
        ``{"loss", "top1", "top5", "count"}`` (accuracies in %), plus ``"confusion"`` (rows: true class) if asked.
    """
    from tqdm import tqdm

    d = d or Dist()
    device = device or next(model.parameters()).device
    model.eval()
    k = min(5, num_classes)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top1, top5, count
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device) if confusion else None
    for x, y in tqdm(
        loader.batches(), total=len(loader), desc="eval", leave=False, disable=not (progress and d.is_main)
    ):
        if len(y) == 0:
            continue
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").double()
        topk = logits.topk(k, dim=1).indices
        sums[1] += (topk[:, 0] == y).sum()
        sums[2] += (topk == y[:, None]).any(dim=1).sum()
        sums[3] += len(y)
        if cm is not None:
            cm += torch.bincount(y * num_classes + topk[:, 0], minlength=num_classes**2).view(num_classes, num_classes)
    if d.enabled:
        dist.all_reduce(sums)
        if cm is not None:
            dist.all_reduce(cm)
    n = max(1.0, sums[3].item())
    out: dict[str, Any] = {
        "loss": sums[0].item() / n,
        "top1": 100 * sums[1].item() / n,
        "top5": 100 * sums[2].item() / n,
        "count": int(sums[3].item()),
    }
    if cm is not None:
        out["confusion"] = cm.cpu().tolist()
    return out


class ClassificationTask(Task):
    """Image classification with cross-entropy: top-1 picks the best checkpoint."""

    def setup(self, cfg: TrainConfig, d: Dist, device: torch.device) -> None:
        self.cfg = cfg
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download and d.is_main, cfg.image_size, cfg.bad_images)
        if d.enabled and cfg.download:
            dist.barrier()
        if cfg.train_subset:
            data.train = subset(data.train, cfg.train_subset)
        self.data, self.in_chans = data, cfg.in_chans or data.in_chans
        model = build_model_for_data(cfg, data).to(device)
        self.spec = model_spec(cfg.model, model_kwargs_for_data(cfg, data), model)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and d.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.train_loader, self.eval_loader = build_loaders(cfg, data, d, device, self.in_chans)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.teacher: nn.Module | None = None
        if cfg.teacher:
            self.teacher, note = load_teacher(cfg, data, self.in_chans, device)
            if note and d.is_main:
                print(note, file=sys.stderr)

    def describe(self) -> str:
        from ...analysis.profile import count_params

        data = self.data
        return (
            f"{self.spec.name} on {data.name} ({data.source}): {len(data.train):,} train / {len(data.test):,} test images, "
            f"{data.num_classes} classes, {count_params(self.model):,} params, input {self.in_chans}x{data.image_size}x{data.image_size}"
            f"{skipped_files_note(data)}{self._teacher_note()}"
        )

    def _teacher_note(self) -> str:
        from ...analysis.profile import count_params

        if self.teacher is None:
            return ""
        cfg = self.cfg
        return (
            f"; distilling from {cfg.teacher} ({count_params(self.teacher):,} params, {cfg.teacher_checkpoint}), "
            f"kd_weight {cfg.kd_weight:g}, kd_temperature {cfg.kd_temperature:g}"
        )

    def stat_names(self) -> list[str]:
        return ["images", "loss", "correct"] + (["kd"] if self.teacher is not None else [])

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        x, y = batch
        if len(y) == 0:  # bad_images=skip dropped every image of this batch
            return _no_images_loss(net), [0.0] * len(self.stat_names())
        with autocast(x.device, self.cfg.amp):
            logits = net(x)
            loss = self.criterion(logits.float(), y)
        extra: list[float] = []
        if self.teacher is not None:
            with torch.no_grad(), autocast(x.device, self.cfg.amp):
                teacher_logits = self.teacher(x)
            kd = distillation_loss(logits, teacher_logits, self.cfg.kd_temperature)
            loss = loss + self.cfg.kd_weight * kd
            extra = [kd.item() * len(y)]
        return loss, [len(y), loss.item() * len(y), (logits.argmax(1) == y).sum().item(), *extra]

    def train_row(self, sums: list[float]) -> dict[str, float]:
        """train_loss (what was minimised: with a teacher, CE + kd_weight * KD), train_top1, and train_kd."""
        n = max(1.0, sums[0])
        row = {"train_loss": sums[1] / n, "train_top1": 100 * sums[2] / n}
        if len(sums) > 3:  # a teacher's term (absent in an epoch resumed from a run that had none)
            row["train_kd"] = sums[3] / n
        return row

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        m = evaluate(model, self.eval_loader, self.data.num_classes, d, device, cfg.amp, progress=cfg.progress)
        if model is self.model:  # not the EMA's evaluation, which meets the same images again
            (n_train, n_eval), first = count_skipped([self.train_loader, self.eval_loader], d, device)
            if n_train + n_eval and d.is_main:
                print(
                    f"skipped {n_train} unreadable image(s) in training this epoch and {n_eval} in evaluation "
                    f"(first: {first})"
                )
        return {"eval_loss": m["loss"], "eval_top1": m["top1"], "eval_top5": m["top5"]}

    def checkpoint_data(self) -> dict[str, Any]:
        data = self.data
        return {
            "classes": data.classes,
            "image_size": data.image_size,
            "mean": list(data.mean),
            "std": list(data.std),
            "in_chans": self.in_chans,
        }

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        from ...analysis.profile import profile_model

        prof = profile_model(model, (self.data.image_size, self.data.image_size), self.in_chans)
        final = history[-1] if history else {}
        summary = {
            "dataset": self.data.name,
            "params": prof.params,
            "macs": prof.macs,
            "final_top1": final.get("eval_top1"),
            "final_top5": final.get("eval_top5"),
            "best_top1": best,
        }
        text = (
            f"test top-1 {final.get('eval_top1', float('nan')):.2f}% (best {best:.2f}%), top-5 {final.get('eval_top5', float('nan')):.2f}%  |  "
            f"{prof.params:,} params, {prof.macs / 1e6:.2f}M MACs"
        )
        return summary, text


def _no_images_loss(net: nn.Module) -> torch.Tensor:
    """A zero loss for a training batch left without images: the step changes nothing but momentum and decay."""
    if isinstance(net, nn.parallel.DistributedDataParallel):
        raise DatasetError(
            "every image of a training batch was unreadable, which distributed training cannot step over; "
            "remove the unreadable images (bad_images=error names them)"
        )
    return torch.stack([p.sum() for p in net.parameters() if p.requires_grad]).sum() * 0.0


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train and evaluate `cfg.model` on `cfg.dataset`; returns the run summary (also in summary.json).

    Raises:
        DatasetError, RunDirError, CheckpointError, ValueError: bad input, reported before any work is lost.
        TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
    """
    return run_training(cfg, ClassificationTask())
