"""Export targets behind one protocol (see ``base.py``), one sub-package each.

The registry is built from the target classes' own attributes (name, suffixes, ...).
Importing a target sub-package is cheap: its runtime (onnxruntime, TensorFlow,
coremltools) is imported only when the target exports or opens something, and a
target with ``imports_tensorflow`` gets the import-order guard first (TensorFlow and
torch's triton must not be imported in the wrong order; see
``evit_export/core/import_order.py``).

Adding a target = one sub-package with a ``Target`` subclass + one line in
``TARGET_CLASSES`` (or ``register_target(cls)`` at run time).
"""
from __future__ import annotations

import importlib
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec

from evit_export.targets.base import (Artifact, GraphReport, PrecisionNotApplicable, Runner, RunnerOptions, Target,
                                      TargetOptions, TensorInfo)

# "module:Class" of every built-in target, in the order commands list them.
TARGET_CLASSES = [
    "evit_export.targets.onnx:OnnxTarget",
    "evit_export.targets.coreml:CoreMLTarget",
    "evit_export.targets.tflite:TFLiteTarget",
]

_classes: dict[str, type[Target]] | None = None  # name -> class, filled on first use


def _load(class_path: str) -> type[Target] | None:
    """The class, or None when its sub-package is absent from this install; any other
    import failure inside a target (or a class the line misnames) is a bug and propagates."""
    module, cls = class_path.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if not module.startswith(e.name or "\0"):
            raise
        return None
    if not hasattr(mod, cls):
        raise ImportError(f"TARGET_CLASSES names {class_path}, but {module} defines no {cls}")
    return getattr(mod, cls)


def _registry() -> dict[str, type[Target]]:
    global _classes
    if _classes is None:
        loaded = [_load(p) for p in TARGET_CLASSES]
        _classes = {c.name: c for c in loaded if c is not None}
    return _classes


def register_target(cls: type[Target]) -> type[Target]:
    """Add (or replace) a target at run time; usable as a class decorator."""
    for attr in ("name", "suffixes", "precisions", "memory_bound_ops", "options_type"):
        if not hasattr(cls, attr):
            raise TypeError(f"target class {cls.__name__} lacks the class attribute {attr!r}")
    _registry()[cls.name] = cls
    return cls


def unregister_target(name: str) -> None:
    _registry().pop(name, None)


def target_names() -> list[str]:
    return list(_registry())


def get_target(name: str) -> Target:
    classes = _registry()
    if name not in classes:
        raise UserError(f"unknown target {name!r}: choose one of {', '.join(classes)}")
    cls = classes[name]
    if cls.imports_tensorflow:
        from evit_export.core.import_order import tf_safe

        tf_safe()
    return cls()


def all_targets() -> list[Target]:
    return [get_target(name) for name in _registry()]


def target_for(path: str | Path) -> Target:
    p = str(path).rstrip("/").lower()
    classes = _registry()
    for name, cls in classes.items():
        if p.endswith(tuple(s.lower() for s in cls.suffixes)):
            return get_target(name)
    raise UserError(f"{path} is not an artifact evit-export knows: expected one of "
                    + ", ".join(s for c in classes.values() for s in c.suffixes))


def open_artifact(path: str | Path) -> tuple[Path, Target, ModelSpec]:
    """(path, target, embedded spec) of an existing artifact exported by evit-export."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"artifact {path} does not exist: check the path")
    target = target_for(path)
    spec = target.read_spec(path)
    if spec is None:
        raise UserError(f"{path} carries no evit-export spec (labels, preprocessing): export it with "
                        "evit-export first")
    return path, target, spec


__all__ = ["Artifact", "GraphReport", "PrecisionNotApplicable", "Runner", "RunnerOptions", "Target", "TargetOptions",
           "TensorInfo", "TARGET_CLASSES", "all_targets", "get_target", "open_artifact",
           "register_target", "target_for", "target_names", "unregister_target"]
