"""Datasets for training, evaluation, parity and calibration.

Every image goes through ``evit_export.core.preprocess.image_to_pixels`` (resize the
shorter side to img_size / crop_pct, centre crop) exactly once, with the spec the
model is trained or checked with, so training evaluation, parity and every Runner
see the same pixels. Images are held as uint8 (N, 3, S, S): ``image_to_pixels``
yields integer values 0..255, so this is lossless.

Two sources:

* an ImageFolder directory: ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``; with
  no ``val/`` a seeded, per-class split of ``train/`` (``val_fraction``). ``DIR/<class>/*``
  with no ``train/`` is read as ``train/``. Unreadable or non-image files are skipped
  and counted, never fatal.
* the embedded default, scikit-learn's handwritten digits (1,797 real 8×8 scans,
  0..16 ink levels, bright ink on dark), no download. Each scan becomes an 8×8
  greyscale PIL image (level × 255/16, rounded) and is rendered to RGB at the
  training resolution by the shared preprocessing. Fixed split, independent of any
  library's shuffling: within each class, in dataset order, every 5th image
  (positions 4, 9, 14, … counting from 0) is validation, the rest training →
  1,442 train / 355 val.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.preprocess import IMAGE_SUFFIXES, image_to_pixels
from evit_export.core.spec import ModelSpec

DIGITS_LABELS = [str(i) for i in range(10)]
DIGITS_VAL_EVERY = 5  # every 5th image of each class is validation


@dataclass
class ImageSet:
    """Preprocessed images of one split: uint8 pixels (N,3,S,S), int64 targets."""

    pixels: np.ndarray
    targets: np.ndarray
    classes: list[str]
    source: str
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.targets)

    def float_pixels(self) -> np.ndarray:
        """The Runner input convention: float32 RGB 0..255."""
        return self.pixels.astype(np.float32)

    def subset(self, n: int | None) -> "ImageSet":
        """The first ``n`` images of a stratified (round-robin over classes) order."""
        if n is None or n >= len(self):
            return self
        order = _round_robin(self.targets)[:n]
        order = np.sort(order)
        return ImageSet(self.pixels[order], self.targets[order], self.classes, self.source,
                        [self.files[i] for i in order] if self.files else [], self.skipped)


def _round_robin(targets: np.ndarray) -> np.ndarray:
    per_class = [list(np.flatnonzero(targets == c)) for c in np.unique(targets)]
    out = []
    while any(per_class):
        for lst in per_class:
            if lst:
                out.append(lst.pop(0))
    return np.asarray(out, dtype=np.int64)


# ---------------------------------------------------------------- digits (default)

@functools.lru_cache(maxsize=1)
def _digits_raw():
    """(images (1797, 8, 8) float 0..16, targets) — the file ``load_digits`` reads, read
    directly (importing scikit-learn costs ~3 s here); ``load_digits`` as the fallback."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise UserError("scikit-learn is not installed (it ships the default digits dataset): "
                        "pip install scikit-learn, or pass --data DIR")
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

    from evit_export.core.preprocess import batch_to_pixels

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


# ---------------------------------------------------------------- ImageFolder

def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files(class_dir: Path) -> list[Path]:
    return sorted(f for f in class_dir.rglob("*") if f.is_file() and not f.name.startswith("."))


def _decode(path: Path, spec: ModelSpec):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return image_to_pixels(im, spec).astype(np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError):
        return None


def read_class_folders(split_dir: Path, spec: ModelSpec, classes: list[str] | None = None,
                       workers: int | None = None, what: str = "--data") -> ImageSet:
    """Read ``split_dir/<class>/*`` with ``spec``'s preprocessing.

    ``classes``: the class list to index by (folder names must be among them);
    default: the sorted folder names. Unreadable files are skipped and counted; a
    class folder left with no readable image is an error.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"{what} folder {split_dir} does not exist: pass an existing ImageFolder DIR "
                        "(DIR/train/<class>/*, DIR/val/<class>/*)")
    dirs = _class_dirs(split_dir)
    if not dirs:
        raise UserError(f"{split_dir} has no class folders: lay images out as {split_dir}/<class>/*.jpg")
    names = [d.name for d in dirs]
    if classes is None:
        classes = names
    else:
        extra = [n for n in names if n not in classes]
        if extra:
            raise UserError(f"{split_dir} has class folders {', '.join(extra[:3])} that the model/train split "
                            f"does not have ({len(classes)} classes: {', '.join(classes[:5])}"
                            f"{', …' if len(classes) > 5 else ''}): make the class folders match")
    index = {c: i for i, c in enumerate(classes)}
    jobs: list[tuple[Path, int]] = []
    for d in dirs:
        files = _files(d)
        if not files:
            raise UserError(f"class folder {d} is empty: add images or remove the folder")
        jobs += [(f, index[d.name]) for f in files]
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        decoded = list(pool.map(lambda job: _decode(job[0], spec), jobs))
    pixels, targets, used, skipped = [], [], [], []
    for (f, t), px in zip(jobs, decoded):
        if px is None:
            skipped.append(str(f))
        else:
            pixels.append(px)
            targets.append(t)
            used.append(str(f))
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=len(classes))
    for d in dirs:
        if counts[index[d.name]] == 0:
            raise UserError(f"class folder {d} has no readable image ({sum(1 for s in skipped if Path(s).is_relative_to(d))} "
                            "files skipped): add .jpg/.png images or remove the folder")
    return ImageSet(np.stack(pixels), np.asarray(targets, dtype=np.int64), list(classes), str(split_dir),
                    used, skipped)


def seeded_split(data: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """Per-class seeded split; a class with one image stays in train."""
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(data), dtype=bool)
    for c in range(len(data.classes)):
        idx = np.flatnonzero(data.targets == c)
        k = int(round(val_fraction * len(idx)))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        val_mask[rng.permutation(idx)[:k]] = True

    def take(mask, name):
        sel = np.flatnonzero(mask)
        return ImageSet(data.pixels[sel], data.targets[sel], data.classes, f"{data.source} ({name})",
                        [data.files[i] for i in sel], data.skipped if name == "train split" else [])

    return take(~val_mask, "train split"), take(val_mask, f"seeded {val_fraction:.0%} val split, seed {seed}")


def load_imagefolder(root: str | os.PathLike, spec: ModelSpec, val_fraction: float = 0.2, seed: int = 0,
                     workers: int | None = None) -> tuple[ImageSet, ImageSet]:
    """(train, val) of an ImageFolder DIR, preprocessed with ``spec``."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data {root} does not exist: pass an ImageFolder DIR (DIR/train/<class>/*, "
                        "optional DIR/val/<class>/*)")
    train_dir = root / "train" if (root / "train").is_dir() else root
    train = read_class_folders(train_dir, spec, workers=workers)
    if len(train.classes) < 2:
        raise UserError(f"{train_dir} has {len(train.classes)} class folder: a classifier needs at least 2 "
                        "classes (one folder per class)")
    val_dir = root / "val" if (root / "val").is_dir() else (root / "valid" if (root / "valid").is_dir() else None)
    if val_dir is None:
        return seeded_split(train, val_fraction, seed)
    val_names = [d.name for d in _class_dirs(val_dir)]
    if sorted(val_names) != sorted(train.classes):
        only_train = sorted(set(train.classes) - set(val_names))
        only_val = sorted(set(val_names) - set(train.classes))
        detail = "; ".join(p for p in (f"only in train: {', '.join(only_train[:3])}" if only_train else "",
                                       f"only in val: {', '.join(only_val[:3])}" if only_val else "") if p)
        raise UserError(f"train/val class folders differ ({detail}): give {val_dir} the same class folders "
                        f"as {train_dir}")
    val = read_class_folders(val_dir, spec, classes=train.classes, workers=workers)
    return train, val


def load_eval_folder(root: str | os.PathLike, spec: ModelSpec, workers: int | None = None) -> ImageSet:
    """Labelled images to evaluate a model with classes ``spec.labels``: ``DIR/val``
    when present, else ``DIR/<class>/*``. Class folders are matched to labels by name;
    when the labels are the default ``class_i`` names, sorted folder order is used."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"--data {root} does not exist: pass a folder of class folders (DIR/<class>/* or "
                        "DIR/val/<class>/*)")
    split = root / "val" if (root / "val").is_dir() else root
    dirs = _class_dirs(split) if split.is_dir() else []
    if not dirs:
        raise UserError(f"{split} has no class folders: lay images out as {split}/<class>/*.jpg")
    names = [d.name for d in dirs]
    labels = list(spec.labels)
    if all(n in labels for n in names):
        classes = labels
    elif labels == [f"class_{i}" for i in range(len(labels))] and len(names) <= len(labels):
        classes = names + labels[len(names):]
    else:
        missing = [n for n in names if n not in labels]
        raise UserError(f"class folders {', '.join(missing[:3])} in {split} are not labels of the model "
                        f"({', '.join(labels[:5])}{', …' if len(labels) > 5 else ''}): name the folders "
                        "after the model's labels")
    return read_class_folders(split, spec, classes=classes, workers=workers)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES
