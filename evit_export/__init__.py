"""evit-export: EfficientViT M0–M5 from checkpoint to verified mobile and edge artifacts.

The Python API mirrors the command line (see ``evit_export.api`` for the signatures)::

    import evit_export

    model = evit_export.load_model("m0", "efficientvit_m0.pth")
    artifact = evit_export.export(model, "onnx", out="m0.onnx")
    report = evit_export.check("m0.onnx")

Names are imported on first use (PEP 562), so ``import evit_export`` loads neither
torch nor any export runtime.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# public name -> module that defines it
_EXPORTS = {
    **{name: "evit_export.api" for name in ("load_model", "fold", "export", "check", "parity", "bench", "simulate",
                                            "package")},
    "ModelSpec": "evit_export.core.spec",
    "UserError": "evit_export.core.errors",
    "ToleranceOverrides": "evit_export.validation.check",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs (``x as x`` marks a re-export); at run time __getattr__ imports
    from evit_export.api import bench as bench, check as check, export as export, fold as fold
    from evit_export.api import load_model as load_model, package as package, parity as parity
    from evit_export.api import simulate as simulate
    from evit_export.core.errors import UserError as UserError
    from evit_export.core.spec import ModelSpec as ModelSpec
    from evit_export.validation.check import ToleranceOverrides as ToleranceOverrides


def __getattr__(name: str):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("evit-export")
        except PackageNotFoundError:  # running from a source tree that was never installed
            value = "0+unknown"
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'evit_export' has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
