"""Steps shared by the CLI and the Python API: get a model, fold it, check the fold."""
from __future__ import annotations

import torch

from .errors import UserError


def prepare_model(variant=None, checkpoint=None, num_classes=None, img_size=None, *, seed=None,
                  labels=None, reset_head=False):
    """load_model, plus seeded realistic random weights when there is no checkpoint."""
    from .models import load_model, randomize_

    if img_size is not None and img_size < 32:
        raise UserError(f"--img-size {img_size} is too small: EfficientViT needs at least 32 pixels")
    model = load_model(variant, checkpoint, num_classes, img_size, labels=labels, reset_head=reset_head)
    if checkpoint is None:
        randomize_(model, seed=0 if seed is None else seed)
        model.spec.notes.append(f"random weights (seed {0 if seed is None else seed}): "
                                "for structure, speed and equivalence checks only")
        model.load_notes.append(model.spec.notes[-1])
    return model


@torch.no_grad()
def fold_and_measure(model, batch: int = 4, seed: int = 0):
    """Fold ``model``; return (deploy model, max |logit diff| on seeded random inputs)."""
    from .models import DeployEfficientViT, fold

    if isinstance(model, DeployEfficientViT):
        return model, 0.0
    deployed = fold(model)
    leftover = [n for n, m in deployed.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if leftover:  # a wiring bug, never user input
        raise RuntimeError(f"BatchNorm left after folding: {leftover[:3]}")
    g = torch.Generator().manual_seed(seed)
    size = model.spec.img_size
    x = torch.randn(batch, 3, size, size, generator=g)
    diff = (model.eval()(x) - deployed(x)).abs().max().item()
    return deployed, diff
