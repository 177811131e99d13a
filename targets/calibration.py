"""Calibration images for static int8 quantization, shared by every target that
calibrates (TFLite full-integer, ONNX QLinear/QDQ).

Source: a folder the user names (ImageFolder or flat); for the digits model only, the
embedded digits' training split by default (its own data); random pixels only when asked
for explicitly (``"random"``), always with ``RANDOM_CALIBRATION_WARNING`` in the
artifact's spec. Any other model without a source is refused: digit scans would give an
ImageNet model wrong activation ranges without a word.

A folder is split: about a fifth of its images (stratified by class, chosen by content
digest, so the same folder always splits the same way) is held out of calibration, and
the record carries the digests of the images that calibrated, so ``check`` can judge on
images the quantizer never saw, whichever folder it is given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.machine import cpu_flags
from evit_export.core.preprocess import image_to_pixels, list_images
from evit_export.core.spec import ModelSpec
from evit_export.data import default_calibration_images, is_digits_model

DEFAULT_CALIBRATION_SIZE = 200
# Below this many images, activation ranges (and the held-out judgement) rest on too few
# samples to trust: the export warns. onnxruntime and TensorFlow both suggest a few hundred.
MIN_TRUSTED_CALIBRATION = 100
HELDOUT_FRACTION = 0.2  # of a single calibration folder, held out for judging the export
MAX_HELDOUT = 200
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


def image_digest(path: Path) -> str:
    """Short content digest of an image file: how a calibration image is recognised
    again in any folder, without recording a path."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def split_folder(root: Path) -> tuple[list[tuple[Path, str | None, str]], list[tuple[Path, str | None, str]]]:
    """(calibration candidates, held out) as (file, class, digest): per class, the
    files whose digests sort first are held out (HELDOUT_FRACTION, at most MAX_HELDOUT
    in all); a folder of a single image is not split. Candidates come back interleaved
    across classes, so taking the first N calibrates on every class."""

    by_class: dict = {}
    for path, cls in list_images(Path(root)):
        by_class.setdefault(cls, []).append((path, cls, image_digest(path)))
    total = sum(len(v) for v in by_class.values())
    share = min(HELDOUT_FRACTION, MAX_HELDOUT / total) if total > 1 else 0.0
    keep, held = [], []
    for items in by_class.values():
        items.sort(key=lambda item: item[2])
        n_held = min(len(items) - 1, round(share * len(items))) if share else 0
        held += items[:n_held]
        keep.append(items[n_held:])
    interleaved = [item for group in _zip_longest(keep) for item in group]
    return interleaved, held


def _zip_longest(groups: list[list]) -> list[list]:
    longest = max((len(g) for g in groups), default=0)
    return [[g[i] for g in groups if i < len(g)] for i in range(longest)]


def _folder_pixels(spec: ModelSpec, root: Path, size: int) -> tuple[np.ndarray, str, list[str], int]:
    """(pixels, description, digests used, held-out count) from a calibration folder."""
    from PIL import Image, UnidentifiedImageError


    candidates, held = split_folder(root)
    pixels, digests, skipped = [], [], 0
    for path, _, digest in candidates:
        if len(pixels) >= size:
            break
        try:
            with Image.open(path) as im:
                pixels.append(image_to_pixels(im, spec))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            skipped += 1
            continue
        digests.append(digest)
    if not pixels:
        raise UserError(f"no readable images in {root} ({skipped} files skipped): give a folder of .jpg/.png "
                        "images")
    # The folder's name only: the record ships inside artifacts and packages.
    desc = (f"{len(pixels)} images from {root.name}/" + (f" ({skipped} unreadable skipped)" if skipped else "")
            + (f"; {len(held)} more held out for the check" if held else ""))
    return np.stack(pixels).astype(np.float32), desc, digests, len(held)


def calibration_pixels(spec: ModelSpec, source: str | Path | None, size: int) -> tuple[np.ndarray, str, bool]:
    """(pixels RGB 0..255 NCHW float32, description, is_random) for int8 calibration."""
    pixels, desc, is_random, _ = _calibration_source(spec, source, size)
    return pixels, desc, is_random


def _calibration_source(spec: ModelSpec, source, size: int) -> tuple[np.ndarray, str, bool, dict]:
    """``calibration_pixels`` plus what the record adds for a folder (digests, held out)."""
    if size < 1:
        raise UserError(f"calibration_size={size} must be at least 1")
    if _is_random(source):
        return _random_pixels(spec, size), f"{size} random images", True, {}
    if source is not None:
        check_calibration_source(source, quantized=True)
        pixels, desc, digests, held = _folder_pixels(spec, Path(source), size)
        return pixels, desc, False, {"digests": digests, "heldout": held}

    if not is_digits_model(spec):
        raise UserError(f"int8 calibration of EfficientViT-{spec.variant.upper()} ({spec.num_classes} classes) needs "
                        "images of its own domain: pass calibration_data=DIR, or calibration_data='random' "
                        "(the artifact then carries a warning)")
    pixels = np.asarray(default_calibration_images(spec, size), np.float32)
    return pixels, f"{len(pixels)} images of the embedded digits dataset (training split)", False, {}


def small_calibration_warning(count: int) -> str:
    return (f"int8 calibrated on only {count} image{'s' if count != 1 else ''}: activation ranges from so few are "
            f"not to be trusted; give at least {MIN_TRUSTED_CALIBRATION} images of the model's own domain "
            f"(a few hundred is better), plus some to hold out for the check")


def calibration_record(spec: ModelSpec, source, size: int) -> tuple[np.ndarray, dict]:
    """(pixels, sidecar record) for int8 calibration. A random source adds its warning
    to ``spec.notes`` and the record; a small set adds ``small_calibration_warning``
    (the record's ``warnings``). A folder's record also carries ``digests`` (images
    that calibrated, left out when judging) and ``heldout`` (how many were kept back)."""
    pixels, desc, is_random, extra = _calibration_source(spec, source, size)
    record = {"source": desc, "count": len(pixels), "random": bool(is_random), **extra}
    warnings = []
    if is_random:
        spec.notes.append(RANDOM_CALIBRATION_WARNING)
        record["warning"] = RANDOM_CALIBRATION_WARNING
    elif len(pixels) < MIN_TRUSTED_CALIBRATION:
        warnings.append(small_calibration_warning(len(pixels)))
    if extra.get("heldout") == 0:
        warnings.append("every image of the calibration folder calibrated (too few to split): the check needs "
                        "other images of the same classes (check ARTIFACT --images DIR)")
    if warnings:
        record["warnings"] = warnings
    return pixels, record


# --------------------------------------------------------------------------- int8 quality and keep-float

# What an int8 export must reach on held-out images (the check's int8 tolerance, and
# what ``keep_float="auto"`` searches for).
INT8_MIN_COSINE_MEAN = 0.99
INT8_MIN_SQNR_DB = 20.0
INT8_MIN_TOP1 = 0.98
INT8_MIN_TOP5 = 0.85  # set overlap; below the top class, near-equal logits trade places
AUTO_HELDOUT = 100  # held-out images keep_float="auto" judges each candidate on
KEEP_FLOAT_AUTO, KEEP_FLOAT_NONE = "auto", "none"
# Names every int8 target understands in keep_float besides its blocks: the attention
# core (q·kᵀ, softmax, attn·v) of every attention block.
ATTENTION = "attention"


def parse_keep_float(value) -> tuple[str, ...]:
    """``"auto"`` / ``"none"`` / ``"a,b"`` / a sequence -> a tuple of lower-case names."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(str(v).strip().lower() for v in items if str(v).strip()))
    if KEEP_FLOAT_NONE in names and len(names) > 1:
        raise UserError(f"keep_float={value}: 'none' cannot be combined with other names")
    return () if names == (KEEP_FLOAT_NONE,) else names


# keep_float=auto starts from these blocks for speed, not quality: the first conv reads
# the 3-channel image, a 27-long reduction too short for int8 dot-product kernels to pay
# for quantizing the image. Measured on a VNNI Xeon, M0 at 224 px, 1 thread: the conv is
# 2.4x slower in int8 than float in onnxruntime, and the whole model runs 10% faster in
# onnxruntime and 30% faster in LiteRT with it float (benchmarks/bench_int8.py --speed).
SLOW_IN_INT8 = ("patch_embed.0",)


def keep_float_for_speed(names: tuple[str, ...], blocks: list[str], base: list[str]) -> list[str]:
    """The blocks ``keep_float=auto`` keeps in float because they run faster so."""
    if KEEP_FLOAT_AUTO not in names:
        return []
    return [b for b in SLOW_IN_INT8 if b in blocks and b not in base]


def kept_float_notes(record: dict, keep_float: str, runtime: str) -> list[str]:
    """The spec notes that say which blocks an int8 artifact keeps in float, and why."""
    fast = record.get("kept_float_for_speed") or []
    for_quality = [k for k in record.get("kept_float", []) if k not in fast and k != ATTENTION]
    notes = []
    if fast:
        notes.append(f"int8 with {', '.join(fast)} kept in float because {runtime} runs it faster in float "
                     "(a 3-channel input is too short a reduction for int8 kernels)")
    if for_quality:
        notes.append(f"int8 with {', '.join(for_quality)} kept in float (keep_float={keep_float}), so that "
                     "held-out images stay within the int8 tolerance")
    return notes


def resolve_keep_float(names: tuple[str, ...], blocks: list[str]) -> list[str]:
    """The blocks ``names`` select (a block, or a prefix such as ``stages.2``); ATTENTION
    and ``auto`` are left to the caller. Unknown names are a UserError listing the blocks."""
    chosen = []
    for name in names:
        if name in (KEEP_FLOAT_AUTO, ATTENTION):
            continue
        hits = [b for b in blocks if b == name or b.startswith(name + ".")]
        if not hits:
            raise UserError(f"keep_float: no block named {name!r}: choose from {', '.join(blocks)}, "
                            f"{ATTENTION}, or auto")
        chosen += [b for b in hits if b not in chosen]
    return chosen


def int8_quality(ref: np.ndarray, got: np.ndarray) -> dict:
    """Logits cosine (mean, min), SQNR (dB, all images together) and top-1 / top-5
    agreement of ``got`` against ``ref``: the figures int8 is judged by."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
    cos = np.where(norms > 0, (ref * got).sum(1) / np.maximum(norms, 1e-30), 0.0)
    noise = float(((got - ref) ** 2).sum())
    k = min(5, ref.shape[1])
    top5 = np.mean([len(set(a) & set(b)) / k for a, b in
                    zip(np.argsort(-ref, 1)[:, :k], np.argsort(-got, 1)[:, :k])])
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
            "sqnr_db": float(10 * np.log10(max(float((ref ** 2).sum()), 1e-300) / noise)) if noise > 0 else None,
            "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "top5_agreement": float(top5),
            "n": len(ref)}


def meets_int8_goal(quality: dict, min_cosine: float = INT8_MIN_COSINE_MEAN) -> bool:
    sqnr = quality.get("sqnr_db")
    return (quality["cosine_mean"] >= min_cosine and (sqnr is None or sqnr >= INT8_MIN_SQNR_DB)
            and quality["top1_agreement"] >= INT8_MIN_TOP1 and quality["top5_agreement"] >= INT8_MIN_TOP5)


def search_keep_float(blocks: list[str], evaluate, base: list[str], min_cosine: float) -> dict:
    """``keep_float="auto"``: the fewest blocks, counted back from the output (where int8
    error has had the whole network to grow and the classifier amplifies it), kept in
    float on top of ``base`` so that ``evaluate(kept) -> int8_quality`` meets the goal.
    Binary search over how many trailing blocks, assuming more float is never worse.
    Returns {"kept", "quality", "tried": [(kept count, quality)], "met"}."""
    tried = []

    def judge(k: int) -> dict:
        kept = base + [b for b in blocks[len(blocks) - k:] if b not in base] if k else list(base)
        quality = evaluate(kept)
        tried.append({"trailing_blocks": k, "kept": kept, **quality})
        return {"kept": kept, "quality": quality}

    best = judge(0)
    if meets_int8_goal(best["quality"], min_cosine):
        return {**best, "tried": tried, "met": True}
    lo, hi, found = 1, len(blocks), None
    while lo <= hi:
        mid = (lo + hi) // 2
        result = judge(mid)
        if meets_int8_goal(result["quality"], min_cosine):
            found, hi = result, mid - 1
        else:
            lo = mid + 1
    if found is None:  # even all-float blocks miss it: keep what came closest
        found = max((t for t in tried), key=lambda t: t["cosine_mean"])
        found = {"kept": found["kept"], "quality": {k: found[k] for k in best["quality"]}}
        return {**found, "tried": tried, "met": False}
    return {**found, "tried": tried, "met": True}


def heldout_pixels(spec: ModelSpec, source, limit: int = AUTO_HELDOUT) -> np.ndarray | None:
    """Up to ``limit`` images held out of calibration from ``source`` (the folder's held-out
    split, or the digits' validation split for the default source); None for random data
    or a folder too small to split."""
    if _is_random(source):
        return None
    if source is None:
        from evit_export.data import heldout_images, is_digits_model

        return np.asarray(heldout_images(spec, limit)[0], np.float32) if is_digits_model(spec) else None
    from PIL import Image, UnidentifiedImageError


    _, held = split_folder(Path(source))
    pixels = []
    for path, _, _ in sorted(held, key=lambda item: item[2])[:limit]:
        try:
            with Image.open(path) as im:
                pixels.append(image_to_pixels(im, spec))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    return np.stack(pixels).astype(np.float32) if pixels else None


def cpu_int8_weight_bits() -> tuple[int, str]:
    """(weight bits, why) for x86 u8·s8 int8 kernels on THIS machine: 8 where the CPU
    has VNNI/AMX (int32 dot products) or is not x86 (Arm's SDOT does not saturate);
    7 on x86 without them, where the u8·s8 multiply-add (vpmaddubsw) saturates 16-bit
    sums of two 8-bit products and 8-bit weights wreck accuracy (measured: logits SQNR
    22 dB with 7 bits, 4 dB with 8 on an AVX2-only CPU)."""
    import platform


    flags = set(cpu_flags())
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return 8, f"{platform.machine()} CPU (no u8·s8 saturation)"
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni", "avxvnni"})
    if vnni:
        return 8, f"this CPU has {', '.join(vnni)}"
    return 7, "this x86 CPU has no VNNI (8-bit weights would saturate u8·s8 sums)"


def tensor_error(reference: np.ndarray, quantized: np.ndarray) -> dict:
    """SQNR (dB; None when exact) and cosine of one intermediate tensor against its float
    counterpart, over every image and element together (the per-layer report's figures)."""
    ref = np.asarray(reference, np.float64).ravel()
    got = np.asarray(quantized, np.float64).ravel()
    noise = float(((got - ref) ** 2).sum())
    norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
    return {"sqnr_db": float(10 * np.log10(max(float((ref ** 2).sum()), 1e-300) / noise)) if noise > 0 else None,
            "cosine": float((ref * got).sum() / norms) if norms > 0 else 0.0}
