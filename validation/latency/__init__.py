"""Latency: measured on this machine or a remote device, and simulated from device profiles.

``estimates_for`` is the one call reports and packages make for simulated figures;
``fit_refusal`` is the one rule for which profile may price which artifact (simulate,
bench --simulate and sweep --simulate all ask it); ``significant_figures`` says how many
digits an estimate on a profile deserves.
"""
from __future__ import annotations

import math

from evit_export.core.errors import UserError
from evit_export.validation.latency.profiles import all_profiles, builtin_profiles, resolve_profile


def fitting_profile_names(target_name: str, precision: str) -> list[str]:
    """Every built-in and user profile that prices ``target_name`` artifacts at ``precision``."""

    return sorted(name for name, (p, _) in all_profiles().items() if p.fits(target_name, precision))


def fit_refusal(profile, target_name: str, precision: str, artifact: str) -> str | None:
    """None when ``profile`` prices ``target_name`` artifacts at ``precision``; else the
    one-line reason, naming the profiles that do (its figures describe another runtime
    or precision, so an estimate would be another artifact's)."""
    if profile.fits(target_name, precision):
        return None
    fitting = fitting_profile_names(target_name, precision)
    instead = (f"use {', '.join(fitting)}" if fitting else
               f"no profile prices {target_name} {precision} artifacts yet (fit one to your measurements: "
               "evit-export devices fit)")
    return (f"device profile {profile.name} prices {'/'.join(profile.formats)} {'/'.join(profile.precisions)} "
            f"artifacts, not {artifact} ({target_name} {precision}): {instead}")


def require_fit(profile, target_name: str, precision: str, artifact: str) -> None:
    reason = fit_refusal(profile, target_name, precision, artifact)
    if reason:
        raise UserError(reason)


def significant_figures(profile) -> int:
    """Digits an estimate on ``profile`` deserves: from its validation error on models
    left out of the fit (the worse of all models and the held-out transformers, which
    EfficientViT resembles more): ~10-30 % error -> 2 figures, ~1-10 % -> 3. A profile
    without measured error (an assumption) gets 1; an unvalidated derivation at most 2."""
    v = profile.validation or {}
    errors = [v.get("loo_median_error"), (v.get("held_out_transformers") or {}).get("median_error")]
    errors = [e for e in errors if isinstance(e, (int, float)) and e > 0]
    if not errors:
        return 1
    figures = min(4, max(1, math.ceil(-math.log10(max(errors))) + 1))
    return min(figures, 2) if v.get("base_profile") else figures


def round_figures(value: float, figures: int) -> float:
    if not value or not math.isfinite(value):
        return value
    return round(value, figures - 1 - math.floor(math.log10(abs(value))))


def format_figures(value: float, figures: int) -> str:
    """``value`` to ``figures`` significant figures, without an exponent: 12, 0.31, 140."""
    if not value or not math.isfinite(value):
        return f"{value:g}"
    decimals = max(0, figures - 1 - math.floor(math.log10(abs(value))))
    return f"{round_figures(value, figures):.{decimals}f}"


def reported(est, profile):
    """``est`` (simulate.Estimate) with its figures rounded to what ``profile``'s
    validation supports; the breakdown to the same decimals as the total."""
    from dataclasses import replace

    figures = significant_figures(profile)
    total = round_figures(est.estimate_ms, figures)
    decimals = max(0, figures - 1 - math.floor(math.log10(abs(est.estimate_ms)))) if est.estimate_ms else 4
    breakdown = {k: round(v, decimals) for k, v in est.breakdown_ms.items()}
    return replace(est, estimate_ms=total, breakdown_ms={k: v for k, v in breakdown.items() if v},
                   significant_figures=figures)


def estimates_for(spec, target_name: str, precision: str | None = None, devices: list[str] | None = None) -> list[dict]:
    """Simulated latency of the model ``spec`` describes on every built-in device profile
    that runs ``target_name`` artifacts at ``precision`` (default: the spec's), or on
    ``devices`` (names or PROFILE.json paths; those ``fit_refusal`` refuses are skipped).
    Each row is labelled ``kind: "estimate"``, rounded to what its profile's validation
    supports, and carries the profile's provenance and validation error; an empty list
    when no profile fits (e.g. int8, or an Android profile for an .mlpackage)."""
    from evit_export.validation.latency.simulate import estimate, model_features
    from evit_export.validation.latency.workloads import efficientvit_model

    precision = precision or spec.precision
    profiles = [resolve_profile(d) for d in devices] if devices is not None else list(builtin_profiles().values())
    profiles = [p for p in profiles if fit_refusal(p, target_name, precision, "") is None]
    if not profiles:
        return []
    batch = spec.batch or 1
    model, size = efficientvit_model(spec.variant, img_size=spec.img_size, num_classes=spec.num_classes)
    feats = model_features(model, size, batch)
    return [estimate_row(reported(estimate(feats, p, spec.variant, size, batch), p), p) for p in profiles]


def estimate_row(est, profile) -> dict:
    """An estimate in the shape of a measured latency row (runtime, median_ms, ...),
    kept apart by ``kind`` (so no label in ``runtime`` repeats it) and carrying what it
    rests on."""
    figures = est.significant_figures or significant_figures(profile)
    return {"runtime": profile.name, "device": profile.name, "kind": "estimate",
            "batch": est.batch, "threads": None, "median_ms": est.estimate_ms, "p90_ms": None,
            "images_per_s": (round_figures(est.batch / est.estimate_ms * 1e3, figures)
                             if est.estimate_ms > 0 else None),
            "significant_figures": figures, "machine": profile.description, "device_class": profile.device_class,
            "provenance": profile.provenance(), "validation_error": profile.error_summary(),
            "validation": profile.validation, "breakdown_ms": est.breakdown_ms}
