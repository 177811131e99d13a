"""Calibration images for static int8 quantization, shared by every target that
calibrates (TFLite full-integer, ONNX QLinear/QDQ).

Source: a folder the user names (ImageFolder or flat); for the digits model only, the
embedded digits' training split by default (its own data); random pixels only when asked
for explicitly (``"random"``), always with ``RANDOM_CALIBRATION_WARNING`` in the
artifact's spec. Any other model without a source is refused: digit scans would give an
ImageNet model wrong activation ranges without a word.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec

DEFAULT_CALIBRATION_SIZE = 200
RANDOM_CALIBRATION_WARNING = ("int8 calibrated on RANDOM data (no real images were available): activation "
                              "ranges, and so accuracy, are unreliable; re-export with --calibration-data DIR")


def _is_random(source) -> bool:
    """``"random"`` asks for random calibration, unless a folder by that name exists."""
    return source is not None and str(source) == "random" and not Path(source).is_dir()


def check_calibration_source(calibration_data, quantized: bool, flag: str = "quantize=int8") -> None:
    """Fail before any work when a calibration option cannot apply."""
    if calibration_data is None:
        return
    if not quantized:
        raise UserError(f"calibration_data= only applies to int8 quantization: drop it or add {flag}")
    if not _is_random(calibration_data) and not Path(calibration_data).is_dir():
        raise UserError(f"calibration folder {calibration_data} does not exist: pass calibration_data=DIR "
                        "with images (ImageFolder or flat)")


def _random_pixels(spec: ModelSpec, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(size, 3, spec.img_size, spec.img_size)).astype(np.float32)


def calibration_pixels(spec: ModelSpec, source: str | Path | None, size: int) -> tuple[np.ndarray, str, bool]:
    """(pixels RGB 0..255 NCHW float32, description, is_random) for int8 calibration."""
    from evit_export.core.preprocess import load_images

    if size < 1:
        raise UserError(f"calibration_size={size} must be at least 1")
    if _is_random(source):
        return _random_pixels(spec, size), f"{size} random images", True
    if source is not None:
        check_calibration_source(source, quantized=True)
        root = Path(source)
        pixels, _, used, skipped = load_images(root, spec, limit=size)
        # The folder's name only: the record ships inside artifacts and packages.
        desc = f"{len(used)} images from {root.name}/" + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
        return pixels, desc, False
    from evit_export.data import default_calibration_images, is_digits_model

    if not is_digits_model(spec):
        raise UserError(f"int8 calibration of EfficientViT-{spec.variant.upper()} ({spec.num_classes} classes) needs "
                        "images of its own domain: pass calibration_data=DIR, or calibration_data='random' "
                        "(the artifact then carries a warning)")
    pixels = np.asarray(default_calibration_images(spec, size), np.float32)
    return pixels, f"{len(pixels)} images of the embedded digits dataset (training split)", False


def calibration_record(spec: ModelSpec, source, size: int) -> tuple[np.ndarray, dict]:
    """(pixels, sidecar record) from ``calibration_pixels``; a random source adds the
    warning to ``spec.notes`` and to the record."""
    pixels, desc, is_random = calibration_pixels(spec, source, size)
    record = {"source": desc, "count": len(pixels), "random": bool(is_random)}
    if is_random:
        spec.notes.append(RANDOM_CALIBRATION_WARNING)
        record["warning"] = RANDOM_CALIBRATION_WARNING
    return pixels, record
