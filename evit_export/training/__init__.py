"""Training and fine-tuning (single process or DDP under torchrun).

* ``config``: ``TrainConfig`` and the defaults that depend on the data
* ``dataset``: train/val images, augmentation, batches per epoch
* ``model``: a fresh network or a fine-tuning start (checkpoint, ImageNet weights)
* ``optim``: AdamW parameter groups and the warmup + cosine schedule
* ``evaluate``: validation top-1/top-5 and the chance-level check
* ``distributed``: torchrun processes, device and threads
* ``rundir``: what a run writes (best and last checkpoints, resume state, log)
* ``loop``: ``train`` and the epoch loop
"""
from evit_export.training.config import TrainConfig
from evit_export.training.evaluate import evaluate, metrics_from_logits
from evit_export.training.loop import RunResult, train
from evit_export.training.optim import lr_lambda, param_groups
from evit_export.training.rundir import (CHECKPOINT_NAME, LAST_NAME, STATE_NAME, ensure_default_model,
                                         run_is_finished)

__all__ = ["CHECKPOINT_NAME", "LAST_NAME", "STATE_NAME", "RunResult", "TrainConfig", "ensure_default_model",
           "evaluate", "lr_lambda", "metrics_from_logits", "param_groups", "run_is_finished", "train"]
