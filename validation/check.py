"""``check``: compare any artifact against its PyTorch reference (one code path
for every target).

Errors name the Python parameters (``checkpoint=``); the command line shows them as
its own flags (``--checkpoint``), see ``evit_export/cli/__init__.py``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.preprocess import image_to_pixels, list_images, load_images, seeded_pixels
from evit_export.data import is_digits_model
from evit_export.targets import target_for
from evit_export.targets.base import read_sidecar
from evit_export.targets.calibration import image_digest
from evit_export.validation.equivalence import check_equivalence, EquivalenceReport, tolerance_for


HELDOUT_COUNT = 200  # held-out digits an int8 digits model is judged on by default


@dataclass(frozen=True)
class ToleranceOverrides:
    """Overrides of the per-precision default tolerances; None keeps the default
    (fp32: max abs ≤ 1e-4·max(1, max|reference logit|); fp16: cosine ≥ 0.999 and top-1
    agreement ≥ 99 %; int8: mean cosine ≥ 0.99, SQNR ≥ 20 dB, top-1 agreement ≥ 98 % and
    top-5 agreement ≥ 85 %)."""

    max_abs_scale: float | None = None  # max abs error ≤ this · max(1, max |reference logit|)
    min_cosine: float | None = None  # per-image cosine similarity of the logits, -1..1
    min_top1: float | None = None  # top-1 agreement with PyTorch, a fraction 0..1
    min_cosine_mean: float | None = None  # mean over images of the logits' cosine, -1..1
    min_top5: float | None = None  # top-5 agreement (mean overlap of the top-5 sets), a fraction 0..1
    min_sqnr_db: float | None = None  # output SQNR in dB over all images together

    def __post_init__(self):
        if self.min_cosine_mean is not None and not -1 <= self.min_cosine_mean <= 1:
            raise UserError(f"min_cosine_mean={self.min_cosine_mean} is a cosine: give a value in -1..1, e.g. 0.99")
        if self.min_top5 is not None and not 0 <= self.min_top5 <= 1:
            raise UserError(f"min_top5={self.min_top5} is a fraction: give a value in 0..1, e.g. 0.9 for 90%")
        if self.max_abs_scale is not None and not self.max_abs_scale > 0:
            raise UserError(f"max_abs_scale={self.max_abs_scale} must be positive, e.g. 1e-4")
        if self.min_cosine is not None and not -1 <= self.min_cosine <= 1:
            raise UserError(f"min_cosine={self.min_cosine} is a cosine: give a value in -1..1, e.g. 0.999")
        if self.min_top1 is not None and not 0 <= self.min_top1 <= 1:
            raise UserError(f"min_top1={self.min_top1} is a fraction: give a value in 0..1, e.g. 0.99 for 99%")


def check_artifact(artifact: str | Path, *, checkpoint: str | Path | None = None, variant: str | None = None,
                   images: str | Path | None = None, n: int = 32, seed: int = 0,
                   tolerances: ToleranceOverrides | None = None, localize: bool = False,
                   runner_options=None, calibration: dict | None = None) -> EquivalenceReport:
    """Numerical equivalence of ``artifact`` against the PyTorch model it was exported from.

    The artifact's embedded spec says what to rebuild (variant, classes, preprocessing,
    where the weights came from); ``checkpoint`` and ``variant`` are needed only for an
    artifact without one, or to compare against other weights. Inputs: ``n`` seeded
    random images plus the images in the folder ``images``; int8 artifacts are judged on
    real images only (``images``, or for a digits model the held-out digits).
    ``localize``: on failure, name the first layer whose output leaves tolerance.
    ``runner_options``: a ``evit_export.targets.RunnerOptions`` (threads, CoreML native).
    ``calibration``: the export's calibration record (``artifact.info["calibration"]``),
    for an artifact whose sidecar is not written yet; images it lists are left out.
    """
    from evit_export.models.reference import reference_model
    from evit_export.targets.torch_runner import TorchRunner

    path, target, spec = _artifact_and_spec(artifact, checkpoint, variant)
    deployed = reference_model(spec, checkpoint, variant, near=(Path(path).parent,))
    spec = spec or deployed.spec
    reference = TorchRunner(deployed, spec)
    family = target.precision_family(spec)
    pixels, described = comparison_inputs(spec, family, images=images, n=n, seed=seed,
                                          calibration=(calibration if calibration is not None else calibration_of(path))
                                          if family == "int8" else None)
    tol = tolerance_for(family, **asdict(tolerances or ToleranceOverrides()))
    with target.open(path, spec=spec, options=runner_options) as runner:
        report = check_equivalence(reference, runner, pixels, spec.precision, tol, artifact=str(path),
                                   inputs=described)
        if family == "int8":
            report.notes += int8_notes(path, described, calibration)
        # A runner may also know its artifact is damaged (e.g. weights differ from
        # the digests sealed in at export): that fails the check too.
        damaged = runner.integrity_failures()
        if damaged:
            report.failures = damaged + report.failures
            report.passed = False
        if localize and not report.passed:
            from evit_export.validation.localize import localize as find_layer

            try:
                report.localization = find_layer(reference, runner, pixels, family).to_dict()
            except NotImplementedError as e:  # the runtime exposes no intermediate tensors
                report.localization = {"unavailable": f"{e}: --localize cannot name the layer for this format"}
    return report


def _artifact_and_spec(artifact, checkpoint, variant):
    """(path, target, embedded spec or None), with one-line errors for what cannot be checked."""
    from evit_export.models import canonical_variant

    path = Path(artifact)
    if not path.exists():
        raise UserError(f"artifact {path} does not exist: check the path")
    target = target_for(path)
    spec = target.read_spec(path)
    if spec is None and (variant is None or checkpoint is None):
        raise UserError(f"{path} carries no evit-export spec: pass variant=m0..m5 and checkpoint= with the "
                        "weights it was exported from")
    if spec is not None and variant is not None and canonical_variant(variant) != spec.variant:
        raise UserError(f"{path} is EfficientViT-{spec.variant.upper()}, not {variant}: leave variant= out")
    return path, target, spec


def real_images_required(spec, family: str) -> bool:
    """Whether judging this artifact needs images from the user: quantised models are
    judged on real images, and the embedded ones fit only the digits model."""

    return family == "int8" and not is_digits_model(spec)


def calibration_of(path) -> dict:
    """The calibration record an export left in the artifact's sidecar ({} when none)."""

    record = ((read_sidecar(Path(path)) or {}).get("info") or {}).get("calibration")
    return record if isinstance(record, dict) else {}


def int8_notes(path, described: str, calibration: dict | None = None) -> list[str]:
    """What a reader of an int8 verdict should know: in-sample judging, a small
    calibration set, weights quantized for a CPU feature this machine lacks."""

    info = (read_sidecar(Path(path)) or {}).get("info") or {}
    record = calibration if calibration is not None else (info.get("calibration") or {})
    notes = list(record.get("warnings") or [])
    if "in-sample" in described:
        notes.append("judged on the images that calibrated it (in-sample): figures are optimistic; give held-out "
                     "images (images=DIR) for an honest verdict")
    notes += list(info.get("int8_notes") or [])
    return notes


def comparison_inputs(spec, family: str, *, images=None, n: int = 32, seed: int = 0,
                      calibration: dict | None = None) -> tuple[np.ndarray, str]:
    """(pixels, description) an artifact of precision ``family`` is compared on.

    Quantised models are judged on real images only: random noise lies outside the
    calibrated ranges and says nothing about the model users ship. Without ``images``
    that is the embedded digits' validation split (never used for calibration), which
    only fits a digits model; any other int8 model needs ``images``. Images that
    calibrated the model (``calibration["digests"]``, from its export) are left out of
    ``images``: a quantizer is judged on what it never saw.
    """
    if family == "int8":
        if images is not None:
            return _heldout_folder_pixels(images, spec, (calibration or {}).get("digests") or [])
        from evit_export.data import heldout_images

        if real_images_required(spec, family):
            raise UserError(f"an int8 {spec.variant.upper()} with {spec.num_classes} classes is judged on real "
                            "images: pass images=DIR with images of its classes (the embedded digits fit "
                            "only a digits model)")
        pixels, _, described = heldout_images(spec, HELDOUT_COUNT)
        return np.asarray(pixels, np.float32), described + " (int8 is judged on real images; images=DIR for your own)"
    if n < 1 and images is None:
        raise UserError(f"n={n}: need at least one input (a positive n, or images=DIR)")
    parts, described = [], []
    if n > 0:
        parts.append(seeded_pixels(n, spec.img_size, seed))
        described.append(f"{n} seeded random images (seed {seed})")
    if images is not None:
        real, text = _folder_pixels(images, spec)
        parts.append(real)
        described.append(text)
    return np.concatenate(parts), " + ".join(described)


def _heldout_folder_pixels(images, spec, calibrated: list[str]) -> tuple[np.ndarray, str]:
    """The folder's images minus those that calibrated the artifact; all of them (said
    to be in-sample) when nothing else is left."""

    if not calibrated:
        return _folder_pixels(images, spec)
    root = Path(images)
    if not root.is_dir():
        raise UserError(f"image folder {root} does not exist: pass an existing images=DIR")
    seen = set(calibrated)

    files = [path for path, _ in list_images(root)]
    held = [p for p in files if image_digest(p) not in seen]
    left_out = len(files) - len(held)
    if not held:
        real, text = _folder_pixels(images, spec)
        return real, text + " (in-sample: every one of them calibrated the model)"
    real, kept = _read_files(held, spec)
    text = f"{kept} images from {root.name}/ held out from calibration"
    return real, text + (f" ({left_out} that calibrated it left out)" if left_out else "")


def _read_files(files: list[Path], spec) -> tuple[np.ndarray, int]:
    from PIL import Image, UnidentifiedImageError


    pixels = []
    for path in files:
        try:
            with Image.open(path) as im:
                pixels.append(image_to_pixels(im, spec))
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            continue
    if not pixels:
        raise UserError(f"no readable held-out images among {len(files)} files: give a folder of .jpg/.png images")
    return np.stack(pixels).astype(np.float32), len(pixels)


def _folder_pixels(images, spec) -> tuple[np.ndarray, str]:
    real, _, used, skipped = load_images(Path(images), spec)
    text = f"{len(used)} images from {Path(images).name}/" + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
    return real, text
