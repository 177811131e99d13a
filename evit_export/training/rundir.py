"""The run directory: what a run writes after every epoch, and reading it back to
resume or to reuse a finished run.

* ``model.safetensors`` + ``model.json``: the best epoch by val top-1 (ties: lower
  val loss); what ``export``/``check``/``demo`` should use. The sidecar carries the
  ModelSpec (variant, labels, img_size, mean/std, crop_pct), that epoch's metrics,
  the seed and the training config.
* ``last.safetensors`` + ``last.json``: the last completed epoch, same form.
* ``train_state.pt``: model, optimizer, scheduler, EMA and scaler state of the last
  epoch for ``--resume`` (plain tensors and numbers; read with ``weights_only=True``).
* ``log.json``: the config and one record per epoch.
* ``split.json``: the files of the train and val splits (and the skipped ones).

Weights are written with the EMA weights when ``ema`` is on (what was evaluated).
Every file is written to a temporary name and renamed; the files of one epoch are
written together with Ctrl-C held (``core.interrupt.protected``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from evit_export.core.atomic import atomic_path
from evit_export.core.errors import UserError
from evit_export.core.interrupt import protected
from evit_export.core.jsonio import write_json_atomic
from evit_export.training.config import TrainConfig
from evit_export.models.checkpoint import save_project_checkpoint

CHECKPOINT_NAME = "model.safetensors"  # best epoch
LAST_NAME = "last.safetensors"  # last completed epoch
STATE_NAME = "train_state.pt"
LOG_NAME = "log.json"
SPLIT_NAME = "split.json"
# Settings of the machine, not of the run: a resumed run takes them from the new call.
_PER_CALL = ("workers", "threads", "progress", "device")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.best = self.path / CHECKPOINT_NAME
        self.last = self.path / LAST_NAME
        self.state = self.path / STATE_NAME
        self.log = self.path / LOG_NAME
        self.split = self.path / SPLIT_NAME

    def refuse_existing(self) -> None:
        if self.state.exists() or self.best.exists():
            raise UserError(f"{self.path} already holds a training run: pass resume= to continue it or choose "
                            "another out=")

    def read_state(self) -> dict:
        if not self.state.exists():
            raise UserError(f"nothing to resume in {self.path} (no {STATE_NAME}): drop resume= or pass the "
                            "out= of an earlier run")
        try:
            return torch.load(str(self.state), map_location="cpu", weights_only=True)
        except Exception as e:  # corrupt or foreign file: torch raises many types
            raise UserError(f"{self.state} is not a readable training state ({str(e).splitlines()[0][:80]}): "
                            "start a new run with another out=") from None

    def write_epoch(self, model: torch.nn.Module, spec, extra: dict, state: dict, log: dict,
                    improved: bool, split: dict | None = None) -> None:
        """Last-epoch weights, the best weights when this epoch is the best so far, the
        resume state and the log (and the split, first time), written together: Ctrl-C
        waits until all are done."""

        with protected():
            self.path.mkdir(parents=True, exist_ok=True)
            if split is not None:
                write_json_atomic(self.split, split)
            save_project_checkpoint(model, spec, self.last, extra=extra)
            if improved:
                save_project_checkpoint(model, spec, self.best, extra=extra)
            with atomic_path(self.state) as tmp:
                torch.save(state, str(tmp))
            write_json_atomic(self.log, log)

    def interrupted_detail(self) -> str:
        """What a Ctrl-C leaves: the last completed epoch, or nothing."""
        if not self.last.exists():
            if self.best.exists():  # a run written before last.safetensors existed
                return f"{self.best} holds the last completed epoch; continue with --resume"
            return "no epoch had completed, nothing was written"
        try:
            epoch = json.loads(self.last.with_suffix(".json").read_text()).get("epoch")
        except (OSError, ValueError):
            epoch = None
        done = f"epoch {epoch}" if epoch else "the last completed epoch"
        return f"{self.last} holds {done} ({self.best.name}: the best so far); continue with --resume"


def resumed_config(config: TrainConfig, state: dict) -> TrainConfig:
    """The stored config of the run, with this call's machine settings and ``--epochs``."""
    stored = TrainConfig.from_dict(json.loads(state["config"]))
    stored.out, stored.resume = config.out, True
    for key in _PER_CALL:
        setattr(stored, key, getattr(config, key))
    if config.epochs is not None:
        stored.epochs = config.epochs
    return stored


def run_is_finished(run_dir: str | os.PathLike) -> bool:
    run = RunDir(run_dir)
    if not (run.log.exists() and run.best.exists() and run.best.with_suffix(".json").exists()):
        return False
    try:
        data = json.loads(run.log.read_text())
    except ValueError:
        return False
    return bool(data.get("finished"))


def ensure_default_model(run_dir: str | os.PathLike = "runs/default", console=None, **overrides) -> Path:
    """The default model (EfficientViT-M0 trained on the embedded digits): reuse a finished
    run in ``run_dir``, resume an unfinished one, or train it. Returns the best checkpoint."""
    from evit_export.training.loop import train  # the loop writes what this module reads

    run = RunDir(run_dir)
    if run_is_finished(run.path):
        return run.best
    train(TrainConfig(out=str(run.path), resume=run.state.exists(), **overrides), console=console)
    return run.best
