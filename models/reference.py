"""Steps shared by the CLI and the Python API: get a model, fold it, check the fold."""
from __future__ import annotations

import torch

from evit_export.core.errors import UserError
from evit_export.models import build_model, DeployEfficientViT, fold, randomize_
from evit_export.models.checkpoint import fetch_pretrained, is_url, pretrained_url
from evit_export.models.efficientvit import canonical_variant
from evit_export.models.provenance import describe_source, find_checkpoint


def prepare_model(variant=None, checkpoint=None, num_classes=None, img_size=None, *, seed=None,
                  labels=None, reset_head=False, pretrained=False):
    """build_model, plus seeded realistic random weights when there is no checkpoint;
    ``pretrained``: the official ImageNet weights (cached after the first download)."""

    if img_size is not None and img_size < 32:
        raise UserError(f"img_size={img_size} is too small: EfficientViT needs at least 32 pixels")
    if num_classes is not None and num_classes < 1:
        raise UserError(f"num_classes={num_classes}: a classifier needs at least 1 class")
    url = None
    if pretrained:
        if checkpoint is not None or variant is None:
            raise UserError("pretrained=True takes a variant and no checkpoint")
        url = pretrained_url(canonical_variant(variant))
        checkpoint = fetch_pretrained(canonical_variant(variant))
        reset_head = reset_head or num_classes not in (None, 1000)
    model = build_model(variant, checkpoint, num_classes, img_size, labels=labels, reset_head=reset_head)
    if checkpoint is not None:
        model.spec.source = describe_source(checkpoint, url=url)
    else:
        model.spec.source = {"seed": 0 if seed is None else seed, "img_size": model.spec.img_size,
                             "num_classes": model.spec.num_classes}
        randomize_(model, seed=0 if seed is None else seed)
        model.spec.notes.append(f"random weights (seed {0 if seed is None else seed}): "
                                "for structure, speed and equivalence checks only")
        model.load_notes.append(model.spec.notes[-1])
    return model


@torch.no_grad()
def fold_and_measure(model, batch: int = 4, seed: int = 0):
    """Fold ``model``; return (deploy model, max |logit diff| on seeded random inputs)."""

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


def reference_model(spec, checkpoint=None, variant=None, folded: bool = True, near=()):
    """Rebuild the PyTorch model an artifact was exported from (its spec records the
    checkpoint by name and sha256, or the seed), or from an explicit ``checkpoint``.
    ``near``: folders to look in for the recorded checkpoint (the artifact's).
    ``folded``: the deploy form (equivalence, latency) or the model as loaded (parity)."""
    from pathlib import Path


    source = (spec.source if spec else {}) or {}
    if checkpoint is None and "seed" in source:
        model = prepare_model(spec.variant, None, source.get("num_classes", spec.num_classes),
                              source.get("img_size", spec.img_size), seed=source["seed"])
        return fold(model) if folded else model
    if checkpoint is None:
        if "checkpoint" in source:
            checkpoint = find_checkpoint(source, near=tuple(near))
        elif spec is None and variant is None:
            raise UserError("this artifact carries no evit-export spec: pass variant= and checkpoint=")
        elif spec is None:
            raise UserError("this artifact carries no evit-export spec: pass checkpoint= with the "
                            "weights it was exported from")
        else:
            raise UserError("the artifact's spec does not say where its weights came from: pass checkpoint=")
    elif not is_url(checkpoint) and not Path(checkpoint).exists():
        raise UserError(f"checkpoint {checkpoint} does not exist: check the checkpoint= path")
    variant = variant or (spec.variant if spec else None)
    model = prepare_model(variant, checkpoint, spec.num_classes if spec else None,
                          spec.img_size if spec else None)
    return fold(model) if folded else model


def deploy_for_export(variant=None, checkpoint=None, num_classes=None, img_size=None, *, seed=None,
                      labels=None):
    """(folded deploy model, spec) for an export command; notes go into the spec."""

    model = prepare_model(variant, checkpoint, num_classes, img_size, seed=seed, labels=labels)
    deployed = fold(model)  # idempotent: a folded checkpoint comes back as is
    deployed.spec = model.spec
    return deployed, model.spec
