"""ONNX target: TorchScript export of the deploy graph, onnxsim (onnxslim as
fallback), fp16 or calibrated static int8 (onnxruntime.quantization), full checker,
spec in metadata_props; onnxruntime Runner."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.preprocess import to_model_input
from evit_export.core.spec import ModelSpec

from evit_export.targets.calibration import DEFAULT_CALIBRATION_SIZE, calibration_record, check_calibration_source
from evit_export.targets.base import (SPEC_KEY, Artifact, GraphReport, Runner, Target, TensorInfo, parse_spec, run_in_batches,
                   write_sidecar)

INPUT_NAME, OUTPUT_NAME = "image", "logits"
MIN_OPSET = 13  # Split with sizes as an input, Softmax on the last axis only
PRECISIONS = ("fp32", "fp16", "int8")
QUANT_FORMATS = ("qoperator", "qdq")


def supported_opsets() -> tuple[int, int]:
    import onnx
    import torch.onnx

    torch_max = getattr(torch.onnx, "_constants", None)
    hi = min(onnx.defs.onnx_opset_version(), 20)  # TorchScript exporter supports up to 20
    if torch_max is not None and hasattr(torch_max, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET"):
        hi = min(hi, torch_max.ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    return MIN_OPSET, hi


def _simplify(model):
    """onnxsim first; onnxslim when onnxsim fails or cannot validate its result."""
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(model)
        if ok:
            return simplified, "onnxsim"
        reason = "onnxsim could not validate its output"
    except Exception as e:  # onnxsim raises plain RuntimeErrors from C++
        reason = f"onnxsim failed: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
    import onnxslim

    return onnxslim.slim(model), f"onnxslim ({reason})"


def _to_fp16(model):
    # Weights and activations in fp16, graph inputs/outputs stay fp32 so every
    # caller feeds the same tensors; onnxruntime ships this converter.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    _topological_sort(converted.graph)
    return converted


def _topological_sort(graph) -> None:
    """Reorder nodes so each follows its producers (the fp16 converter appends its
    input Casts at the end, which onnx.checker rejects)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise RuntimeError("ONNX graph has a cycle or a dangling input")
        for n in ready:
            available.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def _to_int8(model, spec: ModelSpec, pixels: np.ndarray, quant_format: str, batch: int):
    """Static int8 with onnxruntime.quantization, calibrated (min/max) on ``pixels``.

    Weights int8 per output channel, activations uint8: the u8·s8 pair is what
    onnxruntime's CPU kernels (MLAS) run fastest on x86 and Arm. ``qoperator`` gives
    QLinearConv/QLinearMatMul nodes (fastest on the CPU provider); ``qdq`` gives
    QuantizeLinear/DequantizeLinear pairs around float ops, the form NNAPI, QNN and
    TensorRT providers expect. Weights use 7 bits (reduce_range): without VNNI, x86's
    u8·s8 multiply-add (vpmaddubsw) saturates 16-bit sums of two 8-bit products.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from evit_export.core.preprocess import normalize

    x = normalize(pixels, spec).astype(np.float32)

    class Batches(CalibrationDataReader):
        def __init__(self):
            self._it = ({INPUT_NAME: np.repeat(x[i:i + 1], batch, axis=0)} for i in range(len(x)))

        def get_next(self):
            return next(self._it, None)

    with tempfile.TemporaryDirectory(prefix="evit-onnx-int8-") as d:
        src, pre, dst = (Path(d) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Batches(), calibrate_method=CalibrationMethod.MinMax,
                        quant_format=QuantFormat.QOperator if quant_format == "qoperator" else QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        return onnx.load(str(dst))


def validate_options(out, opset: int = 17, batch: int | None = 1, precision: str = "fp32",
                     calibration_data=None, quant_format: str = "qoperator") -> tuple[str, str]:
    """Check export options before any work; (precision, quant_format) normalised."""
    lo, hi = supported_opsets()
    if not lo <= opset <= hi:
        raise UserError(f"--opset {opset} is not supported here: choose {lo}..{hi}")
    precision = (precision or "fp32").lower()
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision} is not available for ONNX: choose {', '.join(PRECISIONS)}")
    quant_format = (quant_format or "qoperator").lower()
    if quant_format not in QUANT_FORMATS:
        raise UserError(f"--quant-format {quant_format} is not supported: choose {' or '.join(QUANT_FORMATS)}")
    if batch is not None and batch < 1:
        raise UserError(f"--batch {batch} must be at least 1 (or use --dynamic-batch)")
    check_calibration_source(calibration_data, precision == "int8", flag="--precision int8")
    if out is not None:
        check_writable(Path(out))
    return precision, quant_format


def export_onnx(model, spec: ModelSpec, out: Path, opset: int = 17, batch: int | None = 1,
                precision: str = "fp32", simplify: bool = True, ort_format: bool = False,
                calibration_data=None, calibration_size: int = DEFAULT_CALIBRATION_SIZE,
                quant_format: str = "qoperator",
                calibration_pixels_override: np.ndarray | None = None) -> Artifact:
    """Export the folded deploy ``model`` to ``out`` (.onnx), atomically.

    ``precision``: fp32 | fp16 | int8 (static, calibrated on ``calibration_data``: a
    folder of images, default the embedded digits; ``"random"`` only with a warning).
    """
    import onnx
    import torch

    precision, quant_format = validate_options(out, opset, batch, precision, calibration_data, quant_format)
    out = Path(out)
    spec = spec.replace(precision=precision, batch=batch, input_layout="NCHW", input_range="normalized",
                        input_dtype="float32")
    spec.toolchain.update(_versions())
    size = spec.img_size
    x = torch.zeros(batch or 1, 3, size, size)
    started = time.perf_counter()
    buf = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch is None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                          do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    simplifier = "none"
    if simplify:
        proto, simplifier = _simplify(proto)
    info: dict = {}
    if precision == "fp16":
        proto = _to_fp16(proto)
    elif precision == "int8":
        pixels, info["calibration"] = calibration_record(calibration_pixels_override, spec, calibration_data,
                                                         calibration_size)
        proto = _to_int8(proto, spec, pixels, quant_format, batch or 1)
        info["quant_format"] = quant_format
        info["quantization"] = ("static; weights int8 per channel (7-bit range), activations uint8, "
                                "min/max calibration")
    proto.doc_string = f"EfficientViT-{spec.variant.upper()} exported by evit-export"
    proto.producer_name = "evit-export"
    del proto.metadata_props[:]
    for key, value in ((SPEC_KEY, spec.to_json()), ("variant", spec.variant),
                       ("labels", json.dumps(spec.labels)), ("mean", json.dumps(list(spec.mean))),
                       ("std", json.dumps(list(spec.std)))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto, full_check=True)
    info.update({"opset": opset, "simplifier": simplifier, "batch": batch, "precision": precision,
                 "export_seconds": round(time.perf_counter() - started, 2)})
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        if ort_format:
            info["ort"] = _write_ort(tmp, out)
    info["file_size"] = out.stat().st_size
    write_sidecar(out, spec, info)
    return Artifact(out, "onnx", spec, info)


def _write_ort(tmp_onnx: Path, out: Path) -> dict:
    """onnxruntime mobile (.ort) beside the .onnx, plus the mobile-usability verdict."""
    result: dict = {}
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / out.name
        src.write_bytes(tmp_onnx.read_bytes())
        conv = subprocess.run([sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort",
                               str(src), "--output_dir", d], capture_output=True, text=True)
        produced = sorted(Path(d).glob("*.ort"))
        if conv.returncode != 0 or not produced:
            raise UserError(f"onnxruntime could not convert {out.name} to .ort: "
                            f"{(conv.stderr or conv.stdout).strip().splitlines()[-1:]}")
        ort_dest = out.with_suffix(".ort")
        with atomic_path(ort_dest) as t2:
            t2.write_bytes(produced[0].read_bytes())
        check = subprocess.run([sys.executable, "-m", "onnxruntime.tools.check_onnx_model_mobile_usability",
                                str(src)], capture_output=True, text=True)
        text = (check.stdout + check.stderr).strip()
        result = {"path": str(ort_dest), "size": ort_dest.stat().st_size,
                  "mobile_usability": {"returncode": check.returncode,
                                       "summary": [ln for ln in text.splitlines() if "INFO" in ln
                                                   and ("supported" in ln.lower() or "recommend" in ln.lower())][-6:],
                                       "output": text[-4000:]}}
    return result


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def load_proto(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the artifact path")
    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, OSError, RuntimeError) as e:
        raise UserError(f"{path} is not an ONNX model ({str(e).splitlines()[0][:80]}): "
                        "pass a .onnx file exported by evit-export or another tool") from None


def spec_text_from_proto(proto) -> str | None:
    return next((entry.value for entry in proto.metadata_props if entry.key == SPEC_KEY), None)


class OnnxRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, spec: ModelSpec, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(spec)
        self.path = Path(path)
        self.threads = threads
        self.session = ort.InferenceSession(str(path), self._options(), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dim0 = inp.shape[0]
        self.batch = dim0 if isinstance(dim0, int) else None

    def _options(self, optimize: bool = True):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return opts

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = to_model_input(pixels, self.spec)
        fn = lambda part: self.session.run(None, {self.input_name: part})[0]  # noqa: E731
        return run_in_batches(fn, x, self.batch).astype(np.float32)

    def timed_call(self, pixels: np.ndarray):
        x = to_model_input(pixels, self.spec)
        feeds = {self.input_name: x}
        return lambda: self.session.run(None, feeds)

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """All node outputs of the (unoptimised) graph, in node order."""
        import onnx
        import onnxruntime as ort

        proto = onnx.shape_inference.infer_shapes(onnx.load(str(self.path)))
        typed = {vi.name: vi for vi in list(proto.graph.value_info) + list(proto.graph.output)}
        existing = {o.name for o in proto.graph.output}
        order = []
        for node in proto.graph.node:
            for name in node.output:
                if name and name in typed:
                    order.append(name)
                    if name not in existing:
                        proto.graph.output.append(typed[name])
                        existing.add(name)
        session = ort.InferenceSession(proto.SerializeToString(), self._options(optimize=False),
                                       providers=["CPUExecutionProvider"])
        x = to_model_input(pixels, self.spec)
        if self.batch and len(x) != self.batch:
            x = np.repeat(x[:1], self.batch, axis=0)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, {self.input_name: x})))
        return [(n, values[n][: len(pixels)] if values[n].ndim and values[n].shape[0] == len(x) else values[n])
                for n in order if n in values]


class OnnxTarget(Target):
    name = "onnx"
    suffixes = (".onnx",)

    def export(self, model, spec, out, **options) -> Artifact:
        return export_onnx(model, spec, Path(out), **options)

    def embedded_spec_text(self, path: Path) -> str | None:
        return spec_text_from_proto(load_proto(path))

    def open(self, path: Path, spec: ModelSpec | None = None, threads: int | None = None, **_) -> Runner:
        return OnnxRunner(Path(path), self.require_spec(path, spec), threads=threads)

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        import onnx

        proto = load_proto(path)
        spec = parse_spec(spec_text_from_proto(proto))

        def info(vi, role):
            t = vi.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
            if role == "input":
                rng = ("normalized ((x/255 - mean)/std), mean/std in metadata" if spec is None or
                       spec.input_range == "normalized" else spec.input_range)
                return TensorInfo(vi.name, shape, dtype, "NCHW", rng)
            return TensorInfo(vi.name, shape, dtype, "NC", "logits")

        return {"inputs": [info(v, "input") for v in proto.graph.input],
                "outputs": [info(v, "output") for v in proto.graph.output]}

    def inspect(self, path: Path, profile: bool = False) -> GraphReport:
        proto = load_proto(path)
        hist = Counter(node.op_type for node in proto.graph.node)
        params = int(sum(np.prod(t.dims) if len(t.dims) else 1 for t in proto.graph.initializer))
        report = GraphReport("onnx", hist, params, Path(path).stat().st_size)
        if profile:
            report.extra["time_share"] = profile_op_time(Path(path), self.read_spec(path))
        return report


def profile_op_time(path: Path, spec: ModelSpec | None, runs: int = 10) -> dict[str, float]:
    """Share of onnxruntime kernel time per op type (1 thread, optimised graph)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory() as d:
        opts.profile_file_prefix = str(Path(d) / "prof")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [s if isinstance(s, int) else 1 for s in inp.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: Counter = Counter()
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            totals[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0)
    whole = sum(totals.values()) or 1
    return {op: round(t / whole, 4) for op, t in totals.most_common()}
