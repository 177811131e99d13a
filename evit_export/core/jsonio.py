"""Strict JSON: everything the tool prints with ``--json`` or writes as a ``.json`` file.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no other JSON
parser accepts. Here a non-finite float becomes ``null`` ("no value": a latency
estimate has no p90, a diverged artifact has no finite cosine), and ``allow_nan=False``
stays on as a guard, so anything that still smuggles one in (e.g. through a caller's
``default=``) raises ``ValueError`` instead of writing invalid JSON.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from evit_export.core.atomic import write_text_atomic


def _finite_or_none(obj):
    """``obj`` with every non-finite float replaced by None; numpy scalars and arrays
    become plain Python values, tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_none(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_none(value) for value in obj]
    if type(obj).__module__ == "numpy" and hasattr(obj, "tolist"):  # numpy scalar or array
        return _finite_or_none(obj.tolist())
    return obj


def dumps_strict(obj, **kwargs) -> str:
    """``json.dumps`` that never writes NaN/Infinity: non-finite floats become null."""
    return json.dumps(_finite_or_none(obj), allow_nan=False, **kwargs)


def _refuse_constant(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def loads_strict(text: str | bytes):
    """``json.loads`` that refuses NaN, Infinity and -Infinity (what other parsers do)."""
    return json.loads(text, parse_constant=_refuse_constant)


def write_json_atomic(path: str | os.PathLike, obj, *, indent: int = 2, **kwargs) -> Path:
    """Strict JSON of ``obj`` written to a temporary file and renamed onto ``path``."""

    return write_text_atomic(path, dumps_strict(obj, indent=indent, **kwargs) + "\n")
