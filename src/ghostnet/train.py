"""The training engine: one loop, read top to bottom. Single process, or DDP under torchrun.

    ghostnet train --config digits                     # one process
    torchrun --nproc_per_node=2 -m ghostnet train ...  # DistributedDataParallel (gloo on CPU, NCCL on CUDA)

A run lives in ``output_dir/name``: config.yaml, log.jsonl (one row per epoch), last.pth / best.pth
(written atomically, holding everything needed to resume bit-exactly), summary.json and curves.png.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .checkpoint import FORMAT, load_weights, save_checkpoint
from .config import TrainConfig
from .data import DataBundle, FolderLoader, ImageData, TensorLoader, load_dataset
from .distributed import Dist, all_reduce_sum, gather, init_distributed, ranks_agree, sync_buffers
from .models import create_model
from .runs import RunDirError, newest_checkpoint, prepare_run_dir, rng_state, seed_everything, set_rng_state, to_yaml, write_log, write_text

__all__ = [
    "ClassificationTask",
    "Dist",
    "RunDirError",
    "TrainingDiverged",
    "build_loaders",
    "build_model_for_data",
    "evaluate",
    "init_distributed",
    "lr_factor",
    "param_groups",
    "run_training",
    "subset",
    "Task",
    "train",
]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


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
    if cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size {cfg.batch_size} must be divisible by the number of processes {d.world_size}")
    common = dict(seed=cfg.seed, rank=d.rank, world_size=d.world_size, device=device, channels_last=cfg.channels_last)
    if data.in_memory:
        augment = cfg.augment or data.augment
        if augment == "imagenet":
            raise ValueError("augment 'imagenet' is for image folders; use crop_flip, crop or none")
        norm = dict(mean=data.mean, std=data.std, in_chans=in_chans)
        train = TensorLoader(data.train, cfg.batch_size, train=True, augment=augment, **norm, **common)
        test = TensorLoader(data.test, cfg.eval_batch_size, train=False, **norm, **common)
    else:
        if cfg.augment not in (None, "imagenet"):
            raise ValueError("image folders use augment 'imagenet' (RandomResizedCrop + flip)")
        folder = dict(image_size=data.image_size, mean=data.mean, std=data.std, in_chans=in_chans, num_workers=cfg.num_workers)
        train = FolderLoader(data.train, cfg.batch_size, train=True, color_jitter=cfg.color_jitter, **folder, **common)
        test = FolderLoader(data.test, cfg.eval_batch_size, train=False, **folder, **common)
    if len(train) == 0:
        raise ValueError(f"the training split has {len(data.train)} images, fewer than one batch of {cfg.batch_size}")
    return train, test


def build_model_for_data(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """The configured model with a classifier for the dataset's classes."""
    kwargs: dict[str, Any] = {"num_classes": data.num_classes, "in_chans": cfg.in_chans or data.in_chans}
    if cfg.drop_rate != 0.2:
        kwargs["drop_rate"] = cfg.drop_rate
    for name in ("width", "ratio", "dw_size"):
        if getattr(cfg, name) is not None:
            kwargs[name] = getattr(cfg, name)
    return create_model(cfg.model, checkpoint_path=cfg.init_checkpoint, **kwargs)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; BN weights and all biases (ndim <= 1) get none."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The schedule's multiplier of cfg.lr after `step` optimizer steps (linear warm-up, then the schedule)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "multistep":
        return cfg.gamma ** sum(step >= m * total for m in cfg.milestones)
    return 1.0


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
    for x, y in tqdm(loader.batches(), total=len(loader), desc="eval", leave=False, disable=not (progress and d.is_main)):
        if len(y) == 0:
            continue
        with _autocast(device, amp):
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


def _autocast(device: torch.device, amp: str):
    if amp == "none" or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


# ---------------------------------------------------------------- the loop


class Task:
    """What the engine needs from one kind of training; `ClassificationTask` and the detection task implement it.

    After `setup`: ``model`` (on the device), ``train_loader`` / ``eval_loader`` (``len()`` and
    ``batches(epoch, first)``), ``model_name``, ``model_kwargs``.
    """

    metric = "eval_top1"  # the history column that picks best.pth (higher is better)
    model: nn.Module
    train_loader: Any
    eval_loader: Any
    model_name: str
    model_kwargs: dict[str, Any]

    def setup(self, cfg: Any, d: Dist, device: torch.device) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        """One line on the model and data, printed at the start."""
        raise NotImplementedError

    def stat_names(self) -> list[str]:
        """What `step` adds up over an epoch; the first is the sample count."""
        raise NotImplementedError

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        """The loss of one batch (to back-propagate) and its sums, in `stat_names` order."""
        raise NotImplementedError

    def train_row(self, sums: list[float]) -> dict[str, float]:
        """The epoch's training columns from the sums over all ranks."""
        raise NotImplementedError

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        """The epoch's evaluation columns (including `metric`), the same on every rank."""
        raise NotImplementedError

    def checkpoint_data(self) -> dict[str, Any]:
        """What inference needs to know about the data, stored in every checkpoint."""
        return {}

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        """Summary fields and the closing lines printed after training."""
        return {}, ""


class ClassificationTask(Task):
    """Image classification with cross-entropy: top-1 picks the best checkpoint."""

    def setup(self, cfg: TrainConfig, d: Dist, device: torch.device) -> None:
        self.cfg = cfg
        data = load_dataset(cfg.dataset, cfg.data_dir, cfg.download and d.is_main, cfg.image_size)
        if d.enabled and cfg.download:
            dist.barrier()
        if cfg.train_subset:
            data.train = subset(data.train, cfg.train_subset)
        self.data, self.in_chans = data, cfg.in_chans or data.in_chans
        model = build_model_for_data(cfg, data).to(device)
        self.model_name, self.model_kwargs = model.model_name, model.model_kwargs
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.sync_bn and d.enabled:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.train_loader, self.eval_loader = build_loaders(cfg, data, d, device, self.in_chans)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def describe(self) -> str:
        from .profile import count_params

        data = self.data
        return (
            f"{self.model_name} on {data.name} ({data.source}): {len(data.train):,} train / {len(data.test):,} test images, "
            f"{data.num_classes} classes, {count_params(self.model):,} params, input {self.in_chans}x{data.image_size}x{data.image_size}"
        )

    def stat_names(self) -> list[str]:
        return ["images", "loss", "correct"]

    def step(self, net: nn.Module, batch: Any) -> tuple[torch.Tensor, list[float]]:
        x, y = batch
        with _autocast(x.device, self.cfg.amp):
            logits = net(x)
            loss = self.criterion(logits.float(), y)
        return loss, [len(y), loss.item() * len(y), (logits.argmax(1) == y).sum().item()]

    def train_row(self, sums: list[float]) -> dict[str, float]:
        n = max(1.0, sums[0])
        return {"train_loss": sums[1] / n, "train_top1": 100 * sums[2] / n}

    def evaluate(self, model: nn.Module, d: Dist, device: torch.device, cfg: Any) -> dict[str, Any]:
        m = evaluate(model, self.eval_loader, self.data.num_classes, d, device, cfg.amp, progress=cfg.progress)
        return {"eval_loss": m["loss"], "eval_top1": m["top1"], "eval_top5": m["top5"]}

    def checkpoint_data(self) -> dict[str, Any]:
        data = self.data
        return {"classes": data.classes, "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std), "in_chans": self.in_chans}

    def summarize(self, model: nn.Module, history: list[dict[str, Any]], best: float) -> tuple[dict[str, Any], str]:
        from .profile import profile_model

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


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train and evaluate `cfg.model` on `cfg.dataset`; returns the run summary (also in summary.json).

    Raises:
        DatasetError, RunDirError, CheckpointError, ValueError: bad input, reported before any work is lost.
        TrainingDiverged: the loss became NaN/inf; the last good checkpoint is kept.
    """
    return run_training(cfg, ClassificationTask())


def run_training(cfg: TrainConfig, task: Task) -> dict[str, Any]:
    """The loop every task shares: optimizer, schedule, AMP, EMA, DDP, checkpoints, resume, logs, progress bars."""
    from tqdm import tqdm

    cfg.validate()
    d, device = init_distributed(cfg.device)
    if cfg.sync_bn and device.type != "cuda":
        raise ValueError("sync_bn needs CUDA (NCCL); PyTorch's SyncBatchNorm does not run on CPU")
    if cfg.amp != "none" and device.type != "cuda":
        raise ValueError(f"amp {cfg.amp} needs CUDA; use amp none on {device.type}")
    seed_everything(cfg.seed, cfg.deterministic)

    task.setup(cfg, d, device)
    model, train_loader = task.model, task.train_loader
    model_name, model_kwargs = task.model_name, task.model_kwargs
    steps_per_epoch = len(train_loader)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)

    ema = None
    if cfg.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
    net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if d.enabled else model

    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    else:
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")

    run_dir = prepare_run_dir(cfg, d)
    n_stats = len(task.stat_names())
    step, history, best = 0, [], -math.inf
    progress = [0.0] * (n_stats + 1)  # this epoch so far, on this rank: the task's sums, then seconds
    if cfg.resume:
        path, ckpt = newest_checkpoint(run_dir)
        load_weights(model, ckpt)  # names the mismatch if the run was set up with another model
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None and ckpt.get("ema"):
            ema.load_state_dict(ckpt["ema"])
        if ckpt["world_size"] != d.world_size:
            raise RunDirError(f"{path} was written by {ckpt['world_size']} process(es); resume it with as many, not {d.world_size}")
        rank_state = ckpt["ranks"][d.rank]
        set_rng_state(rank_state["rng"])
        progress = rank_state["progress"]
        step, history, best = ckpt["step"], ckpt["history"], ckpt["best_metric"]
        if d.is_main:
            print(f"resuming {run_dir} from {path.name} at step {step} (epoch {step // steps_per_epoch + 1})")

    def checkpoint(tag: str) -> None:
        ranks = gather({"rng": rng_state(), "progress": progress}, d)
        if not d.is_main:
            return
        state = {
            "format": FORMAT,
            "model": model.state_dict(),
            "model_name": model_name,
            "model_kwargs": model_kwargs,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
            "model_ema": {k[len("module.") :]: v for k, v in ema.state_dict().items() if k.startswith("module.")} if ema else None,
            "ranks": ranks,  # per rank: RNG states and the partial epoch's sums
            "sampler": {"seed": cfg.seed, "epoch": step // steps_per_epoch, "batch": step % steps_per_epoch},
            "step": step,
            "epoch": step // steps_per_epoch,
            "history": history,
            "metric": task.metric,
            "best_metric": best,
            "config": cfg.to_dict(),
            "world_size": d.world_size,
            "data": task.checkpoint_data(),
        }
        save_checkpoint(state, run_dir / "last.pth")
        if tag == "best":
            shutil.copyfile(run_dir / "last.pth", run_dir / ".best.pth.tmp")
            os.replace(run_dir / ".best.pth.tmp", run_dir / "best.pth")

    if d.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", to_yaml(cfg.to_dict()))
        write_log(run_dir, history)  # on resume, drops rows past the checkpoint
        print(f"{task.describe()}; {d.world_size} process(es) on {device}; run folder {run_dir}")

    start_epoch = step // steps_per_epoch
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        net.train()
        first = step - epoch * steps_per_epoch
        if first == 0:
            progress = [0.0] * (n_stats + 1)
        t0, done_before = time.perf_counter(), progress[-1]
        bar = tqdm(total=steps_per_epoch, initial=first, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and d.is_main), dynamic_ncols=True)
        for batch in train_loader.batches(epoch, first):
            loss, sums = task.step(net, batch)
            bad = all_reduce_sum([0.0 if torch.isfinite(loss).item() else 1.0], d, device)[0]
            if bad:
                bar.close()
                raise TrainingDiverged(
                    f"loss is {loss.item()} at step {step + 1} (epoch {epoch + 1}); stopped without saving. "
                    f"The last good checkpoint is {run_dir / 'last.pth'}"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            elapsed = time.perf_counter() - t0
            progress = [a + b for a, b in zip(progress[:-1], sums)] + [done_before + elapsed]
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.4f}", img_s=f"{progress[0] * d.world_size / max(progress[-1], 1e-9):.1f}")
            if step >= total_steps:
                break
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and step % steps_per_epoch:
                checkpoint("last")
        bar.close()
        sync_buffers(model, d)  # BN statistics: every rank evaluates (and rank 0 saves) the same model
        train_time = progress[-1]
        sums = all_reduce_sum(progress[:-1], d, device)
        row: dict[str, Any] = {"epoch": epoch + 1, "step": step, "lr": optimizer.param_groups[0]["lr"], **task.train_row(sums)}
        metrics = task.evaluate(model, d, device, cfg)
        row.update(metrics)
        row.update(epoch_time_s=train_time, images_per_s=sums[0] / train_time if train_time else 0.0)
        if ema is not None:
            em = task.evaluate(ema.module, d, device, cfg)
            row.update({"ema_" + k: v for k, v in em.items() if not k.endswith("_loss")})
        history.append(row)
        is_best = metrics[task.metric] > best
        best = max(best, metrics[task.metric])
        checkpoint("best" if is_best else "last")
        if d.is_main:
            write_log(run_dir, history)
            train_cols = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
            eval_cols = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"epoch {epoch + 1}/{cfg.epochs}  {train_cols}  {eval_cols}  ({train_time:.1f}s, {row['images_per_s']:.1f} img/s)")

    agree = ranks_agree(model, d)
    summary: dict[str, Any] = {}
    if d.is_main:
        from .reporting import format_history, plot_curves

        extra, text = task.summarize(model, history, best)
        summary = {
            "run_dir": str(run_dir),
            "model": model_name,
            "model_kwargs": model_kwargs,
            **extra,
            "epochs": len(history),
            "steps": step,
            "world_size": d.world_size,
            "device": str(device),
            "metric": task.metric,
            "best_metric": best,
            "train_time_s": sum(r["epoch_time_s"] for r in history),
            "ranks_agree": agree,
        }
        write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        plot_curves(history, run_dir / "curves.png", title=f"{model_name} on {cfg.dataset}")
        print(format_history(history))
        print(f"\n{text}  |  {summary['train_time_s']:.0f}s training\ncheckpoints, log and curves in {run_dir}/")
    if d.enabled:
        dist.barrier()
    return summary
