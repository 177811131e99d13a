"""Find the first layer whose output leaves tolerance, for any Runner that can expose
its intermediate tensors.

Artifacts rename, fuse and re-lay-out tensors, so names are not matched. Instead,
each reference checkpoint (every Conv/Linear output and residual block output of
the PyTorch deploy model, in execution order) is matched numerically against the
artifact's tensors of the same size, in NCHW or NHWC layout, before or after ReLU.
The first checkpoint with no close match is where the artifact diverges.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Localization:
    layer: str | None  # reference module path of the first diverging checkpoint
    error: float | None  # its best normalised error
    nearest_tensor: str | None  # the artifact tensor closest to it
    checked: int  # checkpoints that matched before it
    total: int
    tolerance: float
    first_nonfinite: str | None = None  # first artifact tensor holding inf/nan (fp16 overflow), if any

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        if self.layer is None:
            return f"all {self.total} reference layers matched within {self.tolerance:g}"
        text = (f"first diverging layer: {self.layer} (normalised error {self.error:.3g} > "
                f"{self.tolerance:g}; nearest artifact tensor {self.nearest_tensor}; "
                f"{self.checked}/{self.total} earlier layers matched)")
        if self.first_nonfinite:
            text += f"; first non-finite artifact tensor (overflow starts here): {self.first_nonfinite}"
        return text


LOCALIZE_TOLERANCE = {"fp32": 1e-3, "fp16": 3e-2, "int8": 2e-1}


def _layouts(arr: np.ndarray, shape: tuple) -> list[np.ndarray]:
    """Views of an artifact tensor that could hold a reference tensor of ``shape``."""
    out = []
    if arr.shape == shape:
        out.append(arr)
    if len(shape) == 4 and arr.ndim == 4 and arr.shape == (shape[0], shape[2], shape[3], shape[1]):
        out.append(arr.transpose(0, 3, 1, 2))
    if not out and arr.size == int(np.prod(shape)) and arr.ndim != len(shape):
        out.append(arr.reshape(shape))
    return out


def _error(ref: np.ndarray, cand: np.ndarray) -> float:
    scale = max(1.0, float(np.abs(ref).max()))
    c = cand.astype(np.float64)
    if not np.isfinite(c).all():
        return float("inf")
    return float(np.abs(c - ref).max() / scale)


def localize(reference, runner, pixels: np.ndarray, family: str = "fp32",
             tolerance: float | None = None) -> Localization:
    """The first reference layer (on the first image of ``pixels``) that no artifact
    tensor matches within ``tolerance`` (default: by precision ``family``, fp32/fp16/int8)."""
    if tolerance is None and family not in LOCALIZE_TOLERANCE:
        raise ValueError(f"precision family {family!r}: expected one of {', '.join(LOCALIZE_TOLERANCE)}")
    tol = tolerance if tolerance is not None else LOCALIZE_TOLERANCE[family]
    pixels = pixels[:1]
    ref_trace = reference.tensors(pixels)
    cand = [(n, np.asarray(a)) for n, a in runner.tensors(pixels) if np.asarray(a).dtype.kind == "f"]
    by_size: dict[int, list[tuple[str, np.ndarray]]] = {}
    for name, arr in cand:
        by_size.setdefault(arr.size, []).append((name, arr))
    for i, (layer, ref) in enumerate(ref_trace):
        ref64 = ref.astype(np.float64)
        relu = np.maximum(ref64, 0)
        best, best_name = float("inf"), None
        for name, arr in by_size.get(ref.size, []):
            for view in _layouts(arr, ref.shape):
                err = min(_error(ref64, view), _error(relu, view) if (ref64 < 0).any() else float("inf"))
                if err < best:
                    best, best_name = err, name
        if best > tol:
            overflow = next((n for n, a in cand if not np.isfinite(a).all()), None)
            return Localization(layer, best, best_name, i, len(ref_trace), tol, overflow)
    return Localization(None, None, None, len(ref_trace), len(ref_trace), tol)
