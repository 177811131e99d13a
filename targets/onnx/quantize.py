"""Static int8 for ONNX with onnxruntime.quantization: calibration method, weight bits,
and which blocks stay float (``keep_float``: names, ``attention``, or ``auto``).

Block names are the deploy model's module paths, read from the TorchScript exporter's
node names (``/stages/stages.2/stages.2.3/mixer/attn/MatMul`` -> ``stages.2.3``), the
same names the TFLite graph puts on its ops, so both formats speak of the same blocks.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from evit_export.core.spec import ModelSpec

from evit_export.targets.calibration import (ATTENTION, KEEP_FLOAT_AUTO, cpu_int8_weight_bits, int8_quality,
                                             keep_float_for_speed, parse_keep_float, resolve_keep_float,
                                             search_keep_float)
from evit_export.targets.onnx.options import QuantFormat
from evit_export.targets.base import run_in_batches
from evit_export.core.preprocess import normalize

INPUT_NAME = "image"
_BLOCK = re.compile(r"^/(?:patch_embed/)?(patch_embed\.\d+)|^/stages/stages\.\d+/(stages\.\d+\.\d+)|^/(head)/")
# The attention core of a block: q·kᵀ, softmax, attn·v (the bias add rides with q·kᵀ).
_ATTENTION_CORE = ("MatMul", "Softmax")


def block_of(node_name: str) -> str:
    """``/stages/stages.2/stages.2.3/ffn0/pw1/Conv`` -> ``stages.2.3``; nodes outside any
    block (the final pooling) belong to ``head``."""
    m = _BLOCK.match(node_name or "")
    return next((g for g in m.groups() if g), "head") if m else "head"


def op_kind(op_type: str) -> str:
    """A node's op kind in the words users compare across formats."""
    kind = op_type.lower().replace("qlinear", "")
    return {"gemm": "matmul", "globalaveragepool": "mean", "batchmatmul": "matmul"}.get(kind, kind)


def blocks_in_order(proto) -> list[str]:
    out: list[str] = []
    for node in proto.graph.node:
        block = block_of(node.name)
        if block not in out:
            out.append(block)
    return out


def nodes_to_keep_float(proto, blocks: list[str], attention: bool) -> list[str]:
    chosen = set(blocks)
    return [n.name for n in proto.graph.node
            if block_of(n.name) in chosen or (attention and "/attn/" in n.name and n.op_type in _ATTENTION_CORE)]


def weight_bits_for(choice: str) -> tuple[int, str]:
    if choice == "auto":
        return cpu_int8_weight_bits()
    return int(choice), "chosen (weight_bits=" + choice + ")"


def _ort_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
            "entropy": CalibrationMethod.Entropy}[name]


def _quantize(pre: Path, dst: Path, x: np.ndarray, options, exclude: list[str], bits: int, batch: int):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat as OrtFormat, QuantType, quantize_static


    class Batches(CalibrationDataReader):
        def __init__(self):
            self._it = ({INPUT_NAME: np.repeat(x[i:i + 1], batch, axis=0)} for i in range(len(x)))

        def get_next(self):
            return next(self._it, None)

    fmt = OrtFormat.QOperator if options.quant_format == QuantFormat.QOPERATOR else OrtFormat.QDQ
    quantize_static(str(pre), str(dst), Batches(), calibrate_method=_ort_method(str(options.calibration_method)),
                    quant_format=fmt,
                    per_channel=True, reduce_range=bits == 7, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    return onnx.load(str(dst))


def _logits(model_bytes: bytes, x: np.ndarray, batch: int) -> np.ndarray:
    import onnxruntime as ort


    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return run_in_batches(lambda part: session.run(None, {INPUT_NAME: part})[0], x, batch)


def quantize_int8(model, spec: ModelSpec, pixels: np.ndarray, heldout: np.ndarray | None, options,
                  batch: int):
    """(int8 proto, record): static int8 of the fp32 ``model`` calibrated on ``pixels``;
    ``heldout`` (pixels) judges ``keep_float="auto"`` candidates against the fp32 graph
    in onnxruntime and gives the record its quality figures."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process


    x = normalize(pixels, spec).astype(np.float32)
    held = normalize(heldout, spec).astype(np.float32) if heldout is not None else None
    names = parse_keep_float(options.keep_float)
    bits, why = weight_bits_for(str(options.weight_bits))
    record = {"calibration_method": str(options.calibration_method), "weight_bits": bits, "weight_bits_why": why,
              "keep_float_requested": list(names) or ["none"]}
    with tempfile.TemporaryDirectory(prefix="evit-onnx-int8-") as d:
        src, pre, dst = (Path(d) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre))
        blocks = blocks_in_order(graph)
        base = resolve_keep_float(names, blocks)
        record["kept_float_for_speed"] = keep_float_for_speed(names, blocks, base)
        base = record["kept_float_for_speed"] + base
        attention = ATTENTION in names
        reference = _logits(src.read_bytes(), held, batch) if held is not None else None

        def build(kept: list[str]):
            return _quantize(pre, dst, x, options, nodes_to_keep_float(graph, kept, attention), bits, batch)

        def evaluate(kept: list[str]) -> dict:
            return int8_quality(reference, _logits(build(kept).SerializeToString(), held, batch))

        if KEEP_FLOAT_AUTO in names and reference is not None:
            found = search_keep_float(blocks, evaluate, base, options.min_cosine)
            kept = found["kept"]
            record["auto"] = {"met": found["met"], "tried": found["tried"], "min_cosine": options.min_cosine}
        else:
            kept = base
            if KEEP_FLOAT_AUTO in names:
                record["auto"] = {"met": None, "skipped": "no held-out images to judge candidates on"}
        result = build(kept)
        if reference is not None:
            record["heldout_quality"] = int8_quality(reference, _logits(result.SerializeToString(), held, batch))
    record["kept_float"] = kept + ([ATTENTION] if attention else [])
    return result, record
