"""Export targets behind one protocol (see ``base.py``), one sub-package each.

The registry is built from the target classes' own attributes (name, suffixes, ...).
Importing a target sub-package is cheap: its runtime (onnxruntime, TensorFlow,
coremltools) is imported only when the target exports or opens something, and a
target with ``imports_tensorflow`` gets the import-order guard first (TensorFlow and
torch's triton must not be imported in the wrong order; see
``evit_export/core/import_order.py``).

Adding a target = one sub-package with a ``Target`` subclass + one line in
``TARGET_CLASSES``. A target from another installed distribution declares itself in
the ``evit_export.targets`` entry-point group (``name = "module:Class"``), the way
pytest finds its plug-ins; ``register_target(cls)`` adds one at run time.
"""
from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
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
    "evit_export.targets.executorch:ExecuTorchTarget",
]
ENTRY_POINT_GROUP = "evit_export.targets"
_REQUIRED_ATTRIBUTES = ("name", "suffixes", "precisions", "memory_bound_ops", "options_type")

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


def _plugin_classes() -> list[type[Target]]:
    """Targets other distributions declare. A broken plug-in is a warning naming it, never
    a reason for the built-in formats to stop working."""
    found = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            _validate(cls)
        except Exception as e:  # any failure inside a third-party package
            warnings.warn(f"the evit-export target plug-in {ep.name!r} ({ep.value}) could not be loaded: "
                          f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
            continue
        found.append(cls)
    return found


def _validate(cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Target)):
        raise TypeError(f"{cls!r} is not a Target subclass")
    for attr in _REQUIRED_ATTRIBUTES:
        if not hasattr(cls, attr):
            raise TypeError(f"target class {cls.__name__} lacks the class attribute {attr!r}")


def _registry() -> dict[str, type[Target]]:
    global _classes
    if _classes is None:
        loaded = [c for c in (_load(p) for p in TARGET_CLASSES) if c is not None]
        names = {c.name for c in loaded}
        loaded += [c for c in _plugin_classes() if c.name not in names]  # built-ins win a name clash
        _classes = {c.name: c for c in loaded}
    return _classes


def register_target(cls: type[Target]) -> type[Target]:
    """Add (or replace) a target at run time; usable as a class decorator."""
    _validate(cls)
    _registry()[cls.name] = cls
    return cls


def unregister_target(name: str) -> None:
    _registry().pop(name, None)


def target_names() -> list[str]:
    return list(_registry())


def target_class(name: str) -> type[Target]:
    """The registered class of target ``name``, without the import-order guard that
    ``get_target`` runs: for reading its declarations (the CLI builds its commands from
    them at start-up, before any runtime is needed)."""
    classes = _registry()
    if name not in classes:
        raise UserError(f"unknown target {name!r}: choose one of {', '.join(classes)}")
    return classes[name]


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


def known_suffixes(runnable: bool = False) -> tuple[str, ...]:
    """Every artifact suffix a registered target opens (``runnable``: also the files its
    runtime reads that carry no spec, such as onnxruntime's .ort)."""
    return tuple(s for c in _registry().values() for s in c.suffixes + (c.extra_suffixes if runnable else ()))


def suffixes_in_words() -> str:
    """".onnx, .tflite, .mlpackage, .mlmodel or .pte": the registered formats, for help texts."""
    names = list(known_suffixes())
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def auto_apps_in_words() -> str:
    """What ``package --app auto`` writes for each registered format, for help texts."""
    return ", ".join(f"{c.suffixes[0]} {' + '.join(c.auto_apps)}" for c in _registry().values() if c.auto_apps)


def target_for(path: str | Path, runnable: bool = False) -> Target:
    """The target whose suffixes ``path`` ends in (``runnable``: its extra suffixes too)."""
    p = str(path).rstrip("/").lower()
    classes = _registry()
    for name, cls in classes.items():
        if p.endswith(tuple(s.lower() for s in cls.suffixes + (cls.extra_suffixes if runnable else ()))):
            return get_target(name)
    raise UserError(f"{path} is not an artifact evit-export knows: expected one of "
                    + ", ".join(known_suffixes(runnable)))


def runner_options_for(target: Target, **settings) -> RunnerOptions:
    """``target``'s runner options from keyword settings; None values are left at their
    defaults, a setting its runners do not take is a one-line error naming those they do."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(target.runner_options_type)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UserError(f"{unknown[0]}= is not a setting of {target.title or target.name} runners: they take "
                        f"{', '.join(sorted(known))}")
    return target.runner_options_type(**{k: v for k, v in settings.items() if v is not None})


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
           "TensorInfo", "ENTRY_POINT_GROUP", "TARGET_CLASSES", "all_targets", "known_suffixes", "runner_options_for", "target_class", "get_target", "open_artifact",
           "register_target", "target_for", "target_names", "unregister_target"]
