"""Optional runtimes: one place that knows which extra installs which module, so a
missing one is a one-line error naming the command that fixes it (exit 2), never an
ImportError traceback deep inside a converter."""
from __future__ import annotations

import importlib
import importlib.util

from evit_export.core.errors import UserError

# import name -> (pip extra, what needs it). Export targets add their runtimes with
# ``declare`` when the target registry loads them (``Target.extra``/``requirements``).
EXTRAS = {
    "sklearn": ("train", "the embedded handwritten-digits dataset"),
    "timm": ("baselines", "baseline architectures (timm:<name>)"),
    "scipy": ("baselines", "fitting device profiles"),
    "paramiko": ("remote", "bench --remote over SSH"),
}


def declare(module: str, extra: str, purpose: str) -> None:
    """Record that ``pip install 'evit-export[extra]'`` installs ``module``, which ``purpose`` needs."""
    EXTRAS[module] = (extra, purpose)


def missing_message(module: str) -> str:
    extra, purpose = EXTRAS.get(module, ("all", "this command"))
    return (f"{module} is not installed, and {purpose} needs it: "
            f"pip install 'evit-export[{extra}]' (or [all])")


def is_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str) -> None:
    """Raise the one-line install hint when ``module`` cannot be imported; checks
    without importing it (importing TensorFlow here would break the import order)."""
    if not is_available(module):
        raise UserError(missing_message(module))
