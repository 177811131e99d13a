"""ImageFolder trees: ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``; with no
``val/`` a seeded, per-class split of ``train/`` (``val_fraction``). ``DIR/<class>/*``
with no ``train/`` is read as ``train/``. Unreadable or non-image files are skipped
and counted, never fatal.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.preprocess import image_to_pixels
from evit_export.core.spec import ModelSpec
from evit_export.data.imageset import ImageSet


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
                       workers: int | None = None, what: str = "data=") -> ImageSet:
    """Read ``split_dir/<class>/*`` with ``spec``'s preprocessing.

    ``classes``: the class list to index by (folder names must be among them);
    default: the sorted folder names. Unreadable files are skipped and counted; a
    class folder left with no readable image is an error.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise UserError(f"{what}{split_dir} does not exist: pass an existing ImageFolder DIR "
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
        raise UserError(f"data={root} does not exist: pass an ImageFolder DIR (DIR/train/<class>/*, "
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
        raise UserError(f"data={root} does not exist: pass a folder of class folders (DIR/<class>/* or "
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
