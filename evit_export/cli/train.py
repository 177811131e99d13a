"""``evit-export train``: options in, ``evit_export.training.train`` out."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import app, console, err_console


class Augment(str, Enum):
    auto = "auto"
    affine = "affine"
    crop = "crop"
    none = "none"


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


# Long only by its signature: typer reads the options from it; the body is a dozen lines.
@app.command("train")
def train_cmd(
        variant: Optional[str] = typer.Option(None, "--variant", "-v", help="m0..m5 (default m0, or the "
                                              "--pretrained checkpoint's)"),
        data: Optional[Path] = typer.Option(None, "--data", metavar="DIR", help="ImageFolder DIR "
                                            "(DIR/train/<class>/*, optional DIR/val/<class>/*); default: the "
                                            "embedded scikit-learn digits"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="default 8 (digits) / 30 (--data)"),
        img_size: Optional[int] = typer.Option(None, "--img-size", help="default 64 (digits) / 128 (--data) / the "
                                             "--pretrained checkpoint's (--data, fine-tuning)"),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="global batch, split over torchrun "
                                                 "processes (default 64; shrinks to a smaller dataset)"),
        lr: Optional[float] = typer.Option(None, "--lr", help="peak AdamW learning rate (default 2e-3, 5e-4 "
                                           "fine-tuning; × sqrt(batch/64))"),
        pretrained: Optional[str] = typer.Option(None, "--pretrained", metavar="CHECKPOINT",
                                                 help="fine-tune from 'imagenet' (the official ImageNet weights, "
                                                 "downloaded once and cached) or any checkpoint load_model "
                                                 "accepts; the head is re-initialised when the class count "
                                                 "differs"),
        out: Path = typer.Option(Path("runs/default"), "--out", metavar="RUN_DIR", help="run directory"),
        resume: bool = typer.Option(False, "--resume", help="continue the run in --out exactly (from its "
                                    "last epoch)"),
        seed: int = typer.Option(0, "--seed"),
        workers: int = typer.Option(0, "--workers", help="data-loader worker processes"),
        weight_decay: float = typer.Option(0.05, "--weight-decay"),
        warmup_epochs: float = typer.Option(1.0, "--warmup-epochs"),
        label_smoothing: float = typer.Option(0.1, "--label-smoothing"),
        drop_path: float = typer.Option(0.0, "--drop-path"),
        ema: bool = typer.Option(False, "--ema/--no-ema", help="keep and save an exponential moving average"),
        ema_decay: float = typer.Option(0.998, "--ema-decay"),
        crop_pct: float = typer.Option(1.0, "--crop-pct", help="evaluation centre-crop fraction (1.0: none)"),
        val_fraction: float = typer.Option(0.2, "--val-fraction", help="seeded split when DIR/val is missing"),
        augment: Augment = typer.Option(Augment.auto, "--augment", help="auto: affine for the digits, crop for "
                                        "--data"),
        device: Optional[Device] = typer.Option(None, "--device", help="default: cuda when present"),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads per process (default: idle "
                                              "cores)"),
        limit_train: Optional[int] = typer.Option(None, "--limit-train", help="use only N training images"),
        limit_val: Optional[int] = typer.Option(None, "--limit-val", help="use only N validation images"),
        progress: bool = typer.Option(True, "--progress/--no-progress")):
    """Train or fine-tune EfficientViT (default: M0 on the embedded handwritten digits).

    Runs under torchrun too (DistributedDataParallel: gloo on CPU, nccl on GPU). After
    every epoch writes RUN_DIR/last.safetensors (that epoch) and, when val top-1
    improved, RUN_DIR/model.safetensors (the best epoch: export and check this one),
    each with a .json sidecar, plus log.json and train_state.pt for --resume. Ctrl-C
    keeps the last completed epoch and exits 130.
    """
    from evit_export.training import TrainConfig, train

    config = TrainConfig(variant=variant, data=str(data) if data is not None else None, epochs=epochs,
                         img_size=img_size, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         warmup_epochs=warmup_epochs, label_smoothing=label_smoothing, drop_path=drop_path,
                         pretrained=pretrained, out=str(out), resume=resume, seed=seed, workers=workers,
                         ema=ema, ema_decay=ema_decay, crop_pct=crop_pct, val_fraction=val_fraction,
                         augment=augment.value, device=device.value if device else None, threads=threads,
                         limit_train=limit_train, limit_val=limit_val, progress=progress)
    try:
        result = train(config, console=err_console)
    except KeyboardInterrupt as e:  # core.interrupt.Cancelled: its message says what is left
        err_console.print(f"interrupted: {e}" if str(e) else "interrupted", highlight=False)
        raise typer.Exit(130) from None
    if int(os.environ.get("RANK", "0")) == 0:
        epochs_done = "1 epoch" if result.epochs == 1 else f"{result.epochs} epochs"
        console.print(f"{result.checkpoint}  val top-1 {result.val_top1:.2f}%  top-5 {result.val_top5:.2f}%  "
                      f"(best of {epochs_done}: epoch {result.best_epoch}; last epoch in "
                      f"{result.last_checkpoint.name}; {result.train_seconds:.0f} s, "
                      f"{result.images_per_second:.0f} img/s)", highlight=False)
