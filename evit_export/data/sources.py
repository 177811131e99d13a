"""Real images the exporters and checkers use when the user gives none: held-out
images for judging quantised artifacts and calibration images for int8."""
from __future__ import annotations

import numpy as np

from evit_export.core.spec import ModelSpec
from evit_export.data.digits import DIGITS_LABELS, digits_pixels, load_digits_split


def is_digits_model(spec: ModelSpec) -> bool:
    """Whether ``spec`` is a model of the embedded digits (its labels are the ten digits),
    the only model the embedded images may calibrate or judge by default."""
    return list(spec.labels) == DIGITS_LABELS


def heldout_images(spec: ModelSpec, count: int = 200) -> tuple[np.ndarray, np.ndarray, str]:
    """Real images never used for training or calibration (the digits validation
    split), for judging quantised artifacts: (pixels, labels, description)."""
    pixels, labels = digits_pixels("val", spec)
    pixels, labels = pixels[:count], labels[:count]
    return pixels, labels, f"{len(pixels)} held-out digits images (validation split)"


def default_calibration_images(spec: ModelSpec, n: int = 64) -> np.ndarray:
    """``n`` real images for int8 calibration: the digits training split (stratified),
    rendered with ``spec``'s preprocessing. Float32 (n,3,S,S) RGB 0..255."""
    s = load_digits_split("train", spec).subset(n)
    return s.float_pixels()
