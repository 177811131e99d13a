"""Opening an artifact's runner across the protocol change (RunnerOptions vs keyword
arguments), so packaging works against either form of ``Target.open``."""
from __future__ import annotations

import inspect


def open_runner(target, path, spec, threads: int | None = None):
    params = inspect.signature(target.open).parameters
    if "options" in params:
        from evit_export.targets.base import RunnerOptions

        return target.open(path, spec, RunnerOptions(threads=threads))
    return target.open(path, spec=spec, threads=threads)


def input_quantization(target_name: str, path) -> tuple[float, int] | None:
    """The artifact input's (scale, zero point) when the target's app module can read it."""
    from evit_export.packaging.apps import app_module

    module = app_module(target_name)
    reader = getattr(module, "input_quantization", None) if module else None
    return reader(path) if reader else None
