"""Accuracy parity: top-1/top-5 of PyTorch and of each artifact on the same labelled
images with the same preprocessing, agreement with PyTorch, accuracy deltas.

Written once against the Runner protocol: artifacts are opened with
``target_for(path).open(path)``, the reference is a ``TorchRunner``. Every image is
preprocessed once (``evit_export.core.preprocess.image_to_pixels`` with the artifact's
spec) and the same pixels go to every runner.

Tolerance on |artifact top-1 − PyTorch top-1|, in accuracy points: fp32 and fp16 0.2,
int8 1.5. The delta is two-sided: an artifact that scores better than its reference
is not equivalent to it either. With few images one flipped prediction can exceed
0.2 points (one image of 355 is 0.28): use at least 500 images for fp16 verdicts.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.metrics import topk_correct
from evit_export.data import DIGITS_LABELS, load_digits_split, load_eval_folder
from evit_export.targets import open_artifact, suffixes_in_words

TOLERANCE_POINTS = {"fp32": 0.2, "fp16": 0.2, "int8": 1.5}


@dataclass
class RunnerAccuracy:
    name: str  # artifact path, or "pytorch"
    runtime: str
    precision: str
    top1: float  # percent
    top5: float
    per_class_top1: dict[str, float]
    agreement: float | None = None  # percent of images with the same top-1 as PyTorch
    delta_top1: float | None = None  # points, artifact - PyTorch
    delta_top5: float | None = None
    tolerance: float | None = None  # points
    passed: bool | None = None
    per_class_delta: dict[str, float] = field(default_factory=dict)


@dataclass
class ParityReport:
    data: str
    images: int
    skipped: int
    classes: list[str]
    reference: RunnerAccuracy
    artifacts: list[RunnerAccuracy]
    references: list[RunnerAccuracy] = field(default_factory=list)  # one per distinct preprocessing

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.artifacts)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def accuracy(name: str, runtime: str, precision: str, logits: np.ndarray, targets: np.ndarray,
             classes: list[str]) -> RunnerAccuracy:
    top1 = topk_correct(logits, targets, 1)
    top5 = topk_correct(logits, targets, 5)
    per_class = {classes[c]: 100.0 * float(top1[targets == c].mean())
                 for c in range(len(classes)) if (targets == c).any()}
    return RunnerAccuracy(name, runtime, precision, 100.0 * float(top1.mean()), 100.0 * float(top5.mean()),
                          per_class)


def load_labelled(data, spec):
    """Labelled images for ``spec``'s preprocessing: the folder ``data``, or for a digits
    model without one, the embedded digits' validation split."""

    if data is None:
        if list(spec.labels) != DIGITS_LABELS:
            raise UserError("no data= given and the model is not a digits model: pass data=DIR "
                            "(DIR/<class>/* or DIR/val/<class>/*)")
        return load_digits_split("val", spec)
    return load_eval_folder(Path(data), spec)


def check_parity(artifacts: list[str | Path], *, data: str | Path | None = None,
                 checkpoint: str | Path | None = None, limit: int | None = None,
                 runner_options=None) -> ParityReport:
    """Top-1/top-5 of PyTorch and of each artifact on the same labelled images.

    ``artifacts``: files of one model (the same classes). ``data``: a labelled folder
    (DIR/<class>/* or DIR/val/<class>/*); digits models default to the embedded
    validation split. ``checkpoint``: compare against these weights instead of the
    ones each artifact records. ``limit``: use only that many images (stratified).
    ``runner_options``: a ``evit_export.targets.RunnerOptions`` (threads) for every runtime.
    """
    opened = _open_artifacts(artifacts)
    threads = getattr(runner_options, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    rows: list[RunnerAccuracy] = []
    refs: list[RunnerAccuracy] = []
    for items in _by_preprocessing(opened):
        if limit is not None and limit < 1:
            raise UserError(f"limit={limit}: use at least 1 image")
        images = load_labelled(data, items[0][2]).subset(limit)
        ref, ref_logits = _reference_accuracy(items[0][2], checkpoint, images, near=(Path(items[0][0]).parent,))
        refs.append(ref)
        rows += [_artifact_accuracy(item, images, ref, ref_logits, runner_options) for item in items]
    return ParityReport(images.source if data is not None else "scikit-learn digits (val split)",
                        len(images), len(images.skipped), list(images.classes), refs[0], rows, refs)


def _open_artifacts(artifacts) -> list[tuple]:
    """(path, target, spec) of each artifact; all must be of one model."""

    if not artifacts:
        raise UserError(f"no artifact given: pass one or more artifact files ({suffixes_in_words()})")
    opened = [open_artifact(a) for a in artifacts]
    first_path, _, first = opened[0]
    for path, _, spec in opened[1:]:
        if list(spec.labels) != list(first.labels):
            raise UserError(f"{path} has other classes than {first_path}: check artifacts of one model per run")
    return opened


def _by_preprocessing(opened: list[tuple]) -> list[list[tuple]]:
    """Artifacts grouped by input size and resize/crop: each group shares one set of pixels."""
    groups: dict[tuple, list] = {}
    for item in opened:
        spec = item[2]
        groups.setdefault((spec.img_size, spec.crop_pct, spec.interpolation), []).append(item)
    return list(groups.values())


def _reference_accuracy(spec, checkpoint, images, near=()) -> tuple[RunnerAccuracy, np.ndarray]:
    from evit_export.models.reference import reference_model
    from evit_export.targets.torch_runner import TorchRunner

    model = reference_model(spec, checkpoint, folded=False, near=near)
    if model.spec.num_classes != spec.num_classes:
        raise UserError(f"checkpoint= has {model.spec.num_classes} classes, the artifact {spec.num_classes}: "
                        "pass the checkpoint it was exported from")
    logits = TorchRunner(model, model.spec).run(images.float_pixels())
    return accuracy("pytorch", "pytorch", "fp32", logits, images.targets, images.classes), logits


def _artifact_accuracy(item, images, ref: RunnerAccuracy, ref_logits: np.ndarray, runner_options) -> RunnerAccuracy:
    path, target, spec = item
    with target.open(path, spec=spec, options=runner_options) as runner:
        logits = np.asarray(runner.run(images.float_pixels()), dtype=np.float32)
        runtime = runner.name
    row = accuracy(str(path), runtime, spec.precision, logits, images.targets, images.classes)
    row.agreement = 100.0 * float((logits.argmax(1) == ref_logits.argmax(1)).mean())
    row.delta_top1 = row.top1 - ref.top1
    row.delta_top5 = row.top5 - ref.top5
    row.tolerance = TOLERANCE_POINTS[target.precision_family(spec)]
    row.passed = abs(row.delta_top1) <= row.tolerance + 1e-9
    row.per_class_delta = {c: row.per_class_top1[c] - ref.per_class_top1[c] for c in row.per_class_top1}
    return row
