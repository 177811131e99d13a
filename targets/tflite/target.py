"""TFLite / LiteRT target: a native NHWC TensorFlow graph built from the folded deploy
weights (``tflite_graph.py``), converted by ``tf.lite.TFLiteConverter`` in a worker
process (``tflite_worker.py``); fp32 / fp16 / dynamic-range / full-integer int8; the
spec in the flatbuffer's metadata; a LiteRT (XNNPACK) Runner.

This module never imports TensorFlow: LiteRT (``ai_edge_litert``) runs the models,
and the flatbuffer is read and edited with LiteRT's own schema bindings.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from evit_export.core.atomic import atomic_path, check_writable, write_text_atomic
from evit_export.core.errors import UserError
from evit_export.core.preprocess import normalize
from evit_export.core.spec import ModelSpec

from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE, calibration_record, check_calibration_source
from evit_export.targets.base import (SPEC_KEY, Artifact, GraphReport, Runner, Target, TensorInfo, pad_batch, parse_spec,
                   read_sidecar, run_in_batches, write_sidecar)

SIGNATURE_KEY = "serving_default"
INPUT_NAME, OUTPUT_NAME = "image", "logits"
QUANTIZE_CHOICES = ("none", "fp16", "dynamic", "int8")
PRECISION = {"none": "fp32", "fp32": "fp32", "fp16": "fp16", "dynamic": "dynamic", "int8": "int8"}
WORKER_TIMEOUT_S = 1800


# --------------------------------------------------------------------------- flatbuffer helpers

def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def read_flatbuffer_metadata(data: bytes) -> dict[str, bytes]:
    """{name: bytes} of the model's metadata entries, without unpacking the model."""
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer")
    model = schema.Model.GetRootAs(data, 0)
    out = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        name = entry.Name().decode("utf-8", "replace") if entry.Name() else ""
        buf = model.Buffers(entry.Buffer())
        if buf.DataLength():
            out[name] = buf.DataAsNumpy().tobytes()
        elif buf.Offset() and buf.Size():
            out[name] = bytes(data[buf.Offset():buf.Offset() + buf.Size()])
        else:
            out[name] = b""
    return out


def add_flatbuffer_metadata(data: bytes, entries: dict[str, bytes], output_name: str | None = None,
                            input_name: str | None = None) -> bytes:
    """Append (or replace) metadata entries: each one a new buffer + Metadata table.
    ``output_name`` renames the graph's output tensor (the converter calls it
    "Identity"; the signature already calls it by its key); ``input_name`` likewise
    (quantized models call it "serving_default_image:0")."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    schema = _schema()
    model = fbu.read_model_from_bytearray(bytearray(data))
    sub = model.subgraphs[0]
    if output_name:
        for idx in sub.outputs:
            sub.tensors[idx].name = output_name
    if input_name:
        for idx in sub.inputs:
            sub.tensors[idx].name = input_name
    model.metadata = [m for m in (model.metadata or [])
                      if (m.name.decode() if isinstance(m.name, bytes) else m.name) not in entries]
    for name, payload in entries.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(payload, np.uint8).copy()
        model.buffers.append(buf)
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = len(model.buffers) - 1
        model.metadata.append(meta)
    return bytes(fbu.convert_object_to_bytearray(model))


def weight_buffers(data: bytes) -> list[tuple[str, int, int]]:
    """(tensor name, byte offset, byte length) of every constant tensor's buffer."""
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    sub = model.Subgraphs(0)
    out, seen = [], set()
    for t in range(sub.TensorsLength()):
        tensor = sub.Tensors(t)
        b = tensor.Buffer()
        if b == 0 or b in seen:
            continue
        buf = model.Buffers(b)
        if buf.DataLength():
            seen.add(b)
            tab = buf._tab
            start = tab.Vector(tab.Offset(4))
            out.append((tensor.Name().decode(), start, buf.DataLength()))
    return out


def _read_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the artifact path")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise UserError(f"{path} is not a TFLite model: pass a .tflite file")
    return data


def spec_text_from_tflite(path: Path) -> bytes | None:
    data = _read_bytes(path)
    try:
        meta = read_flatbuffer_metadata(data)
    except Exception:
        raise UserError(f"{path} is not a readable TFLite flatbuffer: pass a .tflite file") from None
    return meta.get(SPEC_KEY)


# --------------------------------------------------------------------------- export

def _graph_input(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Pixels -> the float tensor the TF graph's input takes (before any quantisation)."""
    x = normalize(pixels, spec) if spec.input_range == "normalized" else pixels.astype(np.float32)
    if spec.input_layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, np.float32)


def _run_worker(job: Path) -> dict:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["CUDA_VISIBLE_DEVICES"] = env.get("EVIT_TF_CUDA_VISIBLE_DEVICES", "-1")
    try:
        proc = subprocess.run([sys.executable, "-m", "evit_export.targets.tflite.worker", str(job)],
                              capture_output=True, text=True, env=env, timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"TFLite conversion worker timed out after {WORKER_TIMEOUT_S} s") from None
    if proc.returncode != 0 or not (job / "model.tflite").exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("EVIT_WORKER_ERROR:")]
        detail = lines[-1].split(":", 1)[1].strip() if lines else (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"TFLite conversion failed (worker exit {proc.returncode}): {detail}")
    return json.loads((job / "report.json").read_text())


def validate_options(out, quantize: str = "none", input_type: str = "float", layout: str = "nhwc",
                     batch: int | None = 1, calibration_data=None,
                     float_attention: bool = False) -> tuple[str, str, str]:
    """Check export options before any work; (quantize, input_type, LAYOUT) normalised."""
    quantize = (quantize or "none").lower()
    if quantize == "fp32":
        quantize = "none"
    if quantize not in QUANTIZE_CHOICES:
        raise UserError(f"--quantize {quantize} is not supported: choose one of {', '.join(QUANTIZE_CHOICES)}")
    input_type = (input_type or "float").lower()
    if input_type not in ("float", "uint8"):
        raise UserError(f"--input {input_type} is not supported: choose float or uint8")
    if input_type == "uint8" and quantize != "int8":
        raise UserError("--input uint8 needs full-integer quantization: add --quantize int8 (or use --input float)")
    layout = (layout or "nhwc").upper()
    if layout not in ("NHWC", "NCHW"):
        raise UserError(f"--layout {layout.lower()} is not supported: choose nhwc or nchw")
    if batch is None or batch < 1:
        raise UserError(f"--batch {batch} must be at least 1 (TFLite models here have a fixed batch)")
    check_calibration_source(calibration_data, quantize == "int8")
    if float_attention and quantize != "int8":
        raise UserError("--float-attention only applies to --quantize int8: drop it or add --quantize int8")
    if float_attention and input_type == "uint8":
        raise UserError("--float-attention keeps float ops, but --input uint8 is for full-integer models "
                        "(NNAPI / Edge TPU): use --input float, or drop --float-attention")
    if out is not None:
        if Path(out).suffix.lower() != ".tflite":
            raise UserError(f"--out {out} must end in .tflite")
        check_writable(Path(out))
    return quantize, input_type, layout


def export_tflite(model, spec: ModelSpec, out: Path, quantize: str = "none", calibration_data=None,
                  calibration_size: int = DEFAULT_CALIBRATION_SIZE, input_type: str = "float",
                  layout: str = "nhwc", batch: int = 1, analyze: bool = True,
                  calibration_pixels_override: np.ndarray | None = None, float_attention: bool = False) -> Artifact:
    """Export the folded deploy ``model`` to ``out`` (.tflite), atomically.

    ``quantize``: none (fp32) | fp16 | dynamic | int8. ``input_type``: float (the
    normalized image, like ONNX) | uint8 (raw RGB pixels 0..255, normalization in the
    graph; needs int8). ``layout``: nhwc | nchw. ``calibration_data``: folder of images
    (int8), default the embedded/digits dataset; ``"random"`` only with a warning.
    ``float_attention`` (int8 only): keep q·kᵀ, softmax and attn·v in float, so the
    whole graph stays inside the XNNPACK delegate; faster on CPU, not full-integer.
    """
    from evit_export.targets.tflite.graph import make_plan

    quantize, input_type, layout = validate_options(out, quantize, input_type, layout, batch, calibration_data,
                                                    float_attention)
    out = Path(out)

    started = time.perf_counter()
    precision = PRECISION[quantize]
    input_range = "pixels" if input_type == "uint8" else "normalized"
    input_dtype = "uint8" if input_type == "uint8" else "float32"
    notes = list(spec.notes)
    spec = spec.replace(precision=precision, batch=batch, input_layout=layout, input_range=input_range,
                        input_dtype=input_dtype, notes=notes)
    spec.toolchain.update(_versions())
    info: dict = {"quantize": quantize, "precision": precision, "batch": batch, "layout": layout,
                  "input": input_type, "signature": SIGNATURE_KEY, "input_name": INPUT_NAME,
                  "output_name": OUTPUT_NAME, "converter": "tf.lite.TFLiteConverter (native NHWC graph)"}
    calib = None
    if quantize == "int8":
        calib_pixels, info["calibration"] = calibration_record(calibration_pixels_override, spec,
                                                               calibration_data, calibration_size)
        if input_range == "pixels" and calib_pixels.max() < 255:
            # The uint8 input's scale comes from the calibrated input range; make it exactly
            # 0..255 (scale 1, zero point 0) so raw pixels go in unchanged.
            calib_pixels = calib_pixels.copy()
            calib_pixels[0, :, 0, 0] = 255.0
        calib = _graph_input(calib_pixels, spec)
        info["float_attention"] = bool(float_attention)
        if float_attention:
            spec.notes.append("int8 with the attention core (q·kᵀ, softmax, attn·v) in float: runs inside "
                              "XNNPACK on CPU; not a full-integer model (NNAPI / Edge TPU need one)")
    plan, weights = make_plan(model)
    with tempfile.TemporaryDirectory(prefix="evit-tflite-") as d:
        job = Path(d)
        (job / "plan.json").write_text(json.dumps(plan))
        np.savez(job / "weights.npz", **weights)
        opts = {"batch": batch, "layout": layout, "input_range": input_range, "mean": list(spec.mean),
                "std": list(spec.std), "quantize": quantize, "input_dtype": input_dtype,
                "output_dtype": "uint8" if input_dtype == "uint8" else "float32",
                "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "analyze": analyze,
                "float_attention": bool(float_attention)}
        (job / "options.json").write_text(json.dumps(opts))
        if calib is not None:
            np.save(job / "calibration.npy", calib)
        report = _run_worker(job)
        data = (job / "model.tflite").read_bytes()
    spec.toolchain["tensorflow"] = report.get("tensorflow", "?")
    data = add_flatbuffer_metadata(data, {SPEC_KEY: spec.to_json().encode("utf-8")}, output_name=OUTPUT_NAME,
                                   input_name=INPUT_NAME)
    info.update({"gpu_delegate": report.get("gpu_delegate"),
                 "worker_seconds": {k: report[k] for k in ("graph_seconds", "convert_seconds", "analyze_seconds")
                                    if k in report}})
    io_details = _io_quantization(data)
    info["io"] = io_details
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
    labels_path = out.with_name("labels.txt")
    write_text_atomic(labels_path, "\n".join(spec.labels) + "\n")
    info["labels"] = str(labels_path)
    info["file_size"] = out.stat().st_size
    info["export_seconds"] = round(time.perf_counter() - started, 2)
    write_sidecar(out, spec, info)
    return Artifact(out, "tflite", spec, info)


def _io_quantization(data: bytes) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
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


# --------------------------------------------------------------------------- runner

def _interpreter(path: Path, threads: int | None, delegate: bool = True, preserve: bool = False):
    from evit_export.core.import_order import tf_safe

    tf_safe()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {}
    if not delegate or preserve:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve:
        kw["experimental_preserve_all_tensors"] = True
    it = Interpreter(model_path=str(path), num_threads=threads, **kw)
    it.allocate_tensors()
    return it


def _dequantize(arr: np.ndarray, quant: tuple) -> np.ndarray:
    scale, zp = quant
    if arr.dtype.kind in "iu" and scale:
        return ((arr.astype(np.float32) - zp) * scale).astype(np.float32)
    return arr.astype(np.float32)


class LiteRTRunner(Runner):
    """LiteRT Interpreter (XNNPACK by default), fixed batch, any I/O dtype."""

    name = "litert"

    def __init__(self, path: Path, spec: ModelSpec, threads: int | None = None, xnnpack: bool = True):
        super().__init__(spec)
        self.path = Path(path)
        self.threads = threads
        self.interpreter = _interpreter(self.path, threads, delegate=xnnpack)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    def feed(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels -> this model's input tensor (layout, range, dtype, quantisation)."""
        x = _graph_input(pixels, self.spec)
        dtype = np.dtype(self.input["dtype"])
        if dtype.kind in "iu":
            scale, zp = self.input["quantization"]
            info = np.iinfo(dtype)
            q = np.rint(x / (scale or 1.0) + zp) if scale else np.rint(x)
            return np.clip(q, info.min, info.max).astype(dtype)
        return x.astype(dtype)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        it.set_tensor(self.input["index"], x)
        it.invoke()
        return _dequantize(it.get_tensor(self.output["index"]), self.output["quantization"])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return run_in_batches(self._invoke, self.feed(pixels), self.batch).astype(np.float32)

    def timed_call(self, pixels: np.ndarray):
        """Inference only (the input tensor is set once, outside the timed region)."""
        x = pad_batch(self.feed(pixels[: self.batch]), self.batch)
        self.interpreter.set_tensor(self.input["index"], x)
        return self.interpreter.invoke

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Every op output of one forward pass in execution order, dequantised, from the
        builtin kernels (delegates off) with all tensors preserved."""
        it = _interpreter(self.path, self.threads, preserve=True)
        x = pad_batch(self.feed(pixels[: self.batch]), self.batch)
        it.set_tensor(self.input["index"], x)
        it.invoke()
        details = {d["index"]: d for d in it.get_tensor_details()}
        out = []
        n = min(len(pixels), self.batch)
        for op in it._get_ops_details():
            for idx in op["outputs"]:
                if idx < 0 or idx not in details:
                    continue
                d = details[idx]
                arr = _dequantize(it.get_tensor(idx), d["quantization"])
                if arr.ndim and arr.shape[0] == self.batch and self.batch != n:
                    arr = arr[:n]
                out.append((d["name"] or f"tensor_{idx}", arr))
        return out


# --------------------------------------------------------------------------- target

class TFLiteTarget(Target):
    name = "tflite"
    suffixes = (".tflite",)

    def export(self, model, spec, out, **options) -> Artifact:
        return export_tflite(model, spec, Path(out), **options)

    def embedded_spec_text(self, path: Path) -> bytes | None:
        return spec_text_from_tflite(Path(path))

    def open(self, path: Path, spec: ModelSpec | None = None, threads: int | None = None,
             xnnpack: bool = True, **_) -> Runner:
        return LiteRTRunner(Path(path), self.require_spec(path, spec), threads=threads, xnnpack=xnnpack)

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        _read_bytes(path)
        spec = parse_spec(spec_text_from_tflite(Path(path)))
        it = _interpreter(Path(path), 1, delegate=False)
        layout = spec.input_layout if spec else "NHWC"

        def rng():
            if spec is None or spec.input_range == "normalized":
                return "normalized ((x/255 - mean)/std), mean/std in metadata"
            return "0..255 RGB pixels"

        def info(d, role):
            shape = [int(s) for s in d["shape"]]
            dtype = np.dtype(d["dtype"]).name
            scale, zp = d["quantization"]
            q = f" (quantized: scale {scale:.6g}, zero point {zp})" if scale else ""
            if role == "input":
                return TensorInfo(d["name"], shape, dtype, layout, rng() + q)
            return TensorInfo(d["name"], shape, dtype, "NC", "logits" + q)

        return {"inputs": [info(d, "input") for d in it.get_input_details()],
                "outputs": [info(d, "output") for d in it.get_output_details()]}

    def inspect(self, path: Path, profile: bool = False) -> GraphReport:
        data = _read_bytes(path)
        schema = _schema()
        model = schema.Model.GetRootAs(data, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            codes.append(_BUILTIN_NAMES.get(code, f"CUSTOM_{i}") if code != 32 else
                         (oc.CustomCode() or b"CUSTOM").decode())
        sub = model.Subgraphs(0)
        hist = Counter(codes[sub.Operators(i).OpcodeIndex()] for i in range(sub.OperatorsLength()))
        params = 0
        meta_buffers = {model.Metadata(i).Buffer() for i in range(model.MetadataLength())}
        for t in range(sub.TensorsLength()):
            tensor = sub.Tensors(t)
            b = tensor.Buffer()
            if b and b not in meta_buffers and model.Buffers(b).DataLength():
                params += int(np.prod(tensor.ShapeAsNumpy())) if tensor.ShapeLength() else 1
        report = GraphReport("tflite", hist, params, len(data))
        side = read_sidecar(Path(path)) or {}
        sinfo = side.get("info", {})
        gpu = sinfo.get("gpu_delegate")
        if gpu:
            report.extra["gpu_delegate_compatible"] = gpu.get("compatible") if gpu.get("checked") else "not checked"
        it = _interpreter(Path(path), 1, delegate=True)
        ops = Counter(o["op_name"] for o in it._get_ops_details())
        report.extra["xnnpack_partitions"] = ops.get("DELEGATE", 0)
        for role, d in (("input", it.get_input_details()[0]), ("output", it.get_output_details()[0])):
            report.extra[f"{role}_dtype"] = np.dtype(d["dtype"]).name
        if profile:
            report.extra["latency_ms_1_thread"] = _time_invoke(Path(path))
        return report


def _time_invoke(path: Path, runs: int = 20) -> float:
    it = _interpreter(path, 1)
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(3):
        it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 3)


def _builtin_names() -> dict[int, str]:
    try:
        ops = _schema().BuiltinOperator
    except Exception:
        return {}
    return {v: k for k, v in vars(ops).items() if not k.startswith("_") and isinstance(v, int)}


_BUILTIN_NAMES = _builtin_names()
