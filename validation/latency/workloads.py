"""The models a simulation or a fit talks about, named as users name them:

    m0 … m5            EfficientViT deploy graph (BN folded), optionally from a checkpoint
    timm:<name>        any timm architecture, built with random weights (nothing downloaded)
    path/to/artifact   an exported artifact: its embedded spec says variant, classes and size

Features (simulate.GraphFeatures) depend only on the architecture and the input shape,
so they are cached by name, size, batch and library versions: a fit over 39 models
records each forward pass once.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.paths import cache_dir
from evit_export.validation.latency.simulate import GraphFeatures, model_features
from evit_export.targets import known_suffixes
from evit_export.models.reference import deploy_for_export

# Bump when op classification changes, so cached features are recomputed.
FEATURES_VERSION = 5
_VARIANT = re.compile(r"^(?:efficientvit_)?(m[0-5])$", re.IGNORECASE)


def is_artifact_ref(ref: str) -> bool:
    return Path(ref).exists() or ref.lower().rstrip("/").endswith(known_suffixes(runnable=True))


def timm_model(name: str, img_size: int | None = None):
    """(timm model with random weights, its input size). Attention is built unfused so
    the recorded ops are the matmuls and softmax an exported graph runs."""
    try:
        import timm
        from timm.layers import set_fused_attn
    except ImportError:
        raise UserError("timm:<name> models need timm: pip install 'evit-export[baselines]'") from None
    if name not in timm.list_models():
        raise UserError(f"timm has no model {name!r}: see timm.list_models() for the names")
    set_fused_attn(False)
    try:
        model = timm.create_model(name, pretrained=False)
        default = int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        if img_size and img_size != default:
            try:
                model = timm.create_model(name, pretrained=False, img_size=img_size)
            except TypeError:
                pass  # convolutional: any size runs
    finally:
        set_fused_attn(True)
    return model.eval(), img_size or default


def efficientvit_model(variant: str, checkpoint=None, img_size: int | None = None, num_classes: int | None = None):
    deployed, spec = deploy_for_export(variant, checkpoint, num_classes=num_classes, img_size=img_size, seed=0)
    return deployed, spec.img_size


def resolve(ref: str, checkpoint=None, img_size: int | None = None, batch: int | None = None):
    """(label, torch model, img_size, batch) for a model reference."""
    if ref.startswith("timm:"):
        model, size = timm_model(ref[5:], img_size)
        return ref, model, size, batch or 1
    match = _VARIANT.match(ref)
    if match:
        model, size = efficientvit_model(match.group(1).lower(), checkpoint, img_size)
        return match.group(1).lower(), model, size, batch or 1
    if is_artifact_ref(ref):
        from evit_export.targets import open_artifact

        path, _, spec = open_artifact(ref)
        model, size = efficientvit_model(spec.variant, checkpoint, img_size or spec.img_size, spec.num_classes)
        return path.name, model, size, batch or spec.batch or 1
    raise UserError(f"unknown model {ref!r}: use m0..m5, timm:<name> or the path of an exported artifact")


def _cache_file(key: str) -> Path:
    import importlib.metadata

    import torch

    try:
        timm_version = importlib.metadata.version("timm")
    except importlib.metadata.PackageNotFoundError:
        timm_version = "none"
    versions = f"torch{torch.__version__}-timm{timm_version}-f{FEATURES_VERSION}"
    digest = hashlib.sha256(f"{key}|{versions}".encode()).hexdigest()[:20]
    return cache_dir() / "features" / f"{digest}.json"


def features(ref: str, img_size: int | None = None, batch: int | None = None,
             checkpoint=None) -> tuple[str, int, int, GraphFeatures]:
    """(label, img_size, batch, features) of a model reference, cached for named architectures."""
    cacheable = checkpoint is None and not is_artifact_ref(ref)
    if cacheable:
        key = f"{ref}|{img_size}|{batch or 1}"
        cached = _cache_file(key)
        if cached.is_file():
            data = json.loads(cached.read_text())
            return data["label"], data["img_size"], batch or 1, GraphFeatures.from_dict(data["features"])
    label, model, size, batch = resolve(ref, checkpoint, img_size, batch)
    feats = model_features(model, size, batch)
    if cacheable:
        from evit_export.core.jsonio import write_json_atomic

        cached.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cached, {"label": label, "img_size": size, "features": feats.to_dict()})
    return label, size, batch, feats


def planned_memory(ref: str, precision: str, img_size: int | None = None, batch: int | None = None,
                   checkpoint=None) -> dict:
    """Activation arena, live peak and weight bytes planned from the graph
    (``validation.memory.static_memory``) at ``precision``: what a device pays in memory
    before one is bought. Cached like the features for named architectures."""
    from evit_export.validation.memory import static_memory

    keys = ("activation_bytes", "packed_activation_bytes", "peak_live_bytes", "weight_bytes", "precision")
    cacheable = checkpoint is None and not is_artifact_ref(ref)
    cached = _cache_file(f"memory|{ref}|{img_size}|{batch or 1}|{precision}") if cacheable else None
    if cached is not None and cached.is_file():
        return json.loads(cached.read_text())
    plan = static_memory(ref, img_size=img_size, batch=batch, checkpoint=checkpoint, precision=precision)
    memory = {k: plan[k] for k in keys}
    if cached is not None:
        from evit_export.core.jsonio import write_json_atomic

        cached.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cached, memory)
    return memory
