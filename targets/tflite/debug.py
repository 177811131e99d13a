"""Per-layer int8 error of a TFLite artifact (``check --per-layer``).

LiteRT runs the artifact and a float export of the same deploy model (the same plan,
so the same op names: graph.py scopes every op by its block) with every tensor
preserved; each int8 op output is dequantized and compared with the float tensor of
the same name. TensorFlow's QuantizationDebugger does the same per layer but only on
a model it quantizes itself (instrumented with NumericVerify ops), not on a shipped
artifact; the exporter uses it for selective quantization.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np

from evit_export.core.spec import ModelSpec
from evit_export.targets.calibration import tensor_error
from evit_export.targets.tflite.exporter import export_tflite
from evit_export.targets.tflite.options import TFLiteOptions
from evit_export.targets.tflite.runner import dequantize, interpreter, LiteRTRunner


_BLOCK = re.compile(r"^(patch_embed\.\d+|stages\.\d+\.\d+|head)/")
_KINDS = {"conv2d": "conv", "depthwiseconv2d": "conv", "fullyconnected": "matmul", "batchmatmul": "matmul",
          "concatenation": "concat", "logistic": "sigmoid"}


def block_of(tensor_name: str) -> str | None:
    """``stages.2.3/BiasAdd_14;stages.2.3/Conv2D_8`` -> ``stages.2.3``; None outside blocks."""
    m = _BLOCK.match(tensor_name or "")
    return m.group(1) if m else None


def op_kind(op_name: str) -> str:
    kind = op_name.lower().replace("_", "")
    return _KINDS.get(kind, kind)


def _tensors(path: Path, x: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, str], set[str]]:
    """(dequantized op outputs by name, producing op by name, names stored as integers)
    for images ``x`` (already the model's input tensor), one image per run."""

    it = interpreter(path, 1, preserve=True)
    inp = it.get_input_details()[0]
    batch = int(inp["shape"][0])
    ops = it._get_ops_details()  # the only view LiteRT gives of which op wrote which tensor
    details = {d["index"]: d for d in it.get_tensor_details()}
    producers = {details[o]["name"]: op["op_name"] for op in ops for o in op["outputs"] if o in details}
    runs: dict[str, list[np.ndarray]] = {}
    integer = set()
    for i in range(len(x)):
        it.set_tensor(inp["index"], np.repeat(x[i:i + 1], batch, axis=0))
        it.invoke()
        for op in ops:
            for idx in op["outputs"]:
                d = details.get(idx)
                if d is None:
                    continue
                raw = it.get_tensor(idx)
                if raw.dtype.kind in "iu" and d["quantization"][0]:
                    integer.add(d["name"])
                runs.setdefault(d["name"], []).append(dequantize(raw, d["quantization"])[:1])
    return {k: np.concatenate(v) for k, v in runs.items()}, producers, integer


def layer_errors(path: Path, spec: ModelSpec, pixels: np.ndarray, deployed) -> list[dict]:
    """One row per int8 op output of the artifact: tensor, block, op, sqnr_db, cosine."""

    with LiteRTRunner(Path(path), spec, threads=1) as runner:
        x = runner.feed(pixels)
        batch = runner.batch
    got, producers, integer = _tensors(Path(path), x)
    with tempfile.TemporaryDirectory(prefix="evit-per-layer-") as d:
        float_art = export_tflite(deployed, spec.replace(notes=[]), Path(d) / "fp32.tflite",
                                  TFLiteOptions(batch=batch, layout=str(spec.input_layout).lower(), analyze=False))
        with LiteRTRunner(float_art.path, float_art.spec, threads=1) as float_runner:
            floats, _, _ = _tensors(float_art.path, float_runner.feed(pixels))
    rows = []
    for name in integer:
        block = block_of(name)
        if block is None or name not in floats or floats[name].shape != got[name].shape:
            continue
        reference = floats[name]
        if (got[name] >= 0).all() and (reference < 0).any():
            # the int8 op fused the ReLU that follows it in the float model (its range starts at 0)
            reference = np.maximum(reference, 0)
        rows.append({"tensor": name, "block": block, "op": op_kind(producers.get(name, "?")),
                     **tensor_error(reference, got[name])})
    return rows
