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

from evit_export.validation.equivalence import precision_family

TOLERANCE_POINTS = {"fp32": 0.2, "fp16": 0.2, "int8": 1.5}


def tolerance_points(precision: str) -> float:
    return TOLERANCE_POINTS[precision_family(precision)]


def topk_hits(logits: np.ndarray, targets: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == targets[:, None]).any(axis=1)


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
    top1 = topk_hits(logits, targets, 1)
    top5 = topk_hits(logits, targets, 5)
    per_class = {classes[c]: 100.0 * float(top1[targets == c].mean())
                 for c in range(len(classes)) if (targets == c).any()}
    return RunnerAccuracy(name, runtime, precision, 100.0 * float(top1.mean()), 100.0 * float(top5.mean()),
                          per_class)


def load_labelled(data, spec):
    from evit_export.data import DIGITS_LABELS, load_digits_split, load_eval_folder

    if data is None:
        if list(spec.labels) != DIGITS_LABELS:
            raise UserError("no --data given and the model is not a digits model: pass --data DIR "
                            "(DIR/<class>/* or DIR/val/<class>/*)")
        return load_digits_split("val", spec)
    return load_eval_folder(Path(data), spec)


def check_parity(artifacts: list[str | Path], data: str | Path | None = None, checkpoint=None,
                 threads: int | None = None, limit: int | None = None) -> ParityReport:
    from evit_export.models.reference import reference_model
    from evit_export.targets import open_artifact
    from evit_export.targets.torch_runner import TorchRunner

    if threads:
        import torch

        torch.set_num_threads(threads)
    if not artifacts:
        raise UserError("no artifact given: pass one or more .onnx / .mlpackage / .tflite files")
    opened = []
    for a in artifacts:
        opened.append(open_artifact(a))
    first = opened[0][2]
    for path, _, spec in opened[1:]:
        if list(spec.labels) != list(first.labels):
            raise UserError(f"{path} has other classes than {opened[0][0]}: check artifacts of one model "
                            "per run")

    groups: dict[tuple, list] = {}
    for item in opened:
        s = item[2]
        groups.setdefault((s.img_size, s.crop_pct, s.interpolation), []).append(item)

    rows: list[RunnerAccuracy] = []
    refs: list[RunnerAccuracy] = []
    images = None
    for _, items in groups.items():
        spec = items[0][2]
        images = load_labelled(data, spec).subset(limit)
        pixels = images.float_pixels()
        targets = images.targets
        classes = images.classes
        model = reference_model(spec, checkpoint, folded=False)
        if model.spec.num_classes != spec.num_classes:
            raise UserError(f"--checkpoint has {model.spec.num_classes} classes, the artifact "
                            f"{spec.num_classes}: pass the checkpoint it was exported from")
        ref_logits = TorchRunner(model, model.spec).run(pixels)
        ref = accuracy("pytorch", "pytorch", "fp32", ref_logits, targets, classes)
        ref_top1 = ref_logits.argmax(1)
        refs.append(ref)
        for path, target, aspec in items:
            with target.open(path, spec=aspec, threads=threads) as runner:
                logits = np.asarray(runner.run(pixels), dtype=np.float32)
                runtime = runner.name
            row = accuracy(str(path), runtime, aspec.precision, logits, targets, classes)
            row.agreement = 100.0 * float((logits.argmax(1) == ref_top1).mean())
            row.delta_top1 = row.top1 - ref.top1
            row.delta_top5 = row.top5 - ref.top5
            row.tolerance = tolerance_points(aspec.precision)
            row.passed = abs(row.delta_top1) <= row.tolerance + 1e-9
            row.per_class_delta = {c: row.per_class_top1[c] - ref.per_class_top1[c] for c in row.per_class_top1}
            rows.append(row)
    assert images is not None
    return ParityReport(images.source if data is not None else "scikit-learn digits (val split)",
                        len(images), len(images.skipped), list(images.classes), refs[0], rows, refs)
