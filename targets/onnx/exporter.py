"""ONNX export: TorchScript export of the folded deploy graph, onnxsim (onnxslim as
fallback), fp16 or calibrated static int8 (onnxruntime.quantization), full checker,
the spec in metadata_props, optionally the onnxruntime mobile .ort file."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path


from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec
from evit_export.targets.base import Artifact, SPEC_KEY, write_sidecar
from evit_export.targets.calibration import calibration_record, heldout_pixels, kept_float_notes
from evit_export.targets.onnx.options import OnnxOptions, OnnxPrecision
from evit_export.targets.onnx.quantize import quantize_int8


INPUT_NAME, OUTPUT_NAME = "image", "logits"


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
    # caller feeds the same tensors; onnxruntime ships this converter. It appends its
    # input Casts at the end of the graph, which onnx.checker rejects, so the nodes are
    # put back in dependency order with onnxruntime's own topological sort.
    from onnxruntime.quantization.onnx_model import ONNXModel
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    ONNXModel(converted).topological_sort()
    return converted


def _trace(model, spec: ModelSpec, options: OnnxOptions):
    """The deploy model as an ONNX proto (TorchScript exporter, constants folded)."""
    import onnx
    import torch

    x = torch.zeros(options.batch or 1, 3, spec.img_size, spec.img_size)
    buf = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if options.batch is None else None
    from evit_export.models.deploy import attention_layout

    with warnings.catch_warnings(), attention_layout(model, options.attention_layout.resolve(options.precision)):
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), buf, dynamo=False, opset_version=options.opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic,
                          do_constant_folding=True)
    return onnx.load_from_string(buf.getvalue())


def _apply_precision(proto, spec: ModelSpec, options: OnnxOptions, info: dict):
    if options.precision == OnnxPrecision.FP16:
        return _to_fp16(proto)
    if options.precision == OnnxPrecision.INT8:
        return _to_int8(proto, spec, options, info)
    return proto


def _to_int8(proto, spec: ModelSpec, options: OnnxOptions, info: dict):
    """Static int8 with onnxruntime.quantization (``quantize.py``), calibrated on the
    calibration images; held-out images judge ``keep_float="auto"`` and fill the record.

    Weights int8 per output channel, activations uint8: the u8·s8 pair is what
    onnxruntime's CPU kernels (MLAS) run fastest on x86 and Arm. ``qoperator`` gives
    QLinearConv/QLinearMatMul nodes (fastest on the CPU provider); ``qdq`` gives
    QuantizeLinear/DequantizeLinear pairs around float ops, the form NNAPI, QNN and
    TensorRT providers expect.
    """

    pixels, info["calibration"] = calibration_record(spec, options.calibration_data, options.calibration_size)
    held = heldout_pixels(spec, options.calibration_data)
    int8, record = quantize_int8(proto, spec, pixels, held, options, options.batch or 1)
    info["quant_format"] = str(options.quant_format)
    info["int8"] = record
    kept = record["kept_float"]
    info["quantization"] = (f"static; weights int8 per channel ({record['weight_bits']}-bit range: "
                            f"{record['weight_bits_why']}), activations uint8, {record['calibration_method']} "
                            f"calibration; kept in float: {', '.join(kept) if kept else 'nothing'}")
    spec.notes.extend(kept_float_notes(record, options.keep_float, "onnxruntime"))
    return int8


LAYOUT_KEY = "attention_layout"  # which deploy layout was traced: a float twin for per-layer checks must match


def _embed_spec(proto, spec: ModelSpec, layout: str) -> None:
    proto.doc_string = f"EfficientViT-{spec.variant.upper()} exported by evit-export"
    proto.producer_name = "evit-export"
    del proto.metadata_props[:]
    for key, value in ((SPEC_KEY, spec.to_json()), ("variant", spec.variant),
                       ("labels", json.dumps(spec.labels)), ("mean", json.dumps(list(spec.mean))),
                       ("std", json.dumps(list(spec.std))), (LAYOUT_KEY, layout)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def export_onnx(model, spec: ModelSpec, out: Path, options: OnnxOptions | None = None) -> Artifact:
    """Export the folded deploy ``model`` to ``out`` (.onnx), atomically."""
    import onnx

    options = options or OnnxOptions()
    out = check_writable(Path(out))
    spec = spec.replace(precision=str(options.precision), batch=options.batch, input_layout="NCHW",
                        input_range="normalized", input_dtype="float32")
    spec.toolchain.update(_versions())
    started = time.perf_counter()
    proto = _trace(model, spec, options)
    simplifier = "none"
    if options.simplify:
        proto, simplifier = _simplify(proto)
    info: dict = {}
    proto = _apply_precision(proto, spec, options, info)
    layout = options.attention_layout.resolve(options.precision)
    _embed_spec(proto, spec, layout)
    onnx.checker.check_model(proto, full_check=True)
    info.update({"opset": options.opset, "simplifier": simplifier, "batch": options.batch, LAYOUT_KEY: layout,
                 "precision": str(options.precision), "export_seconds": round(time.perf_counter() - started, 2)})
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
        if options.ort_format:
            info["ort"] = _write_ort(tmp, out)
    info["file_size"] = out.stat().st_size
    write_sidecar(out, spec, info)
    return Artifact(out, "onnx", spec, info)


def _write_ort(tmp_onnx: Path, out: Path) -> dict:
    """onnxruntime mobile (.ort) beside the .onnx, plus the mobile-usability verdict."""
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
        summary = [ln for ln in text.splitlines()
                   if "INFO" in ln and ("supported" in ln.lower() or "recommend" in ln.lower())][-6:]
        return {"path": str(ort_dest), "size": ort_dest.stat().st_size,
                "mobile_usability": {"returncode": check.returncode, "summary": summary, "output": text[-4000:]}}


def _versions() -> dict:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
