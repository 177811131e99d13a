"""Export targets behind one protocol (see ``base.py``), looked up lazily so that
importing one runtime never drags in another (TensorFlow and torch's triton must
not be imported in the wrong order; see ``evit_export/safety.py``)."""
from __future__ import annotations

import importlib
from pathlib import Path

from evit_export.core.errors import UserError

from evit_export.targets.base import Artifact, GraphReport, Runner, Target, TensorInfo

# name -> "module:Class"; a target is importable only when its runtime is installed.
REGISTRY = {
    "onnx": "evit_export.targets.onnx.target:OnnxTarget",
    "coreml": "evit_export.targets.coreml.target:CoreMLTarget",
    "tflite": "evit_export.targets.tflite.target:TFLiteTarget",
}

_SUFFIXES = {"onnx": (".onnx", ".ort"), "coreml": (".mlpackage", ".mlmodel"), "tflite": (".tflite",)}


def get_target(name: str) -> Target:
    if name not in REGISTRY:
        raise UserError(f"unknown target {name!r}: choose one of {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    if name in ("coreml", "tflite"):
        from evit_export.core.import_order import tf_safe

        tf_safe()
    try:
        return getattr(importlib.import_module(module), cls)()
    except ModuleNotFoundError as e:
        if e.name == module:
            raise UserError(f"target {name} is not available in this version") from None
        raise


def target_for(path: str | Path) -> Target:
    p = str(path).rstrip("/").lower()
    for name, suffixes in _SUFFIXES.items():
        if p.endswith(suffixes):
            return get_target(name)
    raise UserError(f"{path} is not an artifact evit-export knows: expected one of "
                    + ", ".join(s for v in _SUFFIXES.values() for s in v))


def open_artifact(path: str | Path) -> tuple[Path, Target, object]:
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


__all__ = ["open_artifact", "Artifact", "GraphReport", "Runner", "Target", "TensorInfo", "get_target", "target_for", "REGISTRY"]
