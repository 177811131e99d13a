"""Latency: measured on this machine or a remote device, and simulated from device profiles.

``estimates_for`` is the one call reports and packages make for simulated figures.
"""
from __future__ import annotations


def estimates_for(spec, target_name: str, precision: str | None = None, devices: list[str] | None = None) -> list[dict]:
    """Simulated latency of the model ``spec`` describes on every built-in device profile
    that runs ``target_name`` artifacts at ``precision`` (default: the spec's), or on
    ``devices`` (names or PROFILE.json paths; those that do not fit are skipped). Each
    row is labelled ``kind: "estimate"`` and carries the profile's provenance and
    validation error; an empty list when no profile fits (e.g. int8, or an Android
    profile for an .mlpackage)."""
    from evit_export.validation.latency.profiles import builtin_profiles, resolve_profile
    from evit_export.validation.latency.simulate import estimate
    from evit_export.validation.latency.workloads import efficientvit_model
    from evit_export.validation.latency.simulate import model_features

    precision = precision or spec.precision
    profiles = [resolve_profile(d) for d in devices] if devices is not None else list(builtin_profiles().values())
    profiles = [p for p in profiles if p.fits(target_name, precision)]
    if not profiles:
        return []
    batch = spec.batch or 1
    model, size = efficientvit_model(spec.variant, img_size=spec.img_size, num_classes=spec.num_classes)
    feats = model_features(model, size, batch)
    return [estimate_row(estimate(feats, p, spec.variant, size, batch), p) for p in profiles]


def estimate_row(est, profile) -> dict:
    """An estimate in the shape of a measured latency row (runtime, median_ms, ...),
    kept apart by ``kind`` and carrying what it rests on."""
    return {"runtime": f"{profile.name} (ESTIMATE)", "device": profile.name, "kind": "estimate",
            "batch": est.batch, "threads": None, "median_ms": est.estimate_ms, "p90_ms": None,
            "images_per_s": round(est.batch / est.estimate_ms * 1e3, 1) if est.estimate_ms > 0 else None,
            "machine": profile.description, "device_class": profile.device_class,
            "provenance": profile.provenance(), "validation_error": profile.error_summary(),
            "validation": profile.validation, "breakdown_ms": est.breakdown_ms}
