"""Preprocessing, defined once: training evaluation, parity and every Runner use it.

Images become ``pixels``: float32 (B, 3, S, S) RGB 0..255 after resize + centre
crop. Normalisation ((x/255 - mean)/std) happens where the artifact expects it.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec



def seeded_pixels(n: int, img_size: int, seed: int = 0) -> np.ndarray:
    """Seeded random images over the model's real input range (integers 0..255)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, img_size, img_size)).astype(np.float32)


def normalize(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    return ((pixels.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)


def to_model_input(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Pixels -> the artifact's input per spec (range, layout; dtype float32/16/uint8)."""
    if spec.input_range == "normalized":
        x = normalize(pixels, spec)
    elif spec.input_range == "unit":
        x = pixels.astype(np.float32) / 255.0
    elif spec.input_range == "pixels":
        x = pixels.astype(np.float32)
    else:
        raise ValueError(f"unknown input_range {spec.input_range!r}")
    if spec.input_layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    if spec.input_dtype == "uint8":
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)
    if spec.input_dtype == "float16":
        return x.astype(np.float16)
    return np.ascontiguousarray(x, dtype=np.float32)


def _interp(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
            "nearest": InterpolationMode.NEAREST}[name]


def resize_short_side(spec: ModelSpec) -> int:
    """The shorter side after the resize step: floor(img_size / crop_pct)."""
    return int(math.floor(spec.img_size / spec.crop_pct))


def _to_rgb(image):
    """RGB as a viewer shows it: EXIF orientation applied (phone photos), 16/32-bit
    grayscale scaled to 8 bits (Pillow's convert clips it to 255), any other mode
    (CMYK, palette, alpha, grayscale) converted by Pillow."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16") or image.mode == "I":
        wide = np.asarray(image, dtype=np.float64)
        scale = 257.0 if image.mode.startswith("I;16") or wide.max() > 255 else 1.0
        image = Image.fromarray(np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def image_to_pixels(image, spec: ModelSpec) -> np.ndarray:
    """PIL image -> (3, S, S) float32 0..255: shorter side to S/crop_pct, centre crop S."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    image = _to_rgb(image)
    size = spec.img_size
    resize_to = resize_short_side(spec)
    t = TF.pil_to_tensor(image)
    t = TF.resize(t, resize_to, interpolation=_interp(spec.interpolation), antialias=True)
    t = TF.center_crop(t, [size, size])
    return t.to(torch.float32).numpy()


def batch_to_pixels(images, spec: ModelSpec):
    """Batched ``image_to_pixels`` for same-sized RGB images already in a uint8 tensor
    (N, 3, H, W): the same resize and centre crop, one call for the whole batch.
    Returns a float32 tensor (N, 3, S, S) 0..255, equal to ``image_to_pixels`` per image."""
    import torch
    from torchvision.transforms.v2 import functional as TF

    size = spec.img_size
    t = TF.resize(images, int(math.floor(size / spec.crop_pct)), interpolation=_interp(spec.interpolation),
                  antialias=True)
    return TF.center_crop(t, [size, size]).to(torch.float32)


def list_images(root: Path) -> list[tuple[Path, str | None]]:
    """(file, class name) pairs: ImageFolder layout (root/<class>/*) or a flat folder."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist: pass an existing --images/--data DIR")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files: list[tuple[Path, str | None]] = []
    if subdirs:
        for d in subdirs:
            files += [(f, d.name) for f in sorted(d.rglob("*")) if f.is_file()]
    files += [(f, None) for f in sorted(root.iterdir()) if f.is_file()]
    return [(f, c) for f, c in files if not f.name.startswith(".")]


def load_images(root: Path, spec: ModelSpec, limit: int | None = None):
    """Read a folder into pixels. Unreadable / non-image files are skipped and counted.

    Returns (pixels (N,3,S,S), class names (list, None where flat), files, skipped).
    """
    from PIL import Image, UnidentifiedImageError

    pixels, classes, used, skipped = [], [], [], []
    for path, cls in list_images(root):
        if limit is not None and len(pixels) >= limit:
            break
        try:
            with Image.open(path) as im:
                pixels.append(image_to_pixels(im, spec))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            skipped.append(path)
            continue
        classes.append(cls)
        used.append(path)
    if not pixels:
        raise UserError(f"no readable images in {root} ({len(skipped)} files skipped): "
                        "give a folder of .jpg/.png images")
    return np.stack(pixels).astype(np.float32), classes, used, skipped
