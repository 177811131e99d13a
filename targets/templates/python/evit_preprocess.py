"""Preprocessing exactly as evit-export checked the model (numpy + Pillow, no torch).

evit-export preprocesses with torchvision: shorter side resized to
floor(img_size / crop_pct) (longer side int(new_short * long / short)), antialiased
resize on uint8 pixels, then a centre crop whose offset is int(round((size - crop) / 2))
with Python's round-half-to-even. On CPU torch resizes uint8 images with fixed-point
weights (Pillow's scheme): double-precision filter weights scaled to int16, 32-bit
accumulation, each pass rounded back to uint8, horizontal pass first. This file
restates that integer arithmetic so its pixels are identical, not merely close.
"""
from __future__ import annotations

import math

import numpy as np


def _bicubic(x: float) -> float:
    a = -0.5  # torch's antialiased bicubic uses a = -0.5 (Pillow's), not -0.75
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


def _triangle(x: float) -> float:
    x = abs(x)
    return 1.0 - x if x < 1.0 else 0.0


FILTERS = {"bicubic": (_bicubic, 4), "bilinear": (_triangle, 2)}


def _trunc(v: float) -> int:
    return int(v)  # C's (int64_t) cast: toward zero


def resize_weights(in_size: int, out_size: int, interpolation: str):
    """Per output index: first source index and int16 weights; plus the precision bits."""
    filt, interp_size = FILTERS[interpolation]
    scale = in_size / out_size
    support = interp_size * 0.5 * scale if scale >= 1.0 else interp_size * 0.5
    max_taps = math.ceil(support) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    starts, rows, wmax = [], [], 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(_trunc(center - support + 0.5), 0)
        xsize = min(max(min(_trunc(center + support + 0.5), in_size) - xmin, 0), max_taps)
        w = [filt((j + xmin - center + 0.5) * invscale) for j in range(xsize)]
        total = 0.0
        for v in w:
            total += v
        if total != 0.0:
            w = [v / total for v in w]
        for v in w:
            wmax = max(wmax, v)
        starts.append(xmin)
        rows.append(w)
    precision = 0
    while precision < 22 and _trunc(0.5 + wmax * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    ints = [[_trunc(v * (1 << precision) + (0.5 if v >= 0 else -0.5)) for v in w] for w in rows]
    return starts, ints, precision


def _resize_axis(img: np.ndarray, out_size: int, axis: int, interpolation: str) -> np.ndarray:
    """One pass over ``axis`` of an (H, W, C) uint8 image, integer arithmetic as torch's."""
    starts, weights, precision = resize_weights(img.shape[axis], out_size, interpolation)
    src = np.moveaxis(img, axis, 0).astype(np.int64)
    out = np.empty((out_size,) + src.shape[1:], np.int64)
    for i, (x0, w) in enumerate(zip(starts, weights)):
        acc = np.full(src.shape[1:], 1 << (precision - 1), np.int64)
        for k, wk in enumerate(w):
            acc += src[x0 + k] * wk
        out[i] = acc >> precision  # arithmetic shift, as the C code's
    return np.moveaxis(np.clip(out, 0, 255).astype(np.uint8), 0, axis)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after resizing the shorter side to ``short_side``, torchvision's rule."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def crop_offset(size: int, crop: int) -> int:
    """int(round((size - crop) / 2.0)) with round-half-to-even; negative = zero padding."""
    if size < crop:
        return -((crop - size) // 2)
    return round((size - crop) / 2.0)  # Python 3 round: half to even


def preprocess_pixels(rgb: np.ndarray, img_size: int, crop_pct: float, interpolation: str = "bicubic") -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (img_size, img_size, 3) uint8: resize + centre crop."""
    if interpolation not in FILTERS:
        raise ValueError(f"interpolation {interpolation!r} is not supported here (bicubic, bilinear)")
    height, width = rgb.shape[:2]
    new_w, new_h = resized_size(width, height, math.floor(img_size / crop_pct))
    img = rgb
    if new_w != width:
        img = _resize_axis(img, new_w, 1, interpolation)
    if new_h != height:
        img = _resize_axis(img, new_h, 0, interpolation)
    top, left = crop_offset(new_h, img_size), crop_offset(new_w, img_size)
    out = np.zeros((img_size, img_size, 3), np.uint8)
    ys = slice(max(top, 0), min(top + img_size, new_h))
    xs = slice(max(left, 0), min(left + img_size, new_w))
    out[ys.start - top:ys.stop - top, xs.start - left:xs.stop - left] = img[ys, xs]
    return out


def load_rgb(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), np.uint8)


def model_input(pixels: np.ndarray, pre: dict, quantization=None) -> np.ndarray:
    """(S, S, 3) uint8 pixels -> the model's input tensor (batch 1), per preprocessing.json's
    model_input: range, layout, dtype; a quantised input uses ``quantization`` (scale,
    zero point) as the runtime reports it, else the one preprocessing.json records."""
    mi = pre["model_input"]
    x = pixels.astype(np.float32)
    if mi["range"] == "normalized":
        mean = np.asarray(pre["mean"], np.float32)
        std = np.asarray(pre["std"], np.float32)
        x = (x / np.float32(255.0) - mean) / std
    elif mi["range"] == "unit":
        x = x / np.float32(255.0)
    if mi["layout"] == "NCHW":
        x = x.transpose(2, 0, 1)
    x = np.ascontiguousarray(x[None])
    if mi["dtype"] in ("uint8", "int8"):
        scale, zero_point = quantization or mi.get("quantization") or (1.0, 0)
        lo, hi = (0, 255) if mi["dtype"] == "uint8" else (-128, 127)
        return np.clip(np.rint(x / np.float32(scale)) + zero_point, lo, hi).astype(mi["dtype"])
    return x.astype(mi["dtype"])
