"""The network a run trains: a fresh EfficientViT, or one fine-tuned from a checkpoint
or from the official ImageNet weights (``--pretrained imagenet``)."""
from __future__ import annotations

from torch import nn

from evit_export.core.errors import UserError
from evit_export.models import build_model, canonical_variant, EfficientViT
from evit_export.models.checkpoint import fetch_pretrained
from evit_export.models.deploy import DeployEfficientViT
from evit_export.models.efficientvit import Residual
from evit_export.training.config import is_imagenet, TrainConfig


def _set_drop_path(model: nn.Module, rate: float) -> None:
    for m in model.modules():
        if isinstance(m, Residual):
            m.drop = rate


def _load_pretrained(c: TrainConfig, num_classes: int, notes: list[str]) -> nn.Module:
    if is_imagenet(c.pretrained):
        model = build_model(c.variant, None, num_classes, c.img_size, reset_head=True, pretrained=True)
        source = f"the official ImageNet weights of EfficientViT-{model.spec.variant.upper()}"
    else:
        model = build_model(c.variant, c.pretrained, num_classes, c.img_size, reset_head=True)
        source = c.pretrained
    if isinstance(model, DeployEfficientViT):
        raise UserError(f"pretrained={c.pretrained} is a folded deploy checkpoint: fine-tune from "
                        "the training checkpoint it was folded from")
    notes += list(model.load_notes)
    if getattr(model, "distillation", False):  # train and export one head
        del model.head_dist
        model.distillation = False
        notes.append("distillation head of the checkpoint dropped")
    head = "head re-initialised" if model.head_reinitialised else f"head kept: {num_classes} classes"
    notes.append(f"fine-tuning from {source} ({head})")
    return model


def fetch_pretrained_first(c: TrainConfig, dist) -> None:
    """``--pretrained imagenet``: download the weights before reading the data (a network
    problem shows at once), on rank 0 only; the other processes read the cache."""

    if not is_imagenet(c.pretrained):
        return
    if dist.main:
        fetch_pretrained(canonical_variant(c.variant))
    dist.barrier()


def build_training_model(c: TrainConfig, num_classes: int, notes: list[str]) -> tuple[nn.Module, str]:
    """(model in train mode, its canonical variant name); adds what was adapted to ``notes``."""

    if c.pretrained:
        model = _load_pretrained(c, num_classes, notes)
        if c.drop_path > 0:
            _set_drop_path(model, c.drop_path)
        return model.train(), model.spec.variant
    name = canonical_variant(c.variant)
    return EfficientViT(name, num_classes=num_classes, img_size=c.img_size, drop_path=c.drop_path).train(), name
