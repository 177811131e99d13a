"""Validation figures of a model: top-1/top-5 through the shared preprocessing and the
shared top-k (``core.metrics``), and whether they are any better than guessing."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from evit_export.core.metrics import topk_correct
from evit_export.core.preprocess import normalize
from evit_export.core.spec import ModelSpec


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
    labels = targets.numpy()
    loss = nn.functional.cross_entropy(logits, targets).item()
    per_class = {c: 100.0 * float(top1[labels == c].mean()) for c in range(num_classes) if (labels == c).any()}
    return {"top1": 100.0 * float(top1.mean()), "top5": 100.0 * float(top5.mean()),
            "loss": loss, "n": int(len(labels)), "per_class_top1": per_class}


def chance_level(val_targets: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(top-1 a constant guess of the commonest class gets, in percent; the largest top-1
    that is still not told apart from it on this many images: two binomial standard
    deviations above it)."""
    n = max(1, len(val_targets))
    share = float(np.bincount(val_targets, minlength=num_classes).max()) / n
    share = max(share, 1.0 / num_classes)
    return 100.0 * share, 100.0 * (share + 2.0 * math.sqrt(share * (1.0 - share) / n))


def chance_warning(best_top1: float, val_targets: np.ndarray, num_classes: int, epochs: int,
                   pretrained: bool) -> str | None:
    """A warning when the best validation top-1 is at chance level, with what to try."""
    chance, ceiling = chance_level(val_targets, num_classes)
    if best_top1 > ceiling:
        return None
    advice = "train more epochs (--epochs)"
    if not pretrained:
        advice += " or start from ImageNet weights (--pretrained imagenet)"
    return (f"val top-1 {best_top1:.2f}% is at chance level ({chance:.1f}% for guessing the commonest of "
            f"{num_classes} classes, {len(val_targets)} val images): the model has learned nothing "
            f"useful in {epochs} epoch{'s' if epochs != 1 else ''}; {advice}, and check the labels")
