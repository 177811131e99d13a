"""TFLite export: a native NHWC TensorFlow graph built from the folded deploy weights
(``graph.py``), converted by ``tf.lite.TFLiteConverter`` in a worker process
(``worker.py``); fp32 / fp16 / dynamic-range / full-integer int8; the spec in the
flatbuffer's metadata beside the standard TFLite model metadata (labels packed into
the model, ``metadata.py``), and ``<name>.labels.txt`` beside it.

This module never imports TensorFlow: the worker does, in its own process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from evit_export.core.atomic import atomic_path, check_writable, scratch_dir, write_text_atomic
from evit_export.core.errors import UserError
from evit_export.core.optional import require
from evit_export.core.spec import ModelSpec
from evit_export.targets.base import Artifact, SPEC_KEY, write_sidecar
from evit_export.targets.calibration import calibration_record, heldout_pixels, kept_float_notes
from evit_export.targets.tflite.graph import make_plan
from evit_export.targets.tflite.inspector import add_flatbuffer_metadata
from evit_export.targets.tflite.metadata import LABELS_FILE, METADATA_NAME, model_metadata, pack_associated_files
from evit_export.targets.tflite.options import InputType, Quantize, TFLiteOptions
from evit_export.targets.tflite.runner import graph_input, interpreter


SIGNATURE_KEY = "serving_default"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
WORKER_TIMEOUT_S = 1800
FLOAT_ATTENTION_NOTE = ("int8 with the attention core (q·kᵀ, softmax, attn·v) in float: runs inside XNNPACK on "
                        "CPU; not a full-integer model (NNAPI / Edge TPU need one: keep_float=none)")


def check_out(out: Path) -> Path:
    if Path(out).suffix.lower() != ".tflite":
        raise UserError(f"out={out} must end in .tflite")
    return check_writable(Path(out))


def _run_worker(job: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = env.get("EVIT_TF_CUDA_VISIBLE_DEVICES", "-1")
    # TensorFlow's own temporaries (autograph sources, tmp folders) go inside the job folder,
    # so a killed export leaves them where the next export sweeps them
    (job / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(job / "tmp")
    try:
        proc = subprocess.run([sys.executable, "-m", "evit_export.targets.tflite.worker", str(job)],
                              capture_output=True, text=True, env=env, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"TFLite conversion worker timed out after {WORKER_TIMEOUT_S} s") from None
    if proc.returncode < 0:  # killed by a signal: a native crash in TensorFlow's converter
        from evit_export.core.isolation import WorkerCrashed, crash_message

        tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
        raise WorkerCrashed(crash_message("TFLite conversion", "TFLite", proc.returncode, tail),
                            step="TFLite conversion", fmt="TFLite", exitcode=proc.returncode)
    if proc.returncode != 0 or not (job / "model.tflite").exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("EVIT_WORKER_ERROR:")]
        detail = lines[-1].split(":", 1)[1].strip() if lines else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"TFLite conversion failed (worker exit {proc.returncode}): {detail}")
    return json.loads((job / "report.json").read_text())


def _export_spec(spec: ModelSpec, options: TFLiteOptions) -> ModelSpec:
    pixels_in = options.input_type == InputType.UINT8
    spec = spec.replace(precision=str(options.precision), batch=options.batch, input_layout=str(options.layout).upper(),
                        input_range="pixels" if pixels_in else "normalized",
                        input_dtype="uint8" if pixels_in else "float32", notes=list(spec.notes))
    spec.toolchain.update(_versions())
    return spec


def _calibration(spec: ModelSpec, options: TFLiteOptions, info: dict) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Graph-ready float (calibration, held-out) inputs for int8 (None otherwise); notes in ``spec``."""

    if options.precision != Quantize.INT8:
        return None, None
    pixels, info["calibration"] = calibration_record(spec, options.calibration_data, options.calibration_size)
    if spec.input_range == "pixels" and pixels.max() < 255:
        # The uint8 input's scale comes from the calibrated input range; make it exactly
        # 0..255 (scale 1, zero point 0) so raw pixels go in unchanged.
        pixels = pixels.copy()
        pixels[0, :, 0, 0] = 255.0
    info["float_attention"] = "attention" in options.keep_float.split(",")
    info["keep_float"] = options.keep_float
    if info["float_attention"]:
        spec.notes.append(FLOAT_ATTENTION_NOTE)
    held = None if options.full_integer else heldout_pixels(spec, options.calibration_data)
    return graph_input(pixels, spec), (graph_input(held, spec) if held is not None else None)


def _convert(model, spec: ModelSpec, options: TFLiteOptions, calib: np.ndarray | None,
             held: np.ndarray | None = None) -> tuple[bytes, dict]:
    """(flatbuffer bytes, worker report): the plan and weights go to the worker process."""

    plan, weights = make_plan(model)
    worker_options = {"batch": options.batch, "layout": spec.input_layout, "input_range": spec.input_range,
                      "mean": list(spec.mean), "std": list(spec.std), "quantize": str(options.precision),
                      "input_dtype": spec.input_dtype, "output_dtype": spec.input_dtype,
                      "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "analyze": options.analyze,
                      "keep_float": [] if options.full_integer else options.keep_float.split(","),
                      "min_cosine": options.min_cosine}

    with scratch_dir("evit-tflite-") as job:
        (job / "plan.json").write_text(json.dumps(plan))
        np.savez(job / "weights.npz", **weights)
        (job / "options.json").write_text(json.dumps(worker_options))
        if calib is not None:
            np.save(job / "calibration.npy", calib)
        if held is not None:
            np.save(job / "heldout.npy", held)
        report = _run_worker(job)
        return (job / "model.tflite").read_bytes(), report


def export_tflite(model, spec: ModelSpec, out: Path, options: TFLiteOptions | None = None) -> Artifact:
    """Export the folded deploy ``model`` to ``out`` (.tflite), atomically, with
    ``<name>.labels.txt`` and the sidecar beside it (one labels file per artifact, so
    two exports into one folder never overwrite each other's)."""
    require("tensorflow")  # the converter runs in a worker: fail here, before any work
    options = options or TFLiteOptions()
    out = check_out(out)
    started = time.perf_counter()
    spec = _export_spec(spec, options)
    info: dict = {"quantize": str(options.precision), "precision": str(options.precision), "batch": options.batch,
                  "layout": spec.input_layout, "input": str(options.input_type), "signature": SIGNATURE_KEY,
                  "input_name": INPUT_NAME, "output_name": OUTPUT_NAME,
                  "converter": "tf.lite.TFLiteConverter (native NHWC graph)"}
    data, report = _convert(model, spec, options, *_calibration(spec, options, info))
    if report.get("int8"):
        info["int8"] = report["int8"]
        spec.notes.extend(kept_float_notes(report["int8"], options.keep_float, "LiteRT (XNNPACK)"))
    spec.toolchain["tensorflow"] = report.get("tensorflow", "?")
    labels_text = "\n".join(spec.labels) + "\n"
    data = add_flatbuffer_metadata(data, {SPEC_KEY: spec.to_json().encode("utf-8"),
                                          METADATA_NAME: model_metadata(spec)},
                                   output_name=OUTPUT_NAME, input_name=INPUT_NAME)
    data = pack_associated_files(data, {LABELS_FILE: labels_text.encode("utf-8")})
    info["gpu_delegate"] = report.get("gpu_delegate")
    info["worker_seconds"] = {k: report[k] for k in ("graph_seconds", "convert_seconds", "analyze_seconds")
                              if k in report}
    info["io"] = _io_quantization(data)
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    labels_path = labels_path_for(out)
    write_text_atomic(labels_path, labels_text)
    info["labels"] = labels_path.name
    info["file_size"] = out.stat().st_size
    info["export_seconds"] = round(time.perf_counter() - started, 2)
    write_sidecar(out, spec, info)
    return Artifact(out, "tflite", spec, info)


def labels_path_for(model: Path) -> Path:
    """``m0_int8.tflite`` -> ``m0_int8.labels.txt``."""
    return model.with_suffix(".labels.txt")


def _io_quantization(data: bytes) -> dict:
    it = interpreter(content=data, delegate=False)
    out = {}
    for role, details in (("input", it.get_input_details()[0]), ("output", it.get_output_details()[0])):
        scale, zp = details["quantization"]
        out[role] = {"name": details["name"], "shape": [int(s) for s in details["shape"]],
                     "dtype": np.dtype(details["dtype"]).name, "scale": float(scale), "zero_point": int(zp)}
    return out


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("tensorflow-cpu", "tensorflow", "ai-edge-litert"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out
