"""``evit-export train``: options in, ``evit_export.training.train`` out."""
from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from evit_export.cli import Flag, app, console, err_console


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
        variant: Optional[str] = typer.Option(None, "--variant", "-v", metavar="VARIANT",
                                              help="m0 to m5; default m0, or the --pretrained checkpoint's."),
        data: Optional[Path] = typer.Option(None, "--data", metavar="DIR",
                                            help="ImageFolder: a train/ folder of class folders, optionally val/ "
                                            "beside it; default: the embedded scikit-learn digits."),
        epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N",
                                             help="Default 8 (digits) or 30 (--data)."),
        img_size: Optional[int] = typer.Option(None, "--img-size", metavar="PIXELS",
                                               help="Default 64 (digits), 128 (--data), or the --pretrained "
                                               "checkpoint's when fine-tuning on --data."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", metavar="N",
                                                 help="Global batch, split over torchrun processes; default: 64, "
                                                 "halved for a small training set until an epoch is 16 steps "
                                                 "(not below 8)."),
        lr: Optional[float] = typer.Option(None, "--lr", metavar="LR",
                                           help="Peak AdamW learning rate; default 2e-3 (5e-4 fine-tuning) × "
                                           "sqrt(batch/64)."),
        pretrained: Optional[str] = typer.Option(None, "--pretrained", metavar="imagenet|CHECKPOINT",
                                                 help="Fine-tune from the official ImageNet weights (downloaded "
                                                 "once, then cached) or any checkpoint load_model accepts; the "
                                                 "head is re-initialised when the class count differs."),
        out: Path = typer.Option(Path("runs/default"), "--out", metavar="RUN_DIR", help="Run directory."),
        resume: bool = Flag(False, "--resume", help="Continue the run in --out exactly, from its last epoch."),
        seed: int = typer.Option(0, "--seed", metavar="SEED"),
        workers: int = typer.Option(0, "--workers", metavar="N", help="Data-loader worker processes."),
        weight_decay: float = typer.Option(0.05, "--weight-decay", metavar="WD"),
        warmup_epochs: float = typer.Option(1.0, "--warmup-epochs", metavar="EPOCHS"),
        label_smoothing: float = typer.Option(0.1, "--label-smoothing", metavar="EPS"),
        drop_path: float = typer.Option(0.0, "--drop-path", metavar="RATE"),
        ema: bool = Flag(False, "--ema/--no-ema", help="Keep, evaluate and save an exponential moving average."),
        ema_decay: float = typer.Option(0.998, "--ema-decay", metavar="DECAY"),
        crop_pct: float = typer.Option(1.0, "--crop-pct", metavar="FRACTION",
                                       help="Evaluation centre-crop fraction (1.0: none)."),
        val_fraction: float = typer.Option(0.2, "--val-fraction", metavar="FRACTION",
                                           help="Seeded split when DIR/val is missing."),
        augment: Augment = typer.Option(Augment.auto, "--augment",
                                        help="auto: affine for the digits, crop for --data."),
        device: Optional[Device] = typer.Option(None, "--device", help="Default: cuda when present."),
        threads: Optional[int] = typer.Option(None, "--threads", metavar="N",
                                              help="CPU threads per process; default: the idle cores."),
        limit_train: Optional[int] = typer.Option(None, "--limit-train", metavar="N",
                                                  help="Use only N training images."),
        limit_val: Optional[int] = typer.Option(None, "--limit-val", metavar="N",
                                                help="Use only N validation images."),
        progress: bool = Flag(True, "--progress/--no-progress", help="Progress bar per epoch.")):
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
