"""Fit a device profile to measured latencies, and say how well it predicts.

The fit: latency = sum over features of coefficient x feature (simulate.FEATURES),
coefficients >= 0 (a class cannot make a model faster), solved by nonnegative least
squares on relative error (each row divided by its measured latency, so a 2 ms model
counts as much as a 200 ms one). scipy's ``nnls`` does the solving.

Its honesty: in-sample error, leave-one-out error (each row predicted by a fit on all
the others), the same for the transformer rows alone (the rows a CNN-heavy set
predicts worst), Spearman rank correlation, and the same figures for the naive
baseline that every latency paper warns about: latency proportional to MACs.

Which coefficients are free depends on the runtime (``fit_structure``): for runtimes on
XNNPACK's kernels (``Target.kernel_library``) classes that run the same kernel share one
price, so the 30-odd CNN rows of a calibration set fix prices the few transformer rows
could not identify alone.
"""
from __future__ import annotations

import csv
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.validation.latency.simulate import FEATURES, GraphFeatures
from evit_export.targets import get_target, target_names
from evit_export.validation.latency.workloads import features
from evit_export.validation.latency.profiles import DeviceProfile

# Attention-bearing architectures (m0..m5 are EfficientViT): what "held-out transformers"
# means in a validation.
TRANSFORMER_MARKERS = ("vit", "deit", "swin", "former", "levit", "beit", "cait", "xcit", "pit_", "tnt", "mvit",
                       "crossvit", "coat", "twins", "efficientvit")
REQUIRED_COLUMNS = ("device", "model", "img_size", "ms")


@dataclass
class Measurement:
    model: str
    img_size: int
    ms: float
    features: GraphFeatures | None = None

    @property
    def is_transformer(self) -> bool:
        name = self.model.lower()
        return any(m in name for m in TRANSFORMER_MARKERS) or re.fullmatch(r"m[0-5]", name) is not None


def read_measurements(csv_path: Path, device: str) -> list[Measurement]:
    """The rows of ``device`` in a CSV with at least device,model,img_size,ms."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{csv_path} lacks the column(s) {', '.join(missing)}: it needs "
                                f"{','.join(REQUIRED_COLUMNS)}")
            rows = [r for r in reader if r["device"] == device]
    except OSError as e:
        raise UserError(f"cannot read {csv_path}: {e.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{csv_path} is not a UTF-8 CSV file ({type(e).__name__}): export it as CSV") from None
    if not rows:
        raise UserError(f"{csv_path} has no rows for device {device!r}: check --device")
    if len(rows) < 3:
        raise UserError(f"{csv_path} has {len(rows)} {device} row(s): a fit needs at least 3 measured models")
    return [_measurement(csv_path, device, r) for r in rows]


def _measurement(csv_path: Path, device: str, row: dict) -> Measurement:
    model, size, ms = (str(row.get(k) or "").strip() for k in ("model", "img_size", "ms"))
    try:
        m = Measurement(model, int(size), float(ms))
    except ValueError:
        raise UserError(f"{csv_path}: a {device} row has a non-numeric img_size or ms ({size!r}, {ms!r})") from None
    if not model or not 1 <= m.img_size <= 4096 or not (0 < m.ms < float("inf")):
        raise UserError(f"{csv_path}: the {device} row {model!r}, {size!r}, {ms!r} needs a model, an image "
                        "size of 1 to 4096 and a positive finite latency in ms")
    return m


def design(rows: list[Measurement], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    X = np.array([[m.features.vector()[n] for n in names] for m in rows], dtype=np.float64)
    return X, np.array([m.ms for m in rows], dtype=np.float64)


def _scipy():
    try:
        import scipy.optimize
        import scipy.stats
    except ImportError:
        raise UserError("fitting a device profile needs scipy: pip install 'evit-export[baselines]'") from None
    return scipy


def nnls_relative(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients >= 0 minimising the sum of squared relative errors."""
    nnls = _scipy().optimize.nnls

    scale = X.max(axis=0)
    scale[scale == 0] = 1.0  # a feature absent from every row gets coefficient 0
    coef, _ = nnls(X / scale / y[:, None], np.ones_like(y))
    return coef / scale


def flops_baseline(X_macs: np.ndarray, y: np.ndarray) -> float:
    """ms per GMAC of the proportional model, fitted on relative error too."""
    r = X_macs / y
    return float(r.sum() / (r @ r)) if r.any() else 0.0


def _errors(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.abs(pred - y) / y


def _rank_corr(pred: np.ndarray, y: np.ndarray) -> float | None:
    return float(_scipy().stats.spearmanr(pred, y).statistic) if len(y) >= 3 else None


def _round(value: float | None) -> float | None:
    """4 decimals; None for no value (too few rows, or all predictions equal)."""
    return None if value is None or value != value else round(value, 4)


def _summary(pred: np.ndarray, y: np.ndarray) -> dict:
    if not len(y):
        return {}
    err = _errors(pred, y)
    return {"median_error": round(float(np.median(err)), 4), "max_error": round(float(err.max()), 4),
            "rank_corr": _round(_rank_corr(pred, y)), "rows": int(len(y))}


def leave_one_out(X: np.ndarray, y: np.ndarray, solve) -> np.ndarray:
    """Prediction of each row by a fit on all the other rows."""
    pred = np.empty_like(y)
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        pred[i] = X[i] @ np.atleast_1d(solve(X[keep], y[keep]))
    return pred


def _tie(X: np.ndarray, names: list[str], shared: dict) -> tuple[np.ndarray, list[str]]:
    """Columns of features sharing a price summed into their leader's column."""
    leaders = [n for n in names if n not in shared]
    tied = np.zeros((X.shape[0], len(leaders)))
    for j, n in enumerate(names):
        tied[:, leaders.index(shared.get(n, n))] += X[:, j]
    return tied, leaders


def validate(rows: list[Measurement], names: list[str], shared: dict | None = None) -> tuple[np.ndarray, dict]:
    """(coefficients over ``names``, validation figures) of a fit on ``rows``, with the
    MACs-proportional baseline beside it. ``shared`` maps a feature to the feature whose
    price it shares (fit_structure)."""
    X_all, y = design(rows, names)
    X, leaders = _tie(X_all, names, shared or {})
    macs = np.array([[m.features.total_macs / 1e9] for m in rows])
    coef_leaders = nnls_relative(X, y)
    coef = np.array([coef_leaders[leaders.index((shared or {}).get(n, n))] for n in names])
    loo = leave_one_out(X, y, nnls_relative)
    base_coef = flops_baseline(macs[:, 0], y)
    base_loo = leave_one_out(macs, y, lambda a, b: np.array([flops_baseline(a[:, 0], b)]))
    vit = np.array([m.is_transformer for m in rows])
    figures = {
        "rows": len(rows), "transformer_rows": int(vit.sum()),
        "in_sample_median_error": round(float(np.median(_errors(X_all @ coef, y))), 4),
        "loo_median_error": round(float(np.median(_errors(loo, y))), 4),
        "loo_rank_corr": _round(_rank_corr(loo, y)),
        "held_out_transformers": _summary(loo[vit], y[vit]),
        "flops_proportional": {
            "ms_per_gmac": round(base_coef, 4),
            "in_sample_median_error": round(float(np.median(_errors(macs[:, 0] * base_coef, y))), 4),
            "loo_median_error": round(float(np.median(_errors(base_loo, y))), 4),
            "loo_rank_corr": _round(_rank_corr(base_loo, y)),
            "held_out_transformers": _summary(base_loo[vit], y[vit]),
        },
        "per_row": [{"model": m.model, "img_size": m.img_size, "measured_ms": m.ms,
                     "loo_estimate_ms": round(float(p), 3), "flops_loo_estimate_ms": round(float(b), 3)}
                    for m, p, b in zip(rows, loo, base_loo)],
    }
    return coef, figures


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# XNNPACK (TFLite's delegate, ExecuTorch's backend) runs a 1x1 convolution, a fully
# connected layer and a batch matmul through the same GEMM micro-kernels: one rate per MAC. Elementwise ops, layout
# copies (transpose, concat, pad) and a GEMM's operand streaming move activations through
# the same caches and memory: one price per element moved.
XNNPACK_SHARED_PRICES = {"matmul": "pointwise", "layout": "elementwise", "gemm_traffic": "elementwise"}
# Added for XNNPACK runtimes: transcendental compute and GEMM operand traffic (simulate.py).
# The onnxruntime (MLAS) calibration keeps its earlier structure (its larger reference set
# was validated against M0-M5 that way, and MLAS runs 1x1 convolutions in NCHWc kernels, not
# in its SGEMM, so the GEMM tie would not hold there).
_XNNPACK_ONLY = ("exp", "erf", "gemm_traffic")


def _runs_xnnpack(formats: list[str] | None) -> bool:
    """Whether any of ``formats`` runs on XNNPACK's kernels (``Target.kernel_library``)."""

    known = set(target_names())
    return any(get_target(f).kernel_library == "xnnpack" for f in formats or [] if f in known)


def fitted_features(device_class: str, formats: list[str] | None = None) -> list[str]:
    """The coefficients a fit solves for. An op-by-op interpreter pays per op and per
    call; a whole-graph accelerator has no per-op cost (simulate.estimate)."""
    xnnpack = _runs_xnnpack(formats)
    names = [n for n in FEATURES if xnnpack or n not in _XNNPACK_ONLY]
    return names if device_class == "cpu-interpreter" else [n for n in names if n != "dispatch"]


def fit_structure(device_class: str, formats: list[str]) -> tuple[list[str], dict]:
    """(features a fit solves for, prices they share) for a runtime running ``formats``."""
    shared = XNNPACK_SHARED_PRICES if _runs_xnnpack(formats) else {}
    return fitted_features(device_class, formats), dict(shared)


def attach_features(rows: list[Measurement], log=lambda msg: None) -> None:
    """Record each row's model once (cached across runs, see workloads.features)."""

    for i, m in enumerate(rows, start=1):
        log(f"[{i}/{len(rows)}] {m.model} @ {m.img_size}px")
        m.features = features(m.model, m.img_size)[3]


def fit_profile(rows: list[Measurement], *, name: str, description: str, runtime: str, formats: list[str],
                precisions: list[str], source_text: str, data: dict, device_class: str = "cpu-interpreter"):
    """(DeviceProfile, validation figures) fitted to ``rows`` (features attached)."""

    names, shared = fit_structure(device_class, formats)
    coef, figures = validate(rows, names, shared)
    models = sorted({m.model for m in rows})
    profile = DeviceProfile(
        name=name, description=description, device_class=device_class, runtime=runtime, formats=formats,
        precisions=precisions,
        coefficients={n: float(f"{c:.6g}") for n, c in zip(names, coef)},
        source={"kind": "fitted", "text": f"fitted to {len(rows)} measurements of {len(models)} models "
                f"({figures['transformer_rows']} transformers) {source_text}",
                "fitted": now_utc(), "method": "nonnegative least squares on relative error (scipy nnls)",
                "shared_prices": shared,
                "models": models, **data},
        validation={k: v for k, v in figures.items() if k != "per_row"})
    return profile, figures


__all__ = ["Measurement", "read_measurements", "validate", "attach_features", "fit_profile", "nnls_relative",
           "flops_baseline", "fitted_features", "fit_structure", "leave_one_out", "now_utc", "FEATURES"]
