"""Numerical equivalence of an artifact against the PyTorch reference.

Reports numbers (max/mean abs error, max relative error, cosine similarity, top-1
and top-5 agreement, output SQNR) and a verdict against per-precision tolerances.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from evit_export.core.interrupt import raise_if_cancelled
from evit_export.core.metrics import softmax

from evit_export.targets.calibration import INT8_MIN_COSINE_MEAN, INT8_MIN_SQNR_DB, INT8_MIN_TOP1, INT8_MIN_TOP5

# Tolerances by precision; every field can be overridden.
#  fp32: max abs <= 1e-4 * max(1, max |reference logit|)
#  fp16: cosine >= 0.999 and top-1 agreement >= 99 %
#  int8: mean cosine >= 0.99, output SQNR >= 20 dB, top-1 agreement >= 98 %, top-5 agreement >= 85 %
#        (judged on images held out from calibration; a model that misses them is one users
#        would see fail in the field: the failure says what to try)


@dataclass
class Tolerance:
    max_abs_scale: float | None = None  # max abs err <= this * max(1, max |ref|)
    min_cosine: float | None = None  # every image's cosine
    min_top1: float | None = None  # fraction 0..1
    min_cosine_mean: float | None = None  # the mean over images
    min_top5: float | None = None  # fraction 0..1 (mean overlap of the top-5 sets)
    min_sqnr_db: float | None = None  # output signal-to-quantization-noise ratio, all images together

    def describe(self) -> str:
        parts = []
        if self.max_abs_scale is not None:
            parts.append(f"max abs ≤ {self.max_abs_scale:g}·max(1,|ref|)")
        if self.min_cosine is not None:
            parts.append(f"cosine ≥ {self.min_cosine:g}")
        if self.min_cosine_mean is not None:
            parts.append(f"mean cosine ≥ {self.min_cosine_mean:g}")
        if self.min_sqnr_db is not None:
            parts.append(f"SQNR ≥ {self.min_sqnr_db:g} dB")
        if self.min_top1 is not None:
            parts.append(f"top-1 agreement ≥ {100 * self.min_top1:g}%")
        if self.min_top5 is not None:
            parts.append(f"top-5 agreement ≥ {100 * self.min_top5:g}%")
        return ", ".join(parts)


DEFAULT_TOLERANCES = {
    "fp32": Tolerance(max_abs_scale=1e-4),
    "fp16": Tolerance(min_cosine=0.999, min_top1=0.99),
    "int8": Tolerance(min_cosine_mean=INT8_MIN_COSINE_MEAN, min_sqnr_db=INT8_MIN_SQNR_DB, min_top1=INT8_MIN_TOP1,
                      min_top5=INT8_MIN_TOP5),
}
# What a failed int8 judgement suggests, in the words of the export options.
INT8_REMEDIES = ("try keeping the most sensitive layers in float (keep_float='auto', or --keep-float auto; "
                 "check --per-layer shows where int8 breaks), another calibration_method, or more calibration "
                 "images of the model's own domain")


def tolerance_for(family: str, **overrides) -> Tolerance:
    """The default tolerance of a precision family ("fp32" | "fp16" | "int8": what
    ``Target.precision_family(spec)`` says), with the non-None ``overrides`` applied."""
    if family not in DEFAULT_TOLERANCES:
        raise ValueError(f"precision family {family!r} is not one of {', '.join(DEFAULT_TOLERANCES)}: "
                         "map the artifact's precision with Target.precision_family(spec)")
    values = asdict(DEFAULT_TOLERANCES[family])
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Tolerance(**values)


@dataclass
class EquivalenceReport:
    artifact: str
    runtime: str
    precision: str
    n: int
    max_abs: float
    mean_abs: float
    max_rel: float
    ref_max_abs: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float
    top5_agreement: float
    tolerance: str
    passed: bool
    failures: list[str] = field(default_factory=list)
    inputs: str = ""
    localization: dict | None = None
    sqnr_db: float | None = None  # 10·log10(Σref² / Σ(got-ref)²) over every logit; None when exact
    notes: list[str] = field(default_factory=list)  # how the judgement was made (held out, in-sample ...)

    def to_dict(self) -> dict:
        return asdict(self)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Output SQNR in dB over all values together; None when ``got`` equals ``ref``."""
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((np.asarray(got, np.float64) - ref) ** 2))
    signal = float(np.sum(ref ** 2))
    if noise == 0 or not np.isfinite(noise):
        return None
    return 10.0 * float(np.log10(max(signal, 1e-300) / noise))


def compare_outputs(ref: np.ndarray, got: np.ndarray, precision: str, tolerance: Tolerance | None = None,
                    artifact: str = "", runtime: str = "", inputs: str = "") -> EquivalenceReport:
    """``precision`` labels the report; without ``tolerance`` it must be a precision
    family, whose default tolerance applies."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"output shapes differ: reference {ref.shape}, artifact {got.shape}")
    tol = tolerance or tolerance_for(precision)
    diff = np.abs(got - ref)
    finite = np.isfinite(got).all()
    denom = np.maximum(np.abs(ref), 1e-6)
    num = (ref * got).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(norms > 0, num / np.maximum(norms, 1e-30), 0.0)
    k = min(5, ref.shape[1])
    top1 = float((ref.argmax(1) == got.argmax(1)).mean())
    ref5 = np.argsort(-ref, axis=1)[:, :k]
    got5 = np.argsort(-got, axis=1)[:, :k]
    # top-5 agreement: mean overlap of the two top-5 sets.
    top5 = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref5, got5)]))
    ref_max = float(np.abs(ref).max())
    report = EquivalenceReport(
        artifact=artifact, runtime=runtime, precision=precision, n=int(ref.shape[0]),
        max_abs=float(diff.max()) if finite else float("inf"), mean_abs=float(diff.mean()),
        max_rel=float((diff / denom).max()), ref_max_abs=ref_max,
        cosine_min=float(cos.min()) if finite else float("nan"), cosine_mean=float(cos.mean()),
        top1_agreement=top1, top5_agreement=top5, tolerance=tol.describe(), passed=True, inputs=inputs,
        sqnr_db=sqnr_db(ref, got) if finite else None)
    fails = _failures(report, tol, finite, ref_max)
    if fails and tol.min_cosine_mean is not None and finite:  # the int8 judgement: say what to try
        fails.append(INT8_REMEDIES)
    report.failures = fails
    report.passed = not fails
    return report


def _failures(report: EquivalenceReport, tol: Tolerance, finite: bool, ref_max: float) -> list[str]:
    fails = []
    if not finite:
        fails.append("artifact produced non-finite outputs (inf/nan)")
    if tol.max_abs_scale is not None:
        limit = tol.max_abs_scale * max(1.0, ref_max)
        if not report.max_abs <= limit:
            fails.append(f"max abs error {report.max_abs:.3g} > {limit:.3g}")
    if tol.min_cosine is not None and not report.cosine_min >= tol.min_cosine:
        fails.append(f"min cosine {report.cosine_min:.6f} < {tol.min_cosine}")
    if tol.min_cosine_mean is not None and not report.cosine_mean >= tol.min_cosine_mean:
        fails.append(f"mean cosine {report.cosine_mean:.4f} < {tol.min_cosine_mean}")
    if tol.min_sqnr_db is not None and report.sqnr_db is not None and not report.sqnr_db >= tol.min_sqnr_db:
        fails.append(f"SQNR {report.sqnr_db:.1f} dB < {tol.min_sqnr_db:g} dB")
    if tol.min_top1 is not None and not report.top1_agreement >= tol.min_top1:
        fails.append(f"top-1 agreement {100 * report.top1_agreement:.1f}% < {100 * tol.min_top1:g}%")
    if tol.min_top5 is not None and not report.top5_agreement >= tol.min_top5:
        fails.append(f"top-5 agreement {100 * report.top5_agreement:.1f}% < {100 * tol.min_top5:g}%")
    return fails


def check_equivalence(reference, runner, pixels: np.ndarray, precision: str | None = None,
                      tolerance: Tolerance | None = None, artifact: str = "",
                      inputs: str = "") -> EquivalenceReport:
    """Run both Runners on ``pixels`` and compare (probabilities against softmax(reference))."""
    precision = precision or runner.spec.precision
    ref = reference.run(pixels)
    raise_if_cancelled()  # a runtime's native code may have swallowed a Ctrl-C: stop before the next run
    got = runner.run(pixels)
    raise_if_cancelled()
    if getattr(runner, "output_kind", "logits") == "probabilities":
        ref = softmax(ref)
    return compare_outputs(ref, got, precision, tolerance, artifact=artifact, runtime=runner.name,
                           inputs=inputs)
