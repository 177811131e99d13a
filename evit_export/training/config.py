"""``TrainConfig``: every knob of a run, and the defaults that depend on the dataset and
on fine-tuning (filled once, by ``resolve_config``, before anything is read)."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.models.checkpoint import is_url, weights_sidecar_path

# The default run: EfficientViT-M0 on the embedded digits, sized so that it reaches
# >= 97 % val top-1 within 5 minutes on 2 CPU cores (benchmarks/bench_train.py and
# the slow test test_default_training_reaches_goal measure it).
DIGITS_DEFAULTS = {"img_size": 64, "epochs": 8, "lr": 2e-3, "batch_size": 64}
FOLDER_DEFAULTS = {"img_size": 128, "epochs": 30, "lr": 2e-3, "batch_size": 64}
FINETUNE_LR = 5e-4
# ``--pretrained imagenet``: the official model-zoo weights of the variant
IMAGENET = "imagenet"


@dataclass
class TrainConfig:
    variant: str | None = None  # default m0 (or the --pretrained checkpoint's)
    data: str | None = None  # ImageFolder DIR; None = embedded digits
    epochs: int | None = None
    img_size: int | None = None
    batch_size: int | None = None  # global batch (split over torchrun processes); None: from the data size
    lr: float | None = None  # peak learning rate
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    drop_path: float = 0.0
    pretrained: str | None = None  # a checkpoint load_model accepts, or "imagenet"
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
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def is_imagenet(pretrained: str | None) -> bool:
    return pretrained is not None and pretrained.lower() == IMAGENET


def _pretrained_img_size(checkpoint: str) -> int:
    """The resolution a checkpoint was trained at: its project sidecar's, else 224
    (the official and timm releases)."""

    if not is_url(checkpoint) and not is_imagenet(checkpoint):
        side = weights_sidecar_path(Path(checkpoint))
        if Path(checkpoint).suffix == ".safetensors" and side.exists():
            try:
                return int(json.loads(side.read_text()).get("img_size") or 224)
            except (ValueError, TypeError):
                pass
    return 224


def _fill_defaults(c: TrainConfig) -> None:
    base = DIGITS_DEFAULTS if c.data is None else FOLDER_DEFAULTS
    if c.img_size is None:
        c.img_size = _pretrained_img_size(c.pretrained) if (c.pretrained and c.data) else base["img_size"]
    if c.epochs is None:
        c.epochs = base["epochs"]
    if c.batch_size is not None and c.batch_size < 1:
        raise UserError(f"batch_size={c.batch_size}: use at least 1")
    # batch_size None: chosen from the dataset's size once it is read (size_batch), and
    # the learning rate with it.
    if c.augment == "auto":
        c.augment = "affine" if c.data is None else "crop"
    if c.variant is None and (c.pretrained is None or is_imagenet(c.pretrained)):
        c.variant = "m0"


# An epoch should be enough optimizer steps to learn from: a default batch of 64 on 96
# training images was 2 steps per epoch, and 6 epochs stayed at chance.
MIN_STEPS_PER_EPOCH = 16
MIN_AUTO_BATCH = 8


def auto_batch(train_images: int, default: int) -> int:
    """The batch for ``train_images`` when the user set none: the default, halved while an
    epoch would have fewer than ``MIN_STEPS_PER_EPOCH`` steps, down to ``MIN_AUTO_BATCH``."""
    batch = default
    while batch > MIN_AUTO_BATCH and train_images / batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return max(batch, 1)


def size_batch(c: TrainConfig, train_images: int) -> str | None:
    """Fill ``batch_size`` (when the user set none) from the training set's size, and the
    learning rate with it (square-root scaling, AdamW). Returns what was chosen, in words,
    or None when the user set the batch."""
    base = DIGITS_DEFAULTS if c.data is None else FOLDER_DEFAULTS
    chosen = c.batch_size is None
    if chosen:
        c.batch_size = auto_batch(train_images, base["batch_size"])
    if c.lr is None:
        c.lr = (FINETUNE_LR if c.pretrained else base["lr"]) * math.sqrt(c.batch_size / base["batch_size"])
        if not c.lr > 0:
            raise UserError(f"lr={c.lr}: the learning rate must be positive")
    if not chosen:
        return None
    return (f"batch {c.batch_size} chosen for {train_images} training images (at least {MIN_STEPS_PER_EPOCH} steps "
            f"per epoch where the batch can stay >= {MIN_AUTO_BATCH}; batch_size= sets it)")


def _check_ranges(c: TrainConfig) -> None:
    if c.img_size < 32:
        raise UserError(f"img_size={c.img_size} is too small: EfficientViT needs at least 32 pixels")
    if c.epochs < 1:
        raise UserError(f"epochs={c.epochs}: train at least 1 epoch")
    if c.batch_size is not None and c.batch_size < 1:
        raise UserError(f"batch_size={c.batch_size}: use at least 1")
    if c.lr is not None and not c.lr > 0:
        raise UserError(f"lr={c.lr}: the learning rate must be positive")
    if not 0 < c.crop_pct <= 1:
        raise UserError(f"crop_pct={c.crop_pct}: choose a value in (0, 1]")
    if not 0 < c.val_fraction < 1:
        raise UserError(f"val fraction {c.val_fraction}: choose a value in (0, 1)")
    if c.limit_train is not None and c.limit_train < 1:
        raise UserError(f"limit_train={c.limit_train} must be at least 1")
    if c.augment not in ("affine", "crop", "none"):
        raise UserError(f"unknown augmentation {c.augment!r}: choose auto, affine, crop or none")


def resolve_config(config: TrainConfig) -> TrainConfig:
    """A copy of ``config`` with the defaults filled in, checked, and paths made absolute
    (the config is stored with the run and must mean the same after a ``cd``)."""

    c = TrainConfig.from_dict(config.to_dict())
    _fill_defaults(c)
    _check_ranges(c)
    if c.data is not None:
        c.data = str(Path(c.data).resolve())
    if c.pretrained is not None:
        if is_imagenet(c.pretrained):
            c.pretrained = IMAGENET
        elif not is_url(c.pretrained):
            c.pretrained = str(Path(c.pretrained).resolve())
    return c
