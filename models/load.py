"""``load_model``: one entry point for every checkpoint kind the project accepts."""
from __future__ import annotations

import os

import torch

from evit_export.core.errors import UserError
from evit_export.core.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

from evit_export.models.checkpoint import (detect_layout, download, infer_num_classes, infer_variant, is_url,
                         load_weights, official_to_native, read_checkpoint)
from evit_export.models.deploy import fold
from evit_export.models.efficientvit import EfficientViT, canonical_variant


def load_model(variant: str | None = None, checkpoint: str | os.PathLike | None = None,
               num_classes: int | None = None, img_size: int | None = None, *,
               reset_head: bool = False, labels: list[str] | None = None,
               quiet: bool = True) -> torch.nn.Module:
    """Build EfficientViT ``variant`` in eval mode, optionally with checkpoint weights.

    ``num_classes``/``img_size`` default to what the checkpoint says (1000 / 224
    without one). The returned module carries ``.spec`` (a ModelSpec) and
    ``.load_notes`` (what was adapted while loading). A checkpoint written by
    ``evit-export fold`` comes back in its deploy (folded) form.
    """
    if checkpoint is None:
        if variant is None:
            raise UserError("no variant given: pass --variant m0..m5 (or a --checkpoint)")
        name = canonical_variant(variant)
        n = num_classes or 1000
        model = EfficientViT(name, num_classes=n, img_size=img_size or 224).eval()
        model.spec = ModelSpec(name, n, img_size or 224, labels=list(labels or []))
        model.load_notes = []
        return model

    source = str(checkpoint)
    path = download(source, quiet=quiet) if is_url(source) else checkpoint
    state, meta = read_checkpoint(path)
    folded = bool(meta.get("folded"))
    layout = "deploy" if folded else detect_layout(state)
    if layout == "official":
        state = official_to_native(state)

    wanted = canonical_variant(variant) if variant else None
    meta_variant = meta.get("variant")
    found = meta_variant if folded else infer_variant(state)
    if wanted and found and wanted != found:
        raise UserError(f"checkpoint {source} is EfficientViT-{found.upper()}, not {wanted.upper()}: "
                        f"pass --variant {found}")
    name = wanted or found
    if name is None:
        raise UserError(f"checkpoint {source} fits no EfficientViT variant (layout: {layout}); "
                        "pass --variant to see which keys differ")

    ck_classes = meta.get("num_classes") if folded else infer_num_classes(state)
    notes: list[str] = []
    classes = num_classes or ck_classes or 1000
    if ck_classes is not None and classes != ck_classes:
        if not reset_head or folded:
            raise UserError(f"checkpoint {source} has {ck_classes} classes, not {classes}: pass "
                            f"--num-classes {ck_classes}, or re-initialise the head for fine-tuning")
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
        notes.append(f"classifier head re-initialised: {ck_classes} -> {classes} classes")
    size = img_size or meta.get("img_size") or 224
    distill = any(k.startswith("head_dist.") for k in state)
    model = EfficientViT(name, num_classes=classes, img_size=size, distillation=distill).eval()
    if folded:
        if size != meta.get("img_size"):
            raise UserError(f"folded checkpoint {source} is built for img_size {meta.get('img_size')}: "
                            "drop --img-size or fold again from the training checkpoint")
        model = fold(model)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise UserError(f"folded checkpoint {source} does not fit its sidecar ({str(e).splitlines()[0][:120]}); "
                            "re-run evit-export fold") from None
    else:
        if reset_head and classes != ck_classes:
            keep = model.state_dict()
            state.update({k: v for k, v in keep.items() if k.startswith(("head.", "head_dist."))})
        notes += load_weights(model, state, source)
    ck_labels = meta.get("labels") if meta.get("num_classes") == classes else None
    model.spec = ModelSpec(
        name, classes, size, labels=list(labels or ck_labels or []),
        mean=tuple(meta.get("mean", IMAGENET_MEAN)), std=tuple(meta.get("std", IMAGENET_STD)),
        **{k: meta[k] for k in ("crop_pct", "interpolation") if k in meta})
    if labels is not None and len(labels) != classes:
        raise UserError(f"{len(labels)} labels given for {classes} classes: give one label per class")
    model.load_notes = notes
    return model
