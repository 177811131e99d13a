"""Calibrate this machine: measure a reference set of timm models with a runtime here,
fit a profile to the measurements (fit.py), cache it under ~/.cache/evit-export/devices/.

The reference set is CNNs and vision transformers built with random weights (latency
does not depend on the values) and never EfficientViT, so the variants this tool
exports stay out of the sample their host estimate is judged on. It spans the op
classes the simulator prices: dense, pointwise, depthwise and grouped convolutions,
linear layers and attention, elementwise- and layout-heavy graphs, tiny models (where
dispatch dominates) and large ones, two resolutions, and small-width hybrids with many
ops per MAC (LeViT, EfficientFormerV2, MobileViTv2, TinyViT), the regime of
EfficientViT-M.

Only onnxruntime is calibrated here: the project's TFLite converter is EfficientViT-only
and litert-torch lives in its own environment, so timm models cannot become .tflite
files in this one.
"""
from __future__ import annotations

import io
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.machine import cpu_flags, machine_description
from evit_export.validation.latency.fit import Measurement, attach_features, fit_profile
from evit_export.validation.latency.profiles import user_profile_dir
from evit_export.targets.onnx.exporter import _simplify
from evit_export.targets.onnx.runner import session_options
from evit_export.validation.latency.workloads import timm_model

# name[@img_size]; about 5 minutes of export and timing on a busy 2-core machine.
REFERENCE_SET = (
    "timm:resnet18", "timm:mobilenetv2_050", "timm:mobilenetv2_100", "timm:mobilenetv3_small_050",
    "timm:mobilenetv3_small_100", "timm:mobilenetv3_large_100", "timm:mobilenetv3_large_100@160",
    "timm:lcnet_050", "timm:efficientnet_b0", "timm:mnasnet_100", "timm:ghostnet_100", "timm:regnetx_002",
    "timm:regnety_004", "timm:deit_tiny_patch16_224", "timm:levit_128s", "timm:levit_192", "timm:mobilevit_xxs",
    "timm:mobilevit_xs", "timm:mobilevitv2_050", "timm:efficientformer_l1", "timm:efficientformerv2_s0",
    "timm:tiny_vit_5m_224", "timm:edgenext_xx_small",
)


def parse_reference(entry: str) -> tuple[str, int | None]:
    name, _, size = entry.partition("@")
    if "efficientvit" in name.lower():
        raise UserError(f"{entry}: EfficientViT must stay out of the calibration set (it is what the "
                        "estimates are judged on); pick another timm model")
    if not name.startswith("timm:"):
        raise UserError(f"{entry}: calibration models are timm:<name>[@img_size]")
    return name, int(size) if size else None


def export_reference_onnx(model, img_size: int, out: Path) -> None:
    """TorchScript ONNX export plus the simplifier the project's own exports use, so
    reference graphs look like EfficientViT exports to onnxruntime."""
    import onnx
    import torch


    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, img_size, img_size),), buf, dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          do_constant_folding=True)
    proto, _ = _simplify(onnx.load_from_string(buf.getvalue()))
    onnx.save(proto, str(out))


def time_onnx_models(models: list[tuple[Path, int]], threads: int, rounds: int = 4, seconds: float = 0.3,
                     min_runs: int = 5) -> list[float]:
    """Typical ms of a batch-1 run of each (onnx file, img_size) on onnxruntime's CPU
    provider (the project's session options).

    With one thread, the calling thread's CPU time: every kernel runs on it, so it is
    the latency the model would have alone, even while other processes share the cores
    (wall time would measure them). Their caches and SMT siblings still slow some runs,
    so the models are timed in interleaved rounds (a busy minute slows all of them
    alike, not the one being timed) and the 20th percentile of all runs is kept, which
    on a quiet machine lies within a few percent of the median.
    """
    import onnxruntime as ort


    clock = time.thread_time if threads == 1 else time.perf_counter
    runs = []
    for path, size in models:
        session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
            (1, 3, size, size)).astype(np.float32)}
        for _ in range(3):
            session.run(None, feed)
        runs.append((session, feed, []))
    for _ in range(rounds):
        for session, feed, times in runs:
            start, count = time.perf_counter(), 0
            while count < min_runs or time.perf_counter() - start < seconds:
                t0 = clock()
                session.run(None, feed)
                times.append((clock() - t0) * 1e3)
                count += 1
    return [float(np.percentile(times, 20)) for _, _, times in runs]


def measure_reference(reference: list[str], threads: int, log=lambda msg: None) -> list[Measurement]:
    """Export every reference model, then time them all together (time_onnx_models)."""
    import torch


    exported = []
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        for i, entry in enumerate(reference, start=1):
            name, size = parse_reference(entry)
            model, size = timm_model(name[5:], size)
            path = Path(d) / f"{i}.onnx"
            export_reference_onnx(model, size, path)
            log(f"[{i}/{len(reference)}] exported {name} @ {size}px")
            exported.append((name, path, size))
        log("timing them in interleaved rounds")
        times = time_onnx_models([(path, size) for _, path, size in exported], threads)
    for (name, _, size), ms in zip(exported, times):
        log(f"{name} @ {size}px: {ms:.2f} ms")
    return [Measurement(name, size, ms) for (name, _, size), ms in zip(exported, times)]


def calibrate(runtime: str, threads: int, reference: list[str], log=lambda msg: None):
    """(profile, fit figures, cached path) for this machine and ``runtime``."""
    if runtime != "onnxruntime":
        raise UserError(f"--runtime {runtime}: only onnxruntime can be calibrated in this environment")
    started = time.perf_counter()
    rows = measure_reference(reference, threads, log)
    attach_features(rows)
    name = f"host-onnxruntime-{threads}t"
    import onnxruntime

    profile, figures = fit_profile(
        rows, name=name,
        description=f"this machine: {machine_description()}; CPU flags: {' '.join(cpu_flags()) or platform.machine()}",
        runtime=f"onnxruntime {onnxruntime.__version__} CPU, {threads} thread(s), batch 1",
        formats=["onnx"], precisions=["fp32"],
        source_text=f"measured here with `devices calibrate` in {time.perf_counter() - started:.0f} s",
        data={"reference_set": list(reference)})
    cached = profile.save(user_profile_dir() / f"{name}.json")
    return profile, figures, cached
