"""The epoch loop: AdamW, warmup + cosine, label smoothing, EMA, AMP on GPU,
DistributedDataParallel under ``torchrun``, per-epoch atomic checkpoints (best and
last, see ``rundir``), exact resume.

Determinism: every epoch reseeds torch from (seed, epoch, rank) and the sampler
from (seed, epoch), so a resumed run repeats exactly what an uninterrupted run does.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evit_export.core.interrupt import cancellable
from evit_export.core.jsonio import dumps_strict
from evit_export.core.preprocess import normalize
from evit_export.core.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from evit_export.training.config import TrainConfig, resolve_config, size_batch
from evit_export.training.dataset import AugmentedSet, build_augmentation, load_data, plan_batches
from evit_export.training.distributed import Distributed, place
from evit_export.training.evaluate import chance_warning, evaluate
from evit_export.training.model import build_training_model, fetch_pretrained_first
from evit_export.training.optim import lr_lambda, param_groups
from evit_export.training.rundir import RunDir, resumed_config
from evit_export.core.errors import UserError


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``; ``many`` for irregular plurals."""
    return f"{n} {word}" if n == 1 else f"{n} {many or word + 's'}"


def skipped_note(skipped: list[str], listed_in: Path, shown: int = 3) -> str:
    """Which files were skipped: the first few by name, and where the full list is."""
    names = ", ".join(skipped[:shown]) + (f" and {len(skipped) - shown} more" if len(skipped) > shown else "")
    return (f"{plural(len(skipped), 'unreadable or non-image file')} skipped: {names} "
            f"(all listed under \"skipped\" in {listed_in})")


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path  # best epoch by val top-1; the figures below are its
    last_checkpoint: Path
    epochs: int
    best_epoch: int
    val_top1: float  # percent
    val_top5: float
    val_loss: float
    last_val_top1: float
    train_seconds: float
    images_per_second: float
    log: Path
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Best:
    top1: float = -1.0
    epoch: int = 0
    loss: float = float("inf")

    def beaten_by(self, top1: float, loss: float) -> bool:
        return top1 > self.top1 or (top1 == self.top1 and loss < self.loss)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2 ** 63)


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f} · acc {task.fields[acc]:.1f}% · "
                               "{task.fields[ips]:.0f} img/s"),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=True)


def train(config: TrainConfig, console=None) -> RunResult:
    """Train (or fine-tune, or resume) one run; returns the figures of its best epoch.

    Under ``torchrun`` every process calls this; rank 0 writes the run directory.
    Raises ``UserError`` on bad input and ``core.interrupt.Cancelled`` on Ctrl-C (the
    last completed epoch's files stay intact; its message says where they are).
    """
    from rich.console import Console

    dist = Distributed()
    console = console or Console(stderr=True, soft_wrap=True)
    run = RunDir(config.out)
    resume_state = None
    if config.resume:
        resume_state = run.read_state()
        c = resumed_config(config, resume_state)
    else:
        run.refuse_existing()
        c = resolve_config(config)
    device = place(c.device, c.threads, dist)
    try:
        with cancellable("training", detail=run.interrupted_detail):
            trainer = Trainer(c, dist, device, run, console)
            trainer.prepare(resume_state)
            return trainer.run()
    finally:
        dist.stop()


class Trainer:
    """One run's state between epochs; rank 0 evaluates, writes and prints."""

    def __init__(self, c: TrainConfig, dist: Distributed, device: torch.device, run: RunDir, console):
        self.c, self.dist, self.device, self.run_dir, self.console = c, dist, device, run, console
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self.best = _Best()
        self.start_epoch = 0
        self.images_seen, self.train_time = 0, 0.0

    def say(self, text: str, **kwargs) -> None:
        if self.dist.main:
            self.console.print(text, highlight=False, **kwargs)

    # ------------------------------------------------------------ set-up

    def prepare(self, resume_state: dict | None) -> None:
        fetch_pretrained_first(self.c, self.dist)
        self._prepare_data()
        self._prepare_model()
        self._prepare_optimization()
        self._start_log()
        # Which files are train and which are val (a seeded split is only reproducible with
        # this list); written with the first epoch, so an early Ctrl-C leaves nothing behind.
        self.split = None if resume_state is not None else {
            "classes": self.classes, "train": self.train_set.files, "val": self.val_set.files,
            "skipped": self.train_set.skipped + self.val_set.skipped}
        if resume_state is not None:
            self._restore(resume_state)
        self._describe()

    def _prepare_data(self) -> None:
        c = self.c
        _seed_all(c.seed)
        # Only the preprocessing fields matter for reading; the classes come from the data.
        reading = ModelSpec(c.variant or "m0", 2, c.img_size, labels=["a", "b"], mean=IMAGENET_MEAN,
                            std=IMAGENET_STD, crop_pct=c.crop_pct, interpolation="bicubic")
        t0 = time.perf_counter()
        self.train_set, self.val_set = load_data(c, reading)
        self.classes = self.train_set.classes
        skipped = self.train_set.skipped + self.val_set.skipped
        self.skipped = len(skipped)
        self.say(f"data: {self.train_set.source}: {len(self.train_set)} train / {len(self.val_set)} val images, "
                 f"{plural(len(self.classes), 'class', 'classes')}"
                 + (f", {plural(self.skipped, 'unreadable file')} skipped" if self.skipped else "")
                 + f" (read in {time.perf_counter() - t0:.1f} s)")
        if self.skipped:
            note = skipped_note(skipped, self.run_dir.split)
            self.say(f"[yellow]note:[/] {note}")
            self.notes.append(note)
        chosen = size_batch(c, len(self.train_set))
        if chosen:
            self.say(f"note: {chosen}")
            self.notes.append(chosen)

    def _prepare_model(self) -> None:
        from torch.nn.parallel import DistributedDataParallel

        c = self.c
        _seed_all(c.seed)
        model_notes: list[str] = []
        self.core, variant = build_training_model(c, len(self.classes), model_notes)
        for note in model_notes:
            self.say(f"[yellow]note:[/] {note}")
        self.notes += model_notes
        c.variant = variant
        self.spec = ModelSpec(variant, len(self.classes), c.img_size, labels=list(self.classes),
                              mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_pct=c.crop_pct, interpolation="bicubic",
                              source={"trained": str(self.run_dir.path.resolve()), "dataset": self.train_set.source,
                                      **({"pretrained": c.pretrained} if c.pretrained else {})})
        self.core.to(self.device)
        self.model = self.core
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.core, device_ids=ids)

    def _prepare_optimization(self) -> None:
        from torch.utils.data import DistributedSampler

        c, dist = self.c, self.dist
        self.dataset = AugmentedSet(self.train_set, build_augmentation(c.augment, c.img_size))
        self.sampler = DistributedSampler(self.dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True,
                                          seed=c.seed)
        self.batching = plan_batches(len(self.sampler), max(1, c.batch_size // dist.world))
        self.total_steps = self.batching.steps * c.epochs
        self.warmup = int(round(c.warmup_epochs * self.batching.steps))
        self.optimizer = torch.optim.AdamW(param_groups(self.core, c.weight_decay), lr=c.lr, betas=(0.9, 0.999))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(self.total_steps, self.warmup, c.min_lr_ratio))
        cuda = self.device.type == "cuda"
        self.amp = cuda if c.amp is None else (c.amp and cuda)
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.ema = None
        if c.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.core, multi_avg_fn=get_ema_multi_avg_fn(c.ema_decay), use_buffers=True)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)

    def _start_log(self) -> None:
        self.log = {"config": self.c.to_dict(), "spec": self.spec.to_dict(), "dataset": {
            "train": self.train_set.source, "val": self.val_set.source, "train_images": len(self.train_set),
            "val_images": len(self.val_set), "classes": self.classes, "skipped_files": self.skipped},
            "batching": {"batch": self.batching.batch * self.dist.world, "steps_per_epoch": self.batching.steps,
                         "images_per_epoch": self.batching.images * self.dist.world},
            "world_size": self.dist.world, "device": str(self.device), "amp": self.amp,
            "threads": torch.get_num_threads(), "epochs": [], "finished": False}

    def _restore(self, state: dict) -> None:
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = int(state["epoch"])
        prior = json.loads(state["log"])
        self.log["epochs"] = prior.get("epochs", [])[:self.start_epoch]
        self.log["train_seconds_before_resume"] = sum(e["seconds"] for e in self.log["epochs"])
        self.best = _Best(*state.get("best", [-1.0, 0]))
        if self.total_steps != state.get("total_steps", self.total_steps):
            # --epochs changed: keep the step count, stretch the cosine to the new end.
            self.scheduler.lr_lambdas[0] = lr_lambda(self.total_steps, self.warmup, self.c.min_lr_ratio)
        self.say(f"resuming {self.run_dir.path} after epoch {self.start_epoch}/{self.c.epochs}")
        if self.start_epoch >= self.c.epochs:
            self.say(f"{self.run_dir.path} already finished {plural(self.start_epoch, 'epoch')}: nothing to do "
                     "(pass --epochs N to train longer)")

    def _describe(self) -> None:
        c, b = self.c, self.batching
        dropped = (f" (1 image of {b.images + 1} left out each epoch: BatchNorm cannot train on a batch of one)"
                   if b.drop_last else "")
        self.say(f"training EfficientViT-{c.variant.upper()} at {c.img_size}px on {self.device}"
                 + (f" ×{self.dist.world} processes" if self.dist.enabled else "")
                 + f": {plural(c.epochs, 'epoch')} × {plural(b.steps, 'step')}, "
                   f"batch {b.batch * self.dist.world}{dropped}, lr {c.lr:g}, "
                   f"{plural(torch.get_num_threads(), 'thread')}" + (", AMP" if self.amp else "")
                 + (", EMA" if self.ema else ""))

    # ------------------------------------------------------------ the loop

    def run(self) -> RunResult:
        with _progress(self.console, enabled=self.c.progress and self.dist.main) as progress:
            for epoch in range(self.start_epoch, self.c.epochs):
                loss, acc, seen, seconds = self._train_epoch(epoch, progress)
                if self.dist.main:
                    self._end_epoch(epoch, loss, acc, seen, seconds)
                self.dist.barrier()
        return self._result()

    def _loader(self, epoch: int):
        from torch.utils.data import DataLoader

        seed = _epoch_seed(self.c.seed, epoch, self.dist.rank)
        torch.manual_seed(seed)
        self.sampler.set_epoch(epoch)
        return DataLoader(self.dataset, batch_size=self.batching.batch, sampler=self.sampler,
                          drop_last=self.batching.drop_last, num_workers=self.c.workers, persistent_workers=False,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator().manual_seed(seed))

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(x)
            loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.core)
        return logits, loss

    def _train_epoch(self, epoch: int, progress) -> tuple[float, float, int, float]:
        """One pass over this process's share; (mean loss, top-1 %, images, seconds)."""
        world = self.dist.world
        task = progress.add_task(f"epoch {epoch + 1}/{self.c.epochs}", total=self.batching.steps,
                                 loss=float("nan"), acc=float("nan"), ips=0.0)
        self.model.train()
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in self._loader(epoch):
            x = torch.from_numpy(normalize(xb.numpy(), self.spec)).to(self.device, non_blocking=True)
            y = yb.to(self.device, non_blocking=True)
            logits, loss = self._step(x, y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            ips = seen * world / max(time.perf_counter() - t0, 1e-9)
            progress.update(task, advance=1, loss=loss_sum / seen, acc=100.0 * correct / seen, ips=ips)
        seconds = time.perf_counter() - t0
        progress.remove_task(task)
        self.train_time += seconds
        self.images_seen += seen * world
        loss, acc = self.dist.mean(loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1))
        return loss, acc, seen, seconds

    def _end_epoch(self, epoch: int, train_loss: float, train_acc: float, seen: int, seconds: float) -> None:
        c = self.c
        eval_model = self.ema.module if self.ema is not None else self.core
        m = evaluate(eval_model, self.val_set, self.spec, self.device)
        improved = self.best.beaten_by(m["top1"], m["loss"])
        if improved:
            self.best = _Best(m["top1"], epoch + 1, m["loss"])
        record = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "train_top1": round(train_acc, 3),
                  "val_loss": round(m["loss"], 5), "val_top1": round(m["top1"], 4), "val_top5": round(m["top5"], 4),
                  "lr": self.optimizer.param_groups[0]["lr"], "seconds": round(seconds, 3),
                  "train_images": seen * self.dist.world,
                  "images_per_second": round(seen * self.dist.world / max(seconds, 1e-9), 1)}
        finished = epoch + 1 == c.epochs
        self.log["epochs"].append(record)
        self.log.update(finished=finished, best={"val_top1": self.best.top1, "epoch": self.best.epoch})
        extra = {"metrics": {k: record[k] for k in ("val_top1", "val_top5", "val_loss", "train_loss", "train_top1")},
                 "epoch": epoch + 1, "epochs": c.epochs, "seed": c.seed, "finished": finished,
                 "ema": bool(self.ema), "dataset": self.log["dataset"], "train_config": c.to_dict(),
                 "val_per_class_top1": {self.classes[k]: round(v, 3) for k, v in m["per_class_top1"].items()}}
        self.run_dir.write_epoch(eval_model, self.spec, extra, self._state(epoch), self.log, improved, self.split)
        self.split = None
        # The train loss carries the label smoothing the optimizer sees; val is plain
        # cross-entropy, so it can sit below train without anything being wrong.
        smoothing = f" (label smoothing {c.label_smoothing:g})" if c.label_smoothing else ""
        self.say(f"epoch {epoch + 1}/{c.epochs}: train loss{smoothing} {train_loss:.4f} top-1 {train_acc:.2f}% · "
                 f"val loss (cross-entropy) {m['loss']:.4f} top-1 {m['top1']:.2f}% top-5 {m['top5']:.2f}% · "
                 f"{record['images_per_second']:.0f} img/s · {seconds:.1f} s" + (" · best" if improved else ""))

    def _state(self, epoch: int) -> dict:
        return {"epoch": epoch + 1, "model": self.core.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "best": [self.best.top1, self.best.epoch, self.best.loss], "total_steps": self.total_steps,
                "config": dumps_strict(self.c.to_dict()), "log": dumps_strict(self.log)}

    # ------------------------------------------------------------ the end

    def _result(self) -> RunResult:
        run, epochs = self.run_dir, self.log["epochs"]
        total = sum(e["seconds"] for e in epochs) if epochs else self.train_time
        # over every epoch of the run, so a resumed (or already finished) run reports its own
        # speed, not this call's share of it (0 img/s when nothing was left to train)
        seen = sum(e.get("train_images", 0) for e in epochs)
        ips = seen / total if epochs and total else (self.images_seen / self.train_time if self.train_time else 0.0)
        if not self.dist.main:
            nan = float("nan")
            return RunResult(run.path, run.best, run.last, self.c.epochs, 0, nan, nan, nan, nan, total, ips,
                             run.log, self.notes)
        if not epochs:
            raise UserError(f"{run.path} holds no completed epoch: start a new run")
        best = epochs[self.best.epoch - 1] if 0 < self.best.epoch <= len(epochs) else epochs[-1]
        warning = chance_warning(self.best.top1, self.val_set.targets, len(self.classes), len(epochs),
                                 pretrained=bool(self.c.pretrained))
        if warning:
            self.warnings.append(warning)
            self.say(f"[yellow]warning:[/] {warning}")
        self.say(f"done: best val top-1 {best['val_top1']:.2f}% at epoch {best['epoch']} → {run.best}; "
                 f"last epoch {epochs[-1]['val_top1']:.2f}% → {run.last} ({total:.1f} s training)")
        return RunResult(run.path, run.best, run.last, self.c.epochs, best["epoch"], best["val_top1"],
                         best["val_top5"], best["val_loss"], epochs[-1]["val_top1"], total, ips, run.log,
                         self.notes, self.warnings)
