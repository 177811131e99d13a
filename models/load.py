"""``build_model``: one entry point for every checkpoint kind the project accepts."""
from __future__ import annotations

import os

import torch

from evit_export.core.errors import UserError
from evit_export.core.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from evit_export.models.checkpoint import (detect_layout, download, fetch_pretrained, infer_num_classes,
                                           infer_variant, is_url, load_weights, official_to_native,
                                           read_checkpoint)
from evit_export.models.deploy import fold
from evit_export.models.efficientvit import EfficientViT, canonical_variant


def build_model(variant: str | None = None, checkpoint: str | os.PathLike | None = None,
               num_classes: int | None = None, img_size: int | None = None, *,
               pretrained: bool = False, reset_head: bool = False, labels: list[str] | None = None,
               quiet: bool = False) -> torch.nn.Module:
    """Build EfficientViT ``variant`` in eval mode, optionally with checkpoint weights.

    ``pretrained=True`` (no ``checkpoint``): the official ImageNet-1K weights of the
    variant, downloaded once into the cache (``core.paths.cache_dir``) and read
    from there afterwards, offline. Downloads show a progress bar on stderr unless
    ``quiet``. ``num_classes``/``img_size`` default to what the checkpoint says (1000 /
    224 without one). The returned module carries ``.spec`` (a ModelSpec),
    ``.load_notes`` (what was adapted while loading) and ``.head_reinitialised``. A
    checkpoint written by ``evit-export fold`` comes back in its deploy (folded) form.
    """
    if pretrained:
        if checkpoint is not None:
            raise UserError("pass either a checkpoint or pretrained=True (the official ImageNet weights), "
                            "not both")
        if variant is None:
            raise UserError("pretrained=True needs a variant: pass --variant m0..m5")
        checkpoint = fetch_pretrained(canonical_variant(variant), quiet=quiet)
    elif checkpoint is None:
        return _fresh_model(variant, num_classes, img_size, labels)
    source = str(checkpoint)
    path = download(source, quiet=quiet) if is_url(source) else checkpoint
    state, meta = read_checkpoint(path)
    folded = bool(meta.get("folded"))
    if not folded and detect_layout(state) == "official":
        state = official_to_native(state)
    name = _variant_of(variant, state, meta, folded, source)
    ck_classes = meta.get("num_classes") if folded else infer_num_classes(state)
    classes = num_classes or ck_classes or 1000
    notes: list[str] = []
    reset = ck_classes is not None and classes != ck_classes
    if reset:
        if not reset_head or folded:
            raise UserError(f"checkpoint {source} has {ck_classes} classes, not {classes}: pass "
                            f"--num-classes {ck_classes}, or re-initialise the head for fine-tuning")
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
        notes.append(f"classifier head re-initialised: {ck_classes} -> {classes} classes")
    size = img_size or meta.get("img_size") or 224
    distill = any(k.startswith("head_dist.") for k in state)
    model = EfficientViT(name, num_classes=classes, img_size=size, distillation=distill).eval()
    if folded:
        model = _load_folded(model, state, meta, size, source)
    else:
        if reset:
            state.update({k: v for k, v in model.state_dict().items() if k.startswith(("head.", "head_dist."))})
        notes += load_weights(model, state, source)
    if labels is not None and len(labels) != classes:
        raise UserError(f"{len(labels)} labels given for {classes} classes: give one label per class")
    model.spec = _spec_from_meta(name, classes, size, meta, labels)
    model.load_notes = notes
    model.head_reinitialised = reset
    return model


def _fresh_model(variant: str | None, num_classes: int | None, img_size: int | None,
                 labels: list[str] | None) -> torch.nn.Module:
    if variant is None:
        raise UserError("no variant given: pass --variant m0..m5 (or a --checkpoint)")
    name = canonical_variant(variant)
    n = num_classes or 1000
    model = EfficientViT(name, num_classes=n, img_size=img_size or 224).eval()
    model.spec = ModelSpec(name, n, img_size or 224, labels=list(labels or []))
    model.load_notes = []
    model.head_reinitialised = False
    return model


def _variant_of(variant: str | None, state: dict, meta: dict, folded: bool, source: str) -> str:
    """The variant asked for, checked against the one the checkpoint holds."""
    wanted = canonical_variant(variant) if variant else None
    found = meta.get("variant") if folded else infer_variant(state)
    if wanted and found and wanted != found:
        raise UserError(f"checkpoint {source} is EfficientViT-{found.upper()}, not {wanted.upper()}: "
                        f"pass --variant {found}")
    if wanted or found:
        return wanted or found
    layout = "deploy" if folded else detect_layout(state)
    raise UserError(f"checkpoint {source} fits no EfficientViT variant (layout: {layout}); "
                    "pass --variant to see which keys differ")


def _load_folded(model: EfficientViT, state: dict, meta: dict, size: int, source: str) -> torch.nn.Module:
    if size != meta.get("img_size"):
        raise UserError(f"folded checkpoint {source} is built for img_size {meta.get('img_size')}: "
                        "drop --img-size or fold again from the training checkpoint")
    deployed = fold(model)
    try:
        deployed.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"folded checkpoint {source} does not fit its sidecar ({str(e).splitlines()[0][:120]}); "
                        "re-run evit-export fold") from None
    return deployed


def _spec_from_meta(name: str, classes: int, size: int, meta: dict, labels: list[str] | None) -> ModelSpec:
    ck_labels = meta.get("labels") if meta.get("num_classes") == classes else None
    return ModelSpec(name, classes, size, labels=list(labels or ck_labels or []),
                     mean=tuple(meta.get("mean", IMAGENET_MEAN)), std=tuple(meta.get("std", IMAGENET_STD)),
                     **{k: meta[k] for k in ("crop_pct", "interpolation") if k in meta})
