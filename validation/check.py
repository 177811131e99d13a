"""``check``: compare any artifact against its PyTorch reference (one code path
for every target)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.preprocess import load_images, seeded_pixels

from evit_export.validation.equivalence import EquivalenceReport, check_equivalence, precision_family, tolerance_for

HELDOUT_COUNT = 200


def check_artifact(artifact: str | Path, checkpoint=None, variant: str | None = None,
                   images: str | Path | None = None, n: int = 32, seed: int = 0,
                   max_abs_scale: float | None = None, min_cosine: float | None = None,
                   min_top1: float | None = None, localize: bool = False,
                   threads: int | None = None, runner_options: dict | None = None,
                   extra_pixels: np.ndarray | None = None, extra_description: str = "") -> EquivalenceReport:
    from evit_export.models import canonical_variant
    from evit_export.models.reference import reference_model
    from evit_export.targets import target_for
    from evit_export.targets.torch_runner import TorchRunner

    path = Path(artifact)
    if not path.exists():
        raise UserError(f"artifact {path} does not exist: check the path")
    if n < 1 and extra_pixels is None:
        raise UserError(f"-n {n}: need at least one input")
    target = target_for(path)
    spec = target.read_spec(path)
    if spec is None:
        if variant is None:
            raise UserError(f"{path} carries no evit-export spec: pass --variant m0..m5 and --checkpoint "
                            "with the weights it was exported from")
        if checkpoint is None:
            raise UserError(f"{path} carries no evit-export spec: pass --checkpoint with the weights it "
                            "was exported from")
    elif variant is not None and canonical_variant(variant) != spec.variant:
        raise UserError(f"{path} is EfficientViT-{spec.variant.upper()}, not {variant}: drop --variant")
    deployed = reference_model(spec, checkpoint, variant)
    ref_spec = deployed.spec
    if spec is None:
        spec = ref_spec
    reference = TorchRunner(deployed, spec)
    quantized = precision_family(spec.precision) == "int8"
    if quantized and images is not None:
        n = 0  # the user's real images only
    if quantized and images is None and extra_pixels is None:
        # Quantised models are judged on real images: random noise lies outside the
        # calibrated ranges and says nothing about the model users ship. Default: the
        # embedded digits' validation split (never used for calibration).
        from evit_export.data import heldout_images

        extra_pixels, _, extra_description = heldout_images(spec, HELDOUT_COUNT)
        extra_description += " (int8 is judged on real images; --images DIR for your own)"
        n = 0
    pixels = seeded_pixels(n, spec.img_size, seed)
    described = f"{n} seeded random images (seed {seed})"
    if extra_pixels is not None:  # caller-supplied pixels, e.g. held-out real images
        pixels = np.concatenate([pixels, np.asarray(extra_pixels, np.float32)]) if n else \
            np.asarray(extra_pixels, np.float32)
        extra = extra_description or f"{len(extra_pixels)} given images"
        described = f"{described} + {extra}" if n else extra
    if images is not None:
        real, _, used, skipped = load_images(Path(images), spec)
        pixels = np.concatenate([pixels, real]) if len(pixels) else real
        mine = f"{len(used)} images from {images}" + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
        described = f"{described} + {mine}" if n or extra_pixels is not None else mine
    tol = tolerance_for(spec.precision, max_abs_scale=max_abs_scale, min_cosine=min_cosine,
                        min_top1=min_top1)
    with target.open(path, spec=spec, threads=threads, **(runner_options or {})) as runner:
        report = check_equivalence(reference, runner, pixels, spec.precision, tol, artifact=str(path),
                                   inputs=described)
        # A runner may also know its artifact is damaged (e.g. weights differ from
        # the digests sealed in at export): that fails the check too.
        damaged = list(getattr(runner, "integrity_failures", None) or [])
        if damaged:
            report.failures = damaged + report.failures
            report.passed = False
        if localize and not report.passed:
            from evit_export.validation.localize import localize as find_layer

            report.localization = find_layer(reference, runner, pixels, spec.precision).to_dict()
    return report
