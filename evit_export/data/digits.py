"""The embedded default dataset: scikit-learn's handwritten digits (1,797 real 8×8
scans, 0..16 ink levels, bright ink on dark), no download.

Each scan becomes an 8×8 greyscale PIL image (level × 255/16, rounded) and is
rendered to RGB at the training resolution by the shared preprocessing. Fixed
split, independent of any library's shuffling: within each class, in dataset order,
every 5th image (positions 4, 9, 14, … counting from 0) is validation, the rest
training → 1,442 train / 355 val.
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec
from evit_export.data.imageset import ImageSet
from evit_export.core.optional import missing_message
from evit_export.core.preprocess import batch_to_pixels

DIGITS_LABELS = [str(i) for i in range(10)]
DIGITS_VAL_EVERY = 5  # every 5th image of each class is validation


@functools.lru_cache(maxsize=1)
def _digits_raw():
    """(images (1797, 8, 8) float 0..16, targets) — the file ``load_digits`` reads, read
    directly (importing scikit-learn costs ~3 s here); ``load_digits`` as the fallback."""
    import importlib.util


    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise UserError(missing_message("sklearn") + ", or pass data=DIR")
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        table = np.loadtxt(csv, delimiter=",")
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target.astype(np.int64)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of the fixed documented split."""
    _, y = _digits_raw()
    val = np.zeros(len(y), dtype=bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        val[idx[DIGITS_VAL_EVERY - 1::DIGITS_VAL_EVERY]] = True
    return np.flatnonzero(~val), np.flatnonzero(val)


def digit_image(scan: np.ndarray):
    """One 8×8 scan (0..16) -> 8×8 greyscale PIL image (0..255)."""
    from PIL import Image

    return Image.fromarray(digit_levels(scan), mode="L")


def digit_levels(scans: np.ndarray) -> np.ndarray:
    """8×8 scans (0..16) -> uint8 grey levels (0..255), as ``digit_image`` renders them."""
    return np.rint(np.asarray(scans, np.float64) * 255.0 / 16.0).astype(np.uint8)


def render_digits(scans: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Scans (N,8,8) -> uint8 (N,3,S,S): ``preprocess.batch_to_pixels`` on the greyscale
    levels repeated to RGB, equal to ``image_to_pixels(digit_image(scan), spec)`` per scan
    (pinned by a test), in one call."""
    import torch


    grey = torch.from_numpy(digit_levels(scans))[:, None].expand(-1, 3, -1, -1).contiguous()
    return batch_to_pixels(grey, spec).round().clamp(0, 255).to(torch.uint8).numpy()


def digits_spec(variant: str = "m0", img_size: int = 64) -> ModelSpec:
    """The spec a model trained on the default dataset carries (no cropping)."""
    return ModelSpec(variant, 10, img_size, labels=list(DIGITS_LABELS), crop_pct=1.0, interpolation="bicubic")


def _eval_spec(spec_or_size) -> ModelSpec:
    if isinstance(spec_or_size, ModelSpec):
        return spec_or_size
    return digits_spec(img_size=int(spec_or_size))


def load_digits_split(split: str, spec_or_size) -> ImageSet:
    """The ``train``, ``val`` or ``all`` split of the digits, rendered with ``spec``."""
    spec = _eval_spec(spec_or_size)
    images, y = _digits_raw()
    train_idx, val_idx = digits_split_indices()
    idx = {"train": train_idx, "val": val_idx, "all": np.arange(len(y))}.get(split)
    if idx is None:
        raise UserError(f"unknown digits split {split!r}: choose train, val or all")
    pixels = render_digits(images[idx], spec)
    return ImageSet(pixels, y[idx], list(DIGITS_LABELS),
                    f"scikit-learn digits ({split} split)", [f"digits[{i}]" for i in idx])


def digits_pixels(split: str, spec_or_size) -> tuple[np.ndarray, np.ndarray]:
    """(float32 pixels (N,3,S,S) RGB 0..255, int64 labels) of a digits split, the
    Runner input convention. ``spec_or_size``: a ModelSpec (its img_size, crop_pct,
    interpolation are used) or an int img_size."""
    s = load_digits_split(split, spec_or_size)
    return s.float_pixels(), s.targets


def write_digits_imagefolder(root: str | os.PathLike, splits=("train", "val"), scale: int = 1) -> Path:
    """Write the digits as PNG files in ImageFolder layout (root/<split>/<digit>/*.png),
    ``scale`` × 8 pixels wide (nearest-neighbour), with the fixed split."""
    from PIL import Image

    root = Path(root)
    images, y = _digits_raw()
    train_idx, val_idx = digits_split_indices()
    for split in splits:
        idx = {"train": train_idx, "val": val_idx}[split]
        for c in DIGITS_LABELS:
            (root / split / c).mkdir(parents=True, exist_ok=True)
        for i in idx:
            im = digit_image(images[i])
            if scale != 1:
                im = im.resize((8 * scale, 8 * scale), Image.NEAREST)
            im.save(root / split / str(y[i]) / f"{i:04d}.png")
    return root
