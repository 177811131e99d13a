"""preprocessing.json: the exact preprocessing the checks used, for app code to follow.

Every app template restates these rules (Python, JavaScript, Kotlin, Swift); the
tests hold each restatement to ``evit_export.core.preprocess.image_to_pixels``.
"""
from __future__ import annotations

from evit_export.core.preprocess import resize_short_side
from evit_export.core.spec import ModelSpec

RESIZE_RULES = (
    "shorter side -> floor(img_size / crop_pct), longer side -> int(short * long / shorter) (truncated); "
    "antialiased resize of the uint8 RGB image with torch's CPU fixed-point scheme (filter weights in double, "
    "scaled to int16 with the largest precision that keeps the biggest weight below 2^15, 32-bit sums rounded "
    "by adding 2^(precision-1) and shifting, clamped to 0..255), horizontal pass first, a pass skipped when "
    "that side keeps its length; bicubic uses a = -0.5")
CROP_RULES = ("centre crop img_size x img_size at offset int(round((resized - img_size) / 2)) per axis, "
              "round half to even (Python's round)")


def sample_side(spec: ModelSpec) -> int:
    """Side of a square image whose resize step is the identity."""
    return resize_short_side(spec)


def preprocessing_spec(spec: ModelSpec, input_quantization: tuple[float, int] | None = None) -> dict:
    note = {"normalized": "apply the formula above before feeding",
            "pixels": "feed RGB pixels 0..255; the formula is inside the model",
            "unit": "feed pixel / 255; mean/std are inside the model"}.get(spec.input_range, "")
    if input_quantization is not None:
        note += (f"; the input is quantised: q = clamp(rint(x / {input_quantization[0]:.9g}) + "
                 f"{input_quantization[1]}), rint rounding half to even")
    return {
        "color": "RGB",
        "img_size": spec.img_size,
        "crop_pct": spec.crop_pct,
        "resize": {"shorter_side": resize_short_side(spec), "interpolation": spec.interpolation,
                   "antialias": True, "rules": RESIZE_RULES},
        "center_crop": [spec.img_size, spec.img_size],
        "crop_rules": CROP_RULES,
        "scale": 1 / 255,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "formula": "x = (pixel / 255 - mean) / std, per channel, in float32",
        "model_input": {"layout": spec.input_layout, "range": spec.input_range, "dtype": spec.input_dtype,
                        "quantization": list(input_quantization) if input_quantization else None,
                        "note": note},
    }
