"""The training loop every task shares, read top to bottom. Single process, or DDP under torchrun.

    ghostnet classify train --config digits                     # one process
    torchrun --nproc_per_node=2 -m ghostnet classify train ...  # DistributedDataParallel (gloo on CPU, NCCL on CUDA)

A task (`task.Task`: classification in `classification.py`, detection in `detection.py`, segmentation in
`segmentation.py`, face embeddings in `face.py`) supplies the model, the data and the loss; this loop supplies the optimizer, schedule,
AMP, EMA, DDP, checkpoints, resume, logs and progress bars. A run lives in ``output_dir/name``: config.yaml,
log.jsonl (one row per epoch), last.pth / best.pth (written atomically, holding everything needed to resume
bit-exactly), summary.json and curves.png.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..models.checkpoint import FORMAT, copy_checkpoint, load_weights, save_checkpoint
from .config import RunConfig
from .distributed import Dist, all_reduce_sum, gather, init_distributed, ranks_agree, sync_buffers
from .runs import (
    RunDirError,
    newest_checkpoint,
    prepare_run_dir,
    rng_state,
    seed_everything,
    set_rng_state,
    to_yaml,
    write_log,
    write_text,
)
from .task import Task, WithLossHead, autocast

__all__ = [
    "Task",
    "TrainingDiverged",
    "WithLossHead",
    "autocast",
    "lr_factor",
    "non_finite",
    "param_groups",
    "run_training",
]


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


def non_finite(model: nn.Module) -> str | None:
    """The name of the first floating-point parameter or buffer of `model` holding a NaN or infinity, else None."""
    floats = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point() or v.is_complex()]
    if not floats or bool(torch.stack([torch.isfinite(v).all() for _, v in floats]).all()):
        return None
    return next(k for k, v in floats if not torch.isfinite(v).all())


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only; BN weights and all biases (ndim <= 1) get none."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_factor(cfg: RunConfig, step: int, steps_per_epoch: int) -> float:
    """The schedule's multiplier of cfg.lr after `step` optimizer steps (linear warm-up, then the schedule)."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "multistep":
        return float(cfg.gamma ** sum(step >= m * total for m in cfg.milestones))
    return 1.0


def run_training(cfg: RunConfig, task: Task) -> dict[str, Any]:
    """Train `task` as `cfg` says; returns the run summary (also written to summary.json)."""
    cfg.validate()
    d, device = init_distributed(cfg.device)
    if cfg.sync_bn and device.type != "cuda":
        raise ValueError("sync_bn needs CUDA (NCCL); PyTorch's SyncBatchNorm does not run on CPU")
    if cfg.amp != "none" and device.type != "cuda":
        raise ValueError(f"amp {cfg.amp} needs CUDA; use amp none on {device.type}")
    seed_everything(cfg.seed, cfg.deterministic)
    task.setup(cfg, d, device)
    run = _Run(cfg, task, d, device)  # holds the run folder's lock from here on
    try:
        if cfg.resume:
            run.resume()
            if run.complete():
                return run.already_complete()
        run.start()
        for epoch in range(run.step // run.steps_per_epoch, cfg.epochs):
            if run.step >= run.total_steps:
                break
            train_time = run.train_epoch(epoch)
            run.end_epoch(epoch, train_time)
        return run.finish()
    except BaseException:
        run.folder.discard_if_unused()  # a folder this run made and never saved into is not left as a stub
        raise
    finally:
        run.folder.release()


class _Run:
    """One training run's state: the model and its optimizer, the step counter, the history, the run folder."""

    def __init__(self, cfg: RunConfig, task: Task, d: Dist, device: torch.device) -> None:
        self.cfg, self.task, self.d, self.device = cfg, task, d, device
        self.model = task.model
        self.steps_per_epoch = len(task.train_loader)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.ema = None
        if cfg.ema_decay:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        ids = [device.index] if device.type == "cuda" else None
        self.trained = self.model if task.loss_head is None else WithLossHead(self.model, task.loss_head)
        self.net = nn.parallel.DistributedDataParallel(self.trained, device_ids=ids) if d.enabled else self.trained
        groups = param_groups(self.trained, cfg.weight_decay)
        if cfg.optimizer == "sgd":
            nesterov = cfg.nesterov and cfg.momentum > 0
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov
            )
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(cfg, s, self.steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp == "fp16" and device.type == "cuda")
        self.n_stats = len(task.stat_names())
        self.step, self.best = 0, -math.inf
        self.history: list[dict[str, Any]] = []
        self.progress = [0.0] * (self.n_stats + 1)  # this epoch so far, on this rank: the task's sums, then seconds
        self.saved: tuple[Path, int] | None = None  # the last good checkpoint and its step
        self.passed_over: list[str] = []  # damaged checkpoints passed over on resuming
        self.folder = prepare_run_dir(cfg, d)  # last: nothing after it may fail and leave the folder locked
        self.run_dir: Path = self.folder.path

    def resume(self) -> None:
        """Load the newest complete checkpoint: weights, optimizer, schedule, RNG, the partial epoch's sums."""
        path, ckpt, passed_over = newest_checkpoint(self.run_dir)
        load_weights(self.model, ckpt)  # names the mismatch if the run was set up with another model
        if self.task.loss_head is not None:
            self.task.loss_head.load_state_dict(ckpt["loss_head"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt.get("ema"):
            self.ema.load_state_dict(ckpt["ema"])
        if ckpt["world_size"] != self.d.world_size:
            raise RunDirError(
                f"{path} was written by {ckpt['world_size']} process(es); resume it with as many, not {self.d.world_size}"
            )
        rank_state = ckpt["ranks"][self.d.rank]
        set_rng_state(rank_state["rng"])
        self.progress = rank_state["progress"]
        self.step, self.history, self.best = ckpt["step"], ckpt["history"], ckpt["best_metric"]
        self.saved, self.passed_over = (path, self.step), passed_over
        if self.d.is_main:
            for problem in passed_over:
                print(f"warning: {problem}; resuming from {path.name} (step {self.step}) instead", file=sys.stderr)
            if not self.complete():
                epoch = self.step // self.steps_per_epoch + 1
                print(f"resuming {self.run_dir} from {path.name} at step {self.step} (epoch {epoch})")

    def complete(self) -> bool:
        """Every step trained, the summary written, the newest checkpoint whole: resuming has nothing to do.

        A run killed between its last save and its summary, or whose last.pth is damaged, is finished instead
        (the summary and last.pth are written again).
        """
        whole = not self.passed_over and (self.run_dir / "summary.json").is_file()
        return self.step >= self.total_steps and whole

    def already_complete(self) -> dict[str, Any]:
        """A resumed run with nothing left to train: say so, and how to extend it; touch no file of the run."""
        cfg, done = self.cfg, self.step // self.steps_per_epoch
        if cfg.max_steps and self.total_steps == cfg.max_steps:
            what, more = f"{self.step} of max_steps {cfg.max_steps}", f"--max-steps {2 * cfg.max_steps}"
        else:
            what, more = f"{done} of {cfg.epochs} epochs", f"--epochs {cfg.epochs + max(1, done // 2)}"
        summary_path = self.run_dir / "summary.json"
        if self.d.is_main:
            print(
                f"{self.run_dir} is already complete ({what}, step {self.step}): nothing to train. To train it "
                f"further, resume with more, e.g. --resume --name {cfg.name} {more}; its results: {summary_path}"
            )
        return json.loads(summary_path.read_text())

    def start(self) -> None:
        if self.d.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text(self.run_dir / "config.yaml", to_yaml(self.cfg.to_dict()))
            write_log(self.run_dir, self.history)  # on resume, drops rows past the checkpoint
            print(
                f"{self.task.describe()}; {self.d.world_size} process(es) on {self.device}; run folder {self.run_dir}"
            )

    def save(self, tag: str) -> None:
        """Write last.pth (and copy it to best.pth when `tag` is "best"), atomically, from rank 0.

        Raises TrainingDiverged, writing nothing, when a weight or buffer of the model (or its EMA) is not finite.
        """
        self._check_weights()
        ranks = gather({"rng": rng_state(), "progress": self.progress}, self.d)
        if not self.d.is_main:
            return
        save_checkpoint(self._state(ranks), self.run_dir / "last.pth")
        self.saved = (self.run_dir / "last.pth", self.step)
        if tag == "best":
            copy_checkpoint(self.run_dir / "last.pth", self.run_dir / "best.pth")

    def _check_weights(self) -> None:
        bad = non_finite(self.model)
        if bad is None and self.ema is not None and (ema_bad := non_finite(self.ema.module)):
            bad = f"the EMA's {ema_bad}"
        if all_reduce_sum([1.0 if bad else 0.0], self.d, self.device)[0]:
            where = f"{bad} is not finite" if bad else "a weight is not finite on another process"
            epoch = (self.step - 1) // self.steps_per_epoch + 1
            raise TrainingDiverged(
                f"{where} after step {self.step} (epoch {epoch}); stopped without saving. {self._last_good()}"
            )

    def _last_good(self) -> str:
        if self.saved is None:
            return "No checkpoint was written before it (nothing to resume from)"
        path, step = self.saved
        return f"The last good checkpoint is {path} (step {step})"

    def _state(self, ranks: list[Any]) -> dict[str, Any]:
        cfg, task, ema, spe = self.cfg, self.task, self.ema, self.steps_per_epoch
        ema_sd = ema.state_dict() if ema is not None else None
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "model_name": task.spec.name,
            "model_kwargs": task.spec.kwargs,
            "loss_head": task.loss_head.state_dict() if task.loss_head is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": ema_sd,
            "model_ema": {k[len("module.") :]: v for k, v in ema_sd.items() if k.startswith("module.")}
            if ema_sd
            else None,
            "ranks": ranks,  # per rank: RNG states and the partial epoch's sums
            "sampler": {"seed": cfg.seed, "epoch": self.step // spe, "batch": self.step % spe},
            "step": self.step,
            "epoch": self.step // spe,
            "history": self.history,
            "metric": task.metric,
            "best_metric": self.best,
            "config": cfg.to_dict(),
            "world_size": self.d.world_size,
            "data": task.checkpoint_data(),
        }

    def train_epoch(self, epoch: int) -> float:
        """Train to the end of `epoch` (or to max_steps); returns the epoch's training seconds on this rank."""
        from tqdm import tqdm

        cfg, d = self.cfg, self.d
        self.net.train()
        first = self.step - epoch * self.steps_per_epoch
        if first == 0:
            self.progress = [0.0] * (self.n_stats + 1)
        t0, done_before = time.perf_counter(), self.progress[-1]
        show = cfg.progress and d.is_main
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not show,
            dynamic_ncols=True,
        )
        with bar:
            for batch in self.task.train_loader.batches(epoch, first):
                loss, sums = self.task.step(self.net, batch)
                self._check_finite(loss, epoch)
                self._optimize(loss)
                self.step += 1
                self.progress = [a + b for a, b in zip(self.progress[:-1], sums)] + [
                    done_before + time.perf_counter() - t0
                ]
                bar.update(1)
                img_s = self.progress[0] * d.world_size / max(self.progress[-1], 1e-9)
                bar.set_postfix(
                    loss=f"{loss.item():.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.4f}", img_s=f"{img_s:.1f}"
                )
                if self.step >= self.total_steps:
                    break
                if cfg.save_every_steps and self.step % cfg.save_every_steps == 0 and self.step % self.steps_per_epoch:
                    self.save("last")
        return self.progress[-1]

    def _check_finite(self, loss: torch.Tensor, epoch: int) -> None:
        bad = all_reduce_sum([0.0 if torch.isfinite(loss).item() else 1.0], self.d, self.device)[0]
        if bad:
            raise TrainingDiverged(
                f"loss is {loss.item()} at step {self.step + 1} (epoch {epoch + 1}); stopped without saving. "
                + self._last_good()
            )

    def _optimize(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.cfg.clip_grad:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.trained.parameters(), self.cfg.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def end_epoch(self, epoch: int, train_time: float) -> None:
        """Evaluate (and the EMA), log the epoch's row, checkpoint (best.pth when the metric improved)."""
        d, task = self.d, self.task
        sync_buffers(self.model, d)  # BN statistics: every rank evaluates (and rank 0 saves) the same model
        sums = all_reduce_sum(self.progress[:-1], d, self.device)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            **task.train_row(sums),
        }
        metrics = task.evaluate(self.model, d, self.device, self.cfg)
        row.update(metrics)
        row.update(epoch_time_s=train_time, images_per_s=sums[0] / train_time if train_time else 0.0)
        if self.ema is not None:
            em = task.evaluate(self.ema.module, d, self.device, self.cfg)
            row.update({"ema_" + k: v for k, v in em.items() if not k.endswith("_loss")})
        self.history.append(row)
        is_best = metrics[task.metric] > self.best
        self.best = max(self.best, metrics[task.metric])
        self.save("best" if is_best else "last")
        if d.is_main:
            write_log(self.run_dir, self.history)
            train_cols = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("train_"))
            eval_cols = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(
                f"epoch {epoch + 1}/{self.cfg.epochs}  {train_cols}  {eval_cols}  ({train_time:.1f}s, {row['images_per_s']:.1f} img/s)"
            )

    def finish(self) -> dict[str, Any]:
        """summary.json, curves.png and the closing table (rank 0); every rank returns the summary it has."""
        agree = ranks_agree(self.model, self.d)
        summary: dict[str, Any] = {}
        if self.d.is_main:
            summary = self._summarize(agree)
        if self.d.enabled:
            dist.barrier()
        return summary

    def _summarize(self, agree: bool) -> dict[str, Any]:
        from .reporting import format_history, plot_curves

        task, history = self.task, self.history
        extra, text = task.summarize(self.model, history, self.best)
        summary = {
            "run_dir": str(self.run_dir),
            "model": task.spec.name,
            "model_kwargs": task.spec.kwargs,
            **extra,
            "epochs": len(history),
            "steps": self.step,
            "world_size": self.d.world_size,
            "device": str(self.device),
            "metric": task.metric,
            "best_metric": self.best,
            "train_time_s": sum(r["epoch_time_s"] for r in history),
            "ranks_agree": agree,
        }
        write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        plot_curves(history, self.run_dir / "curves.png", title=f"{task.spec.name} on {self.cfg.data_name()}")
        print(format_history(history))
        print(f"\n{text}  |  {summary['train_time_s']:.0f}s training\ncheckpoints, log and curves in {self.run_dir}/")
        return summary
