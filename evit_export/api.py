"""The Python API: one function per CLI command, with the same defaults.

Each function is a thin shell over the layer that does the work (models, targets,
validation, packaging), so the command line and Python behave alike. Heavy runtimes
(torch, onnxruntime, coremltools, TensorFlow) are imported inside the functions:
importing this module, or ``evit_export``, stays cheap.

Errors from bad input are ``evit_export.UserError`` with a one-line message naming
the parameter to fix.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

from evit_export.core.atomic import staged_outputs
from evit_export.core.errors import UserError
from evit_export.core.interrupt import cancellable, Cancelled
from evit_export.packaging.package import build_package
from evit_export.targets import get_target, open_artifact, runner_options_for, RunnerOptions, target_for
from evit_export.validation.check import check_artifact, real_images_required
from evit_export.validation.compare import compare as run_comparison, DEFAULT_BASELINES
from evit_export.validation.latency import reported, require_fit
from evit_export.validation.latency.measure import bench_artifact, bench_in_fresh_process
from evit_export.validation.latency.profiles import resolve_profile
from evit_export.validation.parity import check_parity

if TYPE_CHECKING:  # names for annotations only; importing them here would load torch
    import torch

    from evit_export.targets import Artifact, RunnerOptions, Target, TargetOptions
    from evit_export.validation.check import ToleranceOverrides
    from evit_export.validation.compare import Comparison
    from evit_export.validation.equivalence import EquivalenceReport
    from evit_export.validation.latency.measure import Latency
    from evit_export.validation.latency.simulate import Estimate
    from evit_export.validation.parity import ParityReport

PathLike = Union[str, os.PathLike]


def load_model(variant: str | None = None, checkpoint: PathLike | None = None, *, pretrained: bool = False,
               num_classes: int | None = None, img_size: int | None = None, labels: list[str] | None = None,
               seed: int | None = None) -> torch.nn.Module:
    """EfficientViT ``variant`` (``m0``…``m5``, ``efficientvit_m0``, ``EfficientViT_M0``) in eval mode.

    ``checkpoint``: an official model-zoo or timm ``.pth``, a raw state dict, a project
    ``.safetensors`` (with its ``.json`` sidecar), or an http(s) URL (downloaded once;
    append ``#sha256=<hex>`` to verify it). Weights are never unpickled as code.
    ``pretrained=True`` (no checkpoint): the official ImageNet-1K weights of the
    variant, downloaded once with a progress bar, cached, and read offline afterwards
    (a ``num_classes`` other than 1000 re-initialises the head for fine-tuning).
    ``num_classes`` / ``img_size`` default to what the checkpoint says (1000 / 224
    without one); ``labels`` names the classes. Without a checkpoint the weights are
    seeded realistic random ones (``seed``, default 0): for structure, speed and
    equivalence checks only; the model's ``spec`` records the seed, so every artifact
    exported from it can be checked again later.

    The model carries ``.spec`` (a ``ModelSpec``) and ``.load_notes`` (what loading adapted).
    """
    from evit_export.models.reference import prepare_model

    return prepare_model(variant, checkpoint, num_classes, img_size, seed=seed, labels=labels, pretrained=pretrained)


def fold(model: torch.nn.Module) -> torch.nn.Module:
    """The deploy form of a model from ``load_model``: BatchNorm folded into the convs,
    static shapes, eval mode; it keeps the model's ``spec``. Idempotent."""
    from evit_export.models import fold as fold_model

    return fold_model(model)


def export(model: torch.nn.Module, target: str | Target, options: TargetOptions | None = None, *,
           out: PathLike, check: bool = False, images: PathLike | None = None, n: int = 32,
           runner_options: RunnerOptions | None = None) -> Artifact:
    """Write ``model`` (folded here if it is not yet) as a ``target`` artifact at ``out``.

    ``target``: ``"onnx"``, ``"coreml"``, ``"tflite"`` or a registered ``Target``.
    ``options``: that target's frozen options dataclass (``OnnxOptions``,
    ``CoreMLOptions``, ``TFLiteOptions``; None for its defaults); it validates itself
    when built. The artifact embeds the model's spec; it is written to a temporary path
    and renamed, so a failure leaves nothing half-written.

    ``check=True`` compares the artifact with PyTorch (as ``check`` does: ``n`` seeded
    random inputs plus the folder ``images``; ``runner_options`` for its runtime) before
    it is published: the artifact and its companion files are written and checked in a
    private folder beside ``out`` and renamed into place together afterwards, so Ctrl-C
    during the export or the check leaves ``out`` as it was. An artifact outside
    tolerance is still published, to be diagnosed: its report is
    ``artifact.info["equivalence"]`` (``passed`` False).
    """

    spec = getattr(model, "spec", None)
    if spec is None:
        raise UserError("the model has no spec: build it with evit_export.load_model")
    chosen = get_target(target) if isinstance(target, str) else target
    if not check:
        return chosen.export(fold(model), spec, Path(out), options)
    return _export_checked(chosen, fold(model), spec, Path(out), options, images=images, n=n,
                           runner_options=runner_options)


def _export_checked(target: Target, folded, spec, out: Path, options, *, images, n, runner_options) -> Artifact:
    existed = out.exists()
    step, report = "export", None
    try:
        with cancellable(f"export of {out.name}"), staged_outputs(out) as stage:
            artifact = target.export(folded, spec, stage / out.name, options)
            family = target.precision_family(artifact.spec)
            if images is None and real_images_required(artifact.spec, family):
                artifact.info["check_skipped"] = ("an int8 model is judged on real images of its classes: check "
                                                  "it with images=DIR")
            else:
                step = "equivalence check"
                # the calibration record: the images that calibrated an int8 model are left out of its
                # judgement (the staged artifact's sidecar is not beside it yet)
                report = check_artifact(artifact.path, n=n, images=images, runner_options=runner_options,
                                        calibration=artifact.info.get("calibration"))
    except Cancelled:
        title = target.title or target.name
        raise Cancelled(f"{title} {step} of {out.name}", unchanged(out, existed)) from None
    artifact.path = out
    artifact.info = _published(artifact.info, stage, out.parent)
    if report is not None:
        report.artifact = str(out)
        artifact.info["equivalence"] = report.to_dict()
    return artifact


def _published(value, stage: Path, folder: Path):
    """``value`` with the paths that named files in the staging folder naming them where
    they were published."""
    if isinstance(value, dict):
        return {k: _published(v, stage, folder) for k, v in value.items()}
    if isinstance(value, list):
        return [_published(v, stage, folder) for v in value]
    if isinstance(value, str) and value.startswith(str(stage)):
        return str(folder / value[len(str(stage)):].lstrip("/"))
    return value


def unchanged(dest: Path, existed: bool) -> str:
    """What an interrupted write leaves at ``dest``, for the one-line message."""
    if existed:
        return f"nothing was written: {dest} is the earlier one, unchanged"
    return f"nothing was written ({dest} was not created)"


def check(artifact: PathLike, *, checkpoint: PathLike | None = None, variant: str | None = None,
          images: PathLike | None = None, n: int = 32, seed: int = 0, tolerances: ToleranceOverrides | None = None,
          localize: bool = False, threads: int | None = None,
          runner_options: RunnerOptions | None = None) -> EquivalenceReport:
    """Numerical equivalence of ``artifact`` against the PyTorch model it came from.

    The artifact's embedded spec says what to rebuild; ``checkpoint`` (and ``variant``,
    for a file without a spec) compare against other weights. Inputs: ``n`` seeded
    random images (``seed``) plus the folder ``images``; int8 artifacts are judged on
    real images only. ``tolerances``: a ``ToleranceOverrides`` overriding the per-precision
    defaults. ``localize``: on failure, name the first diverging layer. ``threads``:
    runtime threads; ``runner_options``: the format's own runner options where it has more
    (its ``Target.runner_options_type``, e.g. ``CoreMLRunnerOptions(native=False)`` for the
    MIL interpreter).
    The report has ``passed``, ``failures``, ``max_abs``, ``cosine_min``,
    ``top1_agreement`` … and ``to_dict()``.
    """

    if not Path(artifact).exists():
        raise UserError(f"artifact {artifact} does not exist: check the path")
    options = runner_options or runner_options_for(target_for(artifact), threads=threads)
    if runner_options is not None and threads is not None:
        options = dataclasses.replace(options, threads=threads)
    return check_artifact(artifact, checkpoint=checkpoint, variant=variant, images=images, n=n, seed=seed,
                          tolerances=tolerances, localize=localize, runner_options=options)


def parity(artifacts: Sequence[PathLike], *, data: PathLike | None = None, checkpoint: PathLike | None = None,
           limit: int | None = None, threads: int | None = None) -> ParityReport:
    """Top-1 / top-5 accuracy of PyTorch and of each artifact (of one model) on the same
    labelled images, with the artifacts' agreement with PyTorch and accuracy deltas.

    ``data``: DIR/<class>/* or DIR/val/<class>/* (digits models default to the embedded
    validation split); ``limit``: only that many images, stratified. Tolerance on
    |Δ top-1|: fp32 / fp16 0.2 points, int8 1.5; ``report.passed`` says whether every
    artifact is within it.
    """

    return check_parity(_paths(artifacts), data=data, checkpoint=checkpoint, limit=limit,
                        runner_options=RunnerOptions(threads=threads))


def bench(artifacts: Sequence[PathLike], *, threads: int = 1, iterations: int = 30,
          fresh_process: bool = True) -> list[Latency]:
    """What each artifact costs on this machine's runtime for it, at the artifact's batch
    size: ``load_ms`` (session / interpreter / program creation), ``first_ms`` (the first
    inference), ``p50_ms`` / ``p90_ms`` / ``p99_ms`` / ``min_ms`` over ``iterations`` timed
    runs after a warm-up, images per second, and ``peak_rss_bytes``: the process's resident
    high-water mark above its baseline after the runtime's import, with the runtime's own
    memory plan in ``memory`` where it reports one. Each artifact is measured in a fresh
    process (``fresh_process=False``: in this one, where an earlier model's freed memory
    can hide part of the next one's peak). A runner that only checks numerics (the MIL
    interpreter standing in for CoreML off macOS) is labelled as such in ``kind``."""

    results = []
    for item in _paths(artifacts):
        path, _, _ = open_artifact(item)  # a missing or foreign file: one line, before any process starts
        measure = bench_in_fresh_process if fresh_process else bench_artifact
        results.append(measure(path, threads=threads, iterations=iterations))
    return results


def compare(variants: Sequence[str] = ("m2", "m5"), baselines: Sequence[str] | None = None, *, batch: int = 16,
            threads: int = 1, iterations: int = 10, progress=None) -> Comparison:
    """The paper's CPU comparison on this machine: each EfficientViT ``variant`` (exported by
    this tool) against each timm ``baseline`` (BatchNorm randomised, exported by hand with
    torch.onnx.export + onnxsim), all in onnxruntime at ``batch`` and ``threads`` (the
    paper's protocol: 16 and 1), each model measured in a fresh process by the device
    harness. ``baselines`` default to the paper's ONNX table rows that timm has. The result
    has a row per model (images/s, p50, load time, peak resident memory) and each pair's
    measured throughput ratio beside the paper's published one where there is one.
    ``progress``: called with a line of text as each model starts."""

    # The paper measured onnxruntime: the comparison is the ONNX target's by definition.
    return run_comparison(list(variants), list(baselines or DEFAULT_BASELINES), target="onnx", batch=batch,
                          threads=threads, iterations=iterations, progress=progress)


def simulate(model: PathLike, device: PathLike | Sequence[PathLike], *, img_size: int | None = None,
             batch: int | None = None, checkpoint: PathLike | None = None) -> Estimate | list[Estimate]:
    """Estimated latency of ``model`` on ``device``: always an estimate, never a measurement.

    ``model``: ``"m0"``…``"m5"``, ``"timm:<name>"`` (random weights) or an exported
    artifact (its own size and batch). ``device``: a profile name (``evit-export devices
    list``) or the path of a PROFILE.json, or a list of them (then a list of estimates).
    An artifact is priced only on profiles of its format and precision (the rule
    ``bench`` and ``sweep`` follow): another is a UserError naming those that fit. One
    forward pass is recorded op by op and each op class is priced by the profile; the
    estimate carries a per-class breakdown, the profile's provenance and its validation
    error, and is rounded to the significant figures that error supports. ``memory``:
    the activation arena and weight bytes planned from the graph at the precision the
    device computes in (the narrowest its profile lists; an artifact: its own), so memory is known for a device not yet bought.
    """
    from evit_export.validation.latency.simulate import estimate
    from dataclasses import replace

    from evit_export.validation.latency.workloads import features, is_artifact_ref, planned_memory
    from evit_export.validation.memory import ELEMENT_BYTES

    many = not isinstance(device, (str, os.PathLike))
    profiles = [resolve_profile(str(d)) for d in (device if many else [device])]
    if not profiles:
        raise UserError("device=[] names no profile: pass a profile name (evit-export devices list) or a "
                        "PROFILE.json")
    ref = str(model)
    artifact_precision = None
    if is_artifact_ref(ref) and Path(ref).exists():
        from evit_export.targets import open_artifact

        path, target, spec = open_artifact(ref)
        artifact_precision = target.precision_family(spec)
        for profile in profiles:  # before the forward pass: a mismatch fails at once
            require_fit(profile, target.name, artifact_precision, path.name)
    label, size, model_batch, feats = features(ref, img_size, batch, checkpoint)
    memory: dict[str, dict] = {}  # one plan per precision: an artifact's own, else what the device computes in
    estimates = []
    for p in profiles:
        precision = artifact_precision or min(p.precisions, key=ELEMENT_BYTES.__getitem__)
        if precision not in memory:
            memory[precision] = planned_memory(ref, precision, img_size, batch, checkpoint)
        estimates.append(replace(reported(estimate(feats, p, label, size, model_batch), p),
                                 memory=memory[precision]))
    return estimates if many else estimates[0]


def package(artifact: PathLike, out: PathLike, *, checkpoint: PathLike | None = None,
            images: PathLike | None = None, sample: PathLike | None = None, threads: int = 1,
            measure_latency: bool = True) -> Path:
    """An app-integration package folder at ``out`` (replaced atomically): the artifact,
    labels, preprocessing, manifest, integration snippet and report, after checking the
    artifact against PyTorch (``checkpoint``, ``images`` as in ``check``) and timing it
    (``threads``; ``measure_latency=False`` skips it). ``sample``: the image shipped as
    sample.png (default: the first of ``images``, else a generated pattern that says so)."""

    return build_package(artifact, out, checkpoint=checkpoint, images=images, sample=sample, threads=threads,
                         measure=measure_latency)


def _paths(artifacts: Sequence[PathLike] | PathLike) -> list[Path]:
    """A single path is accepted where a list is expected (a str is a sequence too)."""
    if isinstance(artifacts, (str, os.PathLike)):
        return [Path(artifacts)]
    return [Path(a) for a in artifacts]
