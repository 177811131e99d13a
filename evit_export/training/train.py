"""Training and fine-tuning: AdamW, warmup + cosine, label smoothing, EMA, AMP on GPU,
DistributedDataParallel under ``torchrun``, per-epoch atomic checkpoints, exact resume.

A run directory holds:

* ``model.safetensors`` + ``model.json`` — the project checkpoint of the last completed
  epoch (the EMA weights with ``ema``), rewritten atomically after every epoch; the
  sidecar carries the ModelSpec (variant, labels, img_size, mean/std, crop_pct) and
  that epoch's metrics, the seed and the training config.
* ``train_state.pt`` — model, optimizer, scheduler, EMA and scaler state for ``--resume``
  (plain tensors and numbers; loaded with ``weights_only=True``).
* ``log.json`` — the config and one record per epoch.
* ``split.json`` — the files of the train and val splits (and the skipped ones).

Determinism: every epoch reseeds torch from (seed, epoch, rank) and the sampler
from (seed, epoch), so a resumed run repeats exactly what an uninterrupted run does.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evit_export.core.errors import UserError
from evit_export.core.preprocess import normalize
from evit_export.core.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

CHECKPOINT_NAME = "model.safetensors"
STATE_NAME = "train_state.pt"
LOG_NAME = "log.json"
SPLIT_NAME = "split.json"

# The default run: EfficientViT-M0 on the embedded digits. Measured on the 2-core
# development machine: see the figures in README / the issue note.
DIGITS_DEFAULTS = {"img_size": 64, "epochs": 8, "lr": 2e-3, "batch_size": 64}
FOLDER_DEFAULTS = {"img_size": 128, "epochs": 30, "lr": 2e-3, "batch_size": 64}
FINETUNE_LR = 5e-4


@dataclass
class TrainConfig:
    variant: str | None = None  # default m0 (or the --pretrained checkpoint's)
    data: str | None = None  # ImageFolder DIR; None = embedded digits
    epochs: int | None = None
    img_size: int | None = None
    batch_size: int | None = None  # global batch (split over torchrun processes)
    lr: float | None = None  # peak learning rate
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    drop_path: float = 0.0
    pretrained: str | None = None
    out: str = "runs/default"
    resume: bool = False
    seed: int = 0
    workers: int = 0
    ema: bool = False
    ema_decay: float = 0.998
    crop_pct: float = 1.0
    val_fraction: float = 0.2
    augment: str = "auto"  # auto | affine | crop | none
    amp: bool | None = None  # None: on for CUDA
    device: str | None = None
    threads: int | None = None
    limit_train: int | None = None  # use only this many training images (stratified)
    limit_val: int | None = None
    progress: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path
    epochs: int
    val_top1: float  # percent
    val_top5: float
    val_loss: float
    best_val_top1: float
    best_epoch: int
    train_seconds: float
    images_per_second: float
    log: Path
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- helpers

class _Dist:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.enabled = self.world > 1
        self.started = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def start(self, device: torch.device) -> None:
        if not self.enabled:
            return
        import torch.distributed as dist

        backend = "nccl" if device.type == "cuda" else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
            self.started = True

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def broadcast_flag(self, value: bool) -> bool:
        if not self.enabled:
            return value
        import torch.distributed as dist

        t = torch.tensor([1 if value else 0])
        dist.broadcast(t, 0)
        return bool(t.item())

    def stop(self) -> None:
        if self.started:
            import torch.distributed as dist

            dist.destroy_process_group()


@contextlib.contextmanager
def _defer_sigint():
    """Hold Ctrl-C while a checkpoint is written; raise it afterwards."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights only: not on attention biases, norms, biases."""
    keywords = model.no_weight_decay_keywords() if hasattr(model, "no_weight_decay_keywords") else ()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or any(k in name for k in keywords):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(total_steps: int, warmup_steps: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, progress)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == targets[:, None]).any(dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, images, spec: ModelSpec, device: torch.device | str = "cpu",
             batch: int = 256) -> dict:
    """top-1/top-5 (percent), loss, per-class top-1 of ``model`` on an ImageSet, in fp32,
    through the shared preprocessing (``preprocess.normalize``)."""
    was_training = model.training
    model.eval()
    logits = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(normalize(images.pixels[i:i + batch], spec)).to(device)
        logits.append(model(x).float().cpu())
    model.train(was_training)
    logits = torch.cat(logits)
    targets = torch.from_numpy(images.targets)
    return metrics_from_logits(logits, targets, len(images.classes))


def metrics_from_logits(logits: torch.Tensor, targets: torch.Tensor, num_classes: int) -> dict:
    top1 = topk_correct(logits, targets, 1)
    top5 = topk_correct(logits, targets, 5)
    loss = nn.functional.cross_entropy(logits, targets).item()
    per_class = {}
    for c in range(num_classes):
        m = targets == c
        if m.any():
            per_class[c] = 100.0 * top1[m].float().mean().item()
    return {"top1": 100.0 * top1.float().mean().item(), "top5": 100.0 * top5.float().mean().item(),
            "loss": loss, "n": int(len(targets)), "per_class_top1": per_class}


class _AugmentedSet(torch.utils.data.Dataset):
    def __init__(self, images, transform):
        self.pixels = images.pixels
        self.targets = images.targets
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = torch.from_numpy(self.pixels[i])
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.targets[i])


def build_augmentation(kind: str, img_size: int):
    """Standard augmentation from torchvision.transforms.v2 on uint8 (3,S,S) tensors."""
    from torchvision.transforms import v2

    if kind == "none":
        return None
    if kind == "affine":  # small images of glyphs: no flips, no large crops
        return v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1),
                               interpolation=v2.InterpolationMode.BILINEAR)
    if kind == "crop":
        return v2.Compose([v2.RandomResizedCrop(img_size, scale=(0.35, 1.0), antialias=True),
                           v2.RandomHorizontalFlip(),
                           v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)])
    raise UserError(f"unknown augmentation {kind!r}: choose auto, affine, crop or none")


def _seed_all(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2 ** 63)


def default_threads(processes: int = 1) -> int:
    """CPU threads per training process: the cores split between the processes, less
    the cores other programs keep busy (1-minute load average). On a shared machine
    an OpenMP thread whose core is taken stalls every parallel region of the step;
    measured on the 2-core development machine under load ~2: 2 threads 6-16 img/s,
    1 thread ~100 img/s."""
    cores = os.cpu_count() or 1
    share = max(1, cores // max(1, processes))
    try:
        busy = os.getloadavg()[0]
    except OSError:
        busy = 0.0
    idle = int(cores - busy + 0.5)
    return max(1, min(share, idle))


def _pick_device(config: TrainConfig, dist: _Dist) -> torch.device:
    if config.device:
        dev = torch.device(config.device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {config.device}: no CUDA GPU here; drop --device to train on the CPU")
    else:
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and dist.enabled:
        dev = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(dev)
    return dev


def _pretrained_img_size(checkpoint: str) -> int:
    """The resolution a checkpoint was trained at: its project sidecar's, else 224
    (the official and timm releases)."""
    from evit_export.models.checkpoint import is_url, sidecar_path

    if not is_url(checkpoint):
        side = sidecar_path(Path(checkpoint))
        if Path(checkpoint).suffix == ".safetensors" and side.exists():
            try:
                return int(json.loads(side.read_text()).get("img_size") or 224)
            except (ValueError, TypeError):
                pass
    return 224


def _resolve(config: TrainConfig) -> TrainConfig:
    """Fill defaults that depend on the dataset and on fine-tuning."""
    c = TrainConfig.from_dict(config.to_dict())
    base = DIGITS_DEFAULTS if c.data is None else FOLDER_DEFAULTS
    if c.img_size is None:
        c.img_size = _pretrained_img_size(c.pretrained) if (c.pretrained and c.data) else base["img_size"]
    if c.epochs is None:
        c.epochs = base["epochs"]
    if c.batch_size is None:
        c.batch_size = base["batch_size"]
    if c.lr is None:
        # square-root scaling with the batch (AdamW)
        c.lr = (FINETUNE_LR if c.pretrained else base["lr"]) * math.sqrt(c.batch_size / base["batch_size"])
    if c.augment == "auto":
        c.augment = "affine" if c.data is None else "crop"
    if c.variant is None and c.pretrained is None:
        c.variant = "m0"
    if c.img_size < 32:
        raise UserError(f"--img-size {c.img_size} is too small: EfficientViT needs at least 32 pixels")
    if c.epochs < 1:
        raise UserError(f"--epochs {c.epochs}: train at least 1 epoch")
    if c.batch_size < 1:
        raise UserError(f"--batch-size {c.batch_size}: use at least 1")
    if not c.lr > 0:
        raise UserError(f"--lr {c.lr}: the learning rate must be positive")
    if not 0 < c.crop_pct <= 1:
        raise UserError(f"--crop-pct {c.crop_pct}: choose a value in (0, 1]")
    if not 0 < c.val_fraction < 1:
        raise UserError(f"val fraction {c.val_fraction}: choose a value in (0, 1)")
    if c.data is not None:
        c.data = str(Path(c.data).resolve())
    if c.pretrained is not None:
        from evit_export.models.checkpoint import is_url

        if not is_url(c.pretrained):
            c.pretrained = str(Path(c.pretrained).resolve())
    return c


def load_data(c: TrainConfig, spec: ModelSpec):
    from evit_export.data import load_digits_split, load_imagefolder

    if c.data is None:
        train_set, val_set = load_digits_split("train", spec), load_digits_split("val", spec)
    else:
        train_set, val_set = load_imagefolder(c.data, spec, c.val_fraction, c.seed,
                                              workers=max(2, c.workers))
    train_set = train_set.subset(c.limit_train)
    val_set = val_set.subset(c.limit_val)
    if len(val_set) == 0:
        raise UserError(f"no validation images in {c.data}: add DIR/val/<class>/* or more images per class")
    return train_set, val_set


def build_model(c: TrainConfig, num_classes: int, notes: list[str]) -> tuple[nn.Module, str]:
    from evit_export.models import EfficientViT, canonical_variant
    from evit_export.models.deploy import DeployEfficientViT

    if c.pretrained:
        from evit_export.models import load_model

        model = load_model(c.variant, c.pretrained, num_classes, c.img_size, reset_head=True)
        if isinstance(model, DeployEfficientViT):
            raise UserError(f"--pretrained {c.pretrained} is a folded deploy checkpoint: fine-tune from "
                            "the training checkpoint it was folded from")
        notes += list(model.load_notes)
        if getattr(model, "distillation", False):  # train and export one head
            del model.head_dist
            model.distillation = False
            notes.append("distillation head of the checkpoint dropped")
        if not any("head re-initialised" in n for n in model.load_notes):
            notes.append(f"fine-tuning from {c.pretrained} (head kept: {num_classes} classes)")
        if c.drop_path > 0:
            from evit_export.models.efficientvit import Residual

            for m in model.modules():
                if isinstance(m, Residual):
                    m.drop = c.drop_path
        return model.train(), model.spec.variant
    name = canonical_variant(c.variant)
    return EfficientViT(name, num_classes=num_classes, img_size=c.img_size, drop_path=c.drop_path).train(), name


def _write_json_atomic(path: Path, data) -> None:
    from evit_export.core.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def _save_state(path: Path, state: dict) -> None:
    from evit_export.core.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def run_is_finished(run_dir: str | os.PathLike) -> bool:
    log = Path(run_dir) / LOG_NAME
    ck = Path(run_dir) / CHECKPOINT_NAME
    if not (log.exists() and ck.exists() and ck.with_suffix(".json").exists()):
        return False
    try:
        data = json.loads(log.read_text())
    except ValueError:
        return False
    return bool(data.get("finished"))


# ---------------------------------------------------------------- the loop

def train(config: TrainConfig, console=None) -> RunResult:
    """Train (or fine-tune, or resume) one run; returns the final figures.

    Under ``torchrun`` every process calls this; rank 0 writes the run directory.
    Raises ``UserError`` on bad input and ``KeyboardInterrupt`` on Ctrl-C (the last
    completed epoch's checkpoint stays intact).
    """
    from rich.console import Console

    dist = _Dist()
    console = console or Console(stderr=True, soft_wrap=True)
    say = console.print if dist.main else (lambda *a, **k: None)
    run_dir = Path(config.out)
    state_path = run_dir / STATE_NAME
    resume_state = None
    if config.resume:
        if not state_path.exists():
            raise UserError(f"nothing to resume in {run_dir} (no {STATE_NAME}): drop --resume or pass the "
                            "--out of an earlier run")
        try:
            resume_state = torch.load(str(state_path), map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt or foreign file
            raise UserError(f"{state_path} is not a readable training state ({str(e).splitlines()[0][:80]}): "
                            "start a new run with another --out") from None
        stored = TrainConfig.from_dict(json.loads(resume_state["config"]))
        stored.out, stored.resume = config.out, True
        for key in ("workers", "threads", "progress", "device"):
            setattr(stored, key, getattr(config, key))
        if config.epochs is not None:
            stored.epochs = config.epochs
        c = stored
    else:
        if state_path.exists() or (run_dir / CHECKPOINT_NAME).exists():
            raise UserError(f"{run_dir} already holds a training run: pass --resume to continue it or choose "
                            "another --out")
        c = _resolve(config)

    device = _pick_device(c, dist)
    if c.threads:
        torch.set_num_threads(c.threads)
    elif device.type == "cpu":
        torch.set_num_threads(default_threads(dist.local_world))
    dist.start(device)
    try:
        return _train(c, dist, device, resume_state, say, console)
    finally:
        dist.stop()


def _train(c: TrainConfig, dist: _Dist, device: torch.device, resume_state, say, console) -> RunResult:
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from evit_export.models.checkpoint import save_project_checkpoint

    run_dir = Path(c.out)
    notes: list[str] = []
    _seed_all(c.seed)
    spec = ModelSpec(c.variant or "m0", 2, c.img_size, labels=["a", "b"], mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     crop_pct=c.crop_pct, interpolation="bicubic")
    t_data = time.perf_counter()
    train_set, val_set = load_data(c, spec)
    classes = train_set.classes
    skipped = len(train_set.skipped) + len(val_set.skipped)
    say(f"data: {train_set.source}: {len(train_set)} train / {len(val_set)} val images, {len(classes)} classes"
        + (f", {skipped} unreadable files skipped" if skipped else "")
        + f" (read in {time.perf_counter() - t_data:.1f} s)", highlight=False)
    if skipped:
        notes.append(f"{skipped} unreadable or non-image files skipped")
    if c.limit_train is not None and c.limit_train < 1:
        raise UserError("--limit-train must be at least 1")

    _seed_all(c.seed)
    model, variant = build_model(c, len(classes), notes)
    for n in notes:
        if "head" in n or "resampled" in n or "fine-tuning" in n:
            say(f"[yellow]note:[/] {n}")
    c.variant = variant
    spec = ModelSpec(variant, len(classes), c.img_size, labels=list(classes), mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, crop_pct=c.crop_pct, interpolation="bicubic",
                     source={"trained": str(run_dir.resolve()), "dataset": train_set.source,
                             **({"pretrained": c.pretrained} if c.pretrained else {})})
    model.to(device)
    core = model
    if dist.enabled:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    per_rank_batch = max(1, c.batch_size // dist.world)
    dataset = _AugmentedSet(train_set, build_augmentation(c.augment, c.img_size))
    sampler = DistributedSampler(dataset, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=c.seed)
    drop_last = len(sampler) > per_rank_batch
    steps_per_epoch = len(sampler) // per_rank_batch if drop_last else 1
    total_steps = steps_per_epoch * c.epochs
    warmup = int(round(c.warmup_epochs * steps_per_epoch))

    optimizer = torch.optim.AdamW(param_groups(core, c.weight_decay), lr=c.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, warmup, c.min_lr_ratio))
    amp = (device.type == "cuda") if c.amp is None else (c.amp and device.type == "cuda")
    amp_dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp and amp_dtype == torch.float16)
    ema = None
    if c.ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(core, multi_avg_fn=get_ema_multi_avg_fn(c.ema_decay), use_buffers=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=c.label_smoothing)

    log = {"config": c.to_dict(), "spec": spec.to_dict(), "dataset": {
        "train": train_set.source, "val": val_set.source, "train_images": len(train_set),
        "val_images": len(val_set), "classes": classes, "skipped_files": skipped},
        "world_size": dist.world, "device": str(device), "amp": amp, "threads": torch.get_num_threads(),
        "epochs": [], "finished": False}
    start_epoch = 0
    best = (-1.0, 0)
    if resume_state is not None:
        core.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if ema is not None and resume_state.get("ema") is not None:
            ema.load_state_dict(resume_state["ema"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        start_epoch = int(resume_state["epoch"])
        prior = json.loads(resume_state["log"])
        log["epochs"] = prior.get("epochs", [])[:start_epoch]
        log["train_seconds_before_resume"] = sum(e["seconds"] for e in log["epochs"])
        best = tuple(resume_state.get("best", best))
        if total_steps != resume_state.get("total_steps", total_steps):
            # --epochs changed: keep the step count, stretch the cosine to the new end.
            scheduler.lr_lambdas[0] = lr_lambda(total_steps, warmup, c.min_lr_ratio)
        say(f"resuming {run_dir} after epoch {start_epoch}/{c.epochs}", highlight=False)
    if start_epoch >= c.epochs:
        say(f"{run_dir} already finished {start_epoch} epochs: nothing to do (pass --epochs N to train longer)")

    say(f"training EfficientViT-{variant.upper()} at {c.img_size}px on {device}"
        + (f" ×{dist.world} processes" if dist.enabled else "")
        + f": {c.epochs} epochs × {steps_per_epoch} steps, batch {per_rank_batch * dist.world}, lr {c.lr:g}, "
          f"{torch.get_num_threads()} threads" + (", AMP" if amp else "") + (", EMA" if ema else ""),
        highlight=False)

    if dist.main and resume_state is None:
        # Which files are train and which are val (a seeded split is only reproducible with this list).
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(run_dir / SPLIT_NAME, {"classes": classes, "train": train_set.files,
                                                  "val": val_set.files, "skipped": train_set.skipped + val_set.skipped})

    progress = _progress(console, enabled=c.progress and dist.main)
    images_seen, train_time = 0, 0.0
    last = None
    with progress:
        for epoch in range(start_epoch, c.epochs):
            torch.manual_seed(_epoch_seed(c.seed, epoch, dist.rank))
            sampler.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=sampler, drop_last=drop_last,
                                num_workers=c.workers, persistent_workers=False,
                                pin_memory=device.type == "cuda",
                                generator=torch.Generator().manual_seed(_epoch_seed(c.seed, epoch, dist.rank)))
            task = progress.add_task(f"epoch {epoch + 1}/{c.epochs}", total=steps_per_epoch, loss=float("nan"),
                                     acc=float("nan"), ips=0.0)
            model.train()
            t0 = time.perf_counter()
            loss_sum, correct, seen = 0.0, 0, 0
            for step, (xb, yb) in enumerate(loader):
                x = torch.from_numpy(normalize(xb.numpy(), spec)).to(device, non_blocking=True)
                y = yb.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp):
                    logits = model(x)
                    loss = criterion(logits.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(core)
                n = len(y)
                loss_sum += loss.item() * n
                correct += (logits.argmax(1) == y).sum().item()
                seen += n
                elapsed = time.perf_counter() - t0
                progress.update(task, advance=1, loss=loss_sum / seen, acc=100.0 * correct / seen,
                                ips=seen * dist.world / max(elapsed, 1e-9))
            seconds = time.perf_counter() - t0
            progress.remove_task(task)
            train_time += seconds
            images_seen += seen * dist.world
            train_loss, train_acc = loss_sum / max(seen, 1), 100.0 * correct / max(seen, 1)
            if dist.enabled:
                train_loss, train_acc = _all_mean(train_loss, train_acc)

            if dist.main:
                eval_model = ema.module if ema is not None else core
                m = evaluate(eval_model, val_set, spec, device)
                if m["top1"] > best[0]:
                    best = (m["top1"], epoch + 1)
                record = {"epoch": epoch + 1, "train_loss": round(train_loss, 5), "train_top1": round(train_acc, 3),
                          "val_loss": round(m["loss"], 5), "val_top1": round(m["top1"], 4),
                          "val_top5": round(m["top5"], 4), "lr": optimizer.param_groups[0]["lr"],
                          "seconds": round(seconds, 3),
                          "images_per_second": round(seen * dist.world / max(seconds, 1e-9), 1)}
                log["epochs"].append(record)
                finished = epoch + 1 == c.epochs
                log["finished"] = finished
                log["best"] = {"val_top1": best[0], "epoch": best[1]}
                extra = {"metrics": {k: record[k] for k in ("val_top1", "val_top5", "val_loss", "train_loss",
                                                             "train_top1")},
                         "epoch": epoch + 1, "epochs": c.epochs, "seed": c.seed, "finished": finished,
                         "ema": bool(ema), "dataset": log["dataset"], "train_config": c.to_dict(),
                         "val_per_class_top1": {classes[k]: round(v, 3) for k, v in m["per_class_top1"].items()}}
                state = {"epoch": epoch + 1, "model": core.state_dict(), "optimizer": optimizer.state_dict(),
                         "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                         "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                         "best": list(best), "total_steps": total_steps,
                         "config": json.dumps(c.to_dict()), "log": json.dumps(log)}
                with _defer_sigint():
                    run_dir.mkdir(parents=True, exist_ok=True)
                    save_project_checkpoint(eval_model, spec, run_dir / CHECKPOINT_NAME, extra=extra)
                    _save_state(run_dir / STATE_NAME, state)
                    _write_json_atomic(run_dir / LOG_NAME, log)
                last = record
                say(f"epoch {epoch + 1}/{c.epochs}: train loss {train_loss:.4f} top-1 {train_acc:.2f}% · "
                    f"val loss {m['loss']:.4f} top-1 {m['top1']:.2f}% top-5 {m['top5']:.2f}% · "
                    f"{record['images_per_second']:.0f} img/s · {seconds:.1f} s", highlight=False)
            dist.barrier()

    if last is None and dist.main:
        last = log["epochs"][-1] if log["epochs"] else None
        if last is None:
            raise UserError(f"{run_dir} holds no completed epoch: start a new run")
    if not dist.main:
        last = {"val_top1": float("nan"), "val_top5": float("nan"), "val_loss": float("nan"), "epoch": c.epochs}
    total_train = sum(e["seconds"] for e in log["epochs"]) if log["epochs"] else train_time
    ips = images_seen / train_time if train_time else 0.0
    if dist.main:
        say(f"done: val top-1 {last['val_top1']:.2f}% (best {best[0]:.2f}% at epoch {best[1]}), "
            f"{total_train:.1f} s training, checkpoint {run_dir / CHECKPOINT_NAME}", highlight=False)
    return RunResult(run_dir, run_dir / CHECKPOINT_NAME, c.epochs, last["val_top1"], last["val_top5"],
                     last["val_loss"], best[0], best[1], total_train, ips, run_dir / LOG_NAME, notes)


def _all_mean(*values: float) -> tuple[float, ...]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return tuple((t / dist.get_world_size()).tolist())


def _progress(console, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f} · acc {task.fields[acc]:.1f}% · "
                               "{task.fields[ips]:.0f} img/s"),
                    TimeRemainingColumn(), console=console, disable=not enabled, transient=True)


# ---------------------------------------------------------------- for the demo

def ensure_default_model(run_dir: str | os.PathLike = "runs/default", console=None, **overrides) -> Path:
    """The default model (EfficientViT-M0 trained on the embedded digits): reuse a finished
    run in ``run_dir``, resume an unfinished one, or train it. Returns the checkpoint."""
    run_dir = Path(run_dir)
    if run_is_finished(run_dir):
        return run_dir / CHECKPOINT_NAME
    resume = (run_dir / STATE_NAME).exists()
    train(TrainConfig(out=str(run_dir), resume=resume, **overrides), console=console)
    return run_dir / CHECKPOINT_NAME
