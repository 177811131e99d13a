"""Per-layer int8 error of an ONNX artifact (``check --per-layer``).

Every intermediate tensor of the int8 artifact and of a float export of the same
deploy model (same exporter, same simplifier, same onnxruntime pre-processing, so
tensor names agree) is exposed as an output and run in onnxruntime, as
onnxruntime.quantization's qdq_loss_debug does; unlike it, integer tensors are kept
too: QOperator artifacts hold uint8 tensors named ``<float name>_quantized``,
dequantized here with the scale and zero point their producing node declares, and QDQ
artifacts hold ``<float name>_DequantizeLinear_Output``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from evit_export.core.spec import ModelSpec

from evit_export.targets.calibration import tensor_error
from evit_export.targets.onnx.quantize import INPUT_NAME, block_of, op_kind
from evit_export.core.preprocess import normalize
from evit_export.targets.onnx.exporter import LAYOUT_KEY, export_onnx
from evit_export.targets.onnx.options import OnnxOptions

_QUANT_SUFFIXES = ("_quantized", "quantized")
_DEQUANT_SUFFIX = "_DequantizeLinear_Output"


def _activations(proto, x: np.ndarray, batch: int | None) -> dict[str, np.ndarray]:
    """Every node output of ``proto`` (float or integer) on ``x``, one image per run,
    graph optimizations off so no tensor is fused away."""
    import onnx
    import onnxruntime as ort

    inferred = onnx.shape_inference.infer_shapes(proto)
    typed = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    present = {o.name for o in inferred.graph.output}
    elem = {i.name: i.data_type for i in inferred.graph.initializer}
    elem.update({v.name: v.type.tensor_type.elem_type for v in inferred.graph.input})
    for node in inferred.graph.node:
        # contrib QLinear ops get no inferred type: propagate it (quantizing ops give the
        # activation type, DequantizeLinear float, data movers their input's)
        if node.op_type.startswith("QLinear") or node.op_type == "QuantizeLinear":
            out_type = elem.get(node.input[2], onnx.TensorProto.UINT8) if node.op_type == "QuantizeLinear" \
                else onnx.TensorProto.UINT8
        elif node.op_type == "DequantizeLinear":
            out_type = onnx.TensorProto.FLOAT
        else:
            out_type = elem.get(node.input[0], onnx.TensorProto.FLOAT) if node.input else onnx.TensorProto.FLOAT
        for name in node.output:
            if not name:
                continue
            known = typed.get(name)
            elem[name] = known.type.tensor_type.elem_type if known is not None else out_type
            if name not in present:
                inferred.graph.output.append(known or onnx.helper.make_tensor_value_info(name, elem[name], None))
                present.add(name)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(inferred.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(names, {INPUT_NAME: np.repeat(x[i:i + 1], batch or 1, axis=0)}) for i in range(len(x))]
    return {name: np.concatenate([np.asarray(r[j])[:1] if np.ndim(r[j]) else np.asarray(r[j])[None] for r in runs])
            for j, name in enumerate(names)}


def _output_quantization(proto) -> dict[str, tuple[str, str, str]]:
    """quantized tensor -> (scale initializer, zero point initializer, op type) of the node producing it."""
    out = {}
    for node in proto.graph.node:
        if node.op_type in ("QLinearConv", "QLinearMatMul"):
            out[node.output[0]] = (node.input[6], node.input[7], node.op_type)
        elif node.op_type == "QuantizeLinear":
            out[node.output[0]] = (node.input[1], node.input[2], node.op_type)
        elif node.op_type.startswith("QLinear") and node.domain == "com.microsoft" and len(node.input) >= 5:
            # QLinearAdd/Mul/Concat/Sigmoid/Softmax/GlobalAveragePool: output scale and zero point
            # follow the inputs' triples, in an op-specific place
            scale_at = {"QLinearAdd": 6, "QLinearMul": 6, "QLinearConcat": 0, "QLinearSigmoid": 3,
                        "QLinearSoftmax": 3, "QLinearGlobalAveragePool": 3, "QLinearLeakyRelu": 3}.get(node.op_type)
            if scale_at is not None and node.op_type != "QLinearConcat":
                out[node.output[0]] = (node.input[scale_at], node.input[scale_at + 1], node.op_type)
            elif node.op_type == "QLinearConcat":
                out[node.output[0]] = (node.input[0], node.input[1], node.op_type)
    return out


def _float_name(name: str) -> str:
    for suffix in (*_QUANT_SUFFIXES, _DEQUANT_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _dequantized(name: str, values: np.ndarray, quantized: dict, inits: dict) -> np.ndarray | None:
    """The float value of a quantized tensor; None for a tensor that is not one."""
    if name.endswith(_DEQUANT_SUFFIX):
        return values.astype(np.float32)
    if name not in quantized:
        return None
    scale, zp = inits.get(quantized[name][0]), inits.get(quantized[name][1])
    if scale is None or zp is None:
        return None
    return (values.astype(np.float32) - zp.astype(np.float32)) * scale.astype(np.float32)


def _producer_ops(proto) -> dict[str, str]:
    return {o: n.op_type for n in proto.graph.node for o in n.output}


def layer_errors(path: Path, spec: ModelSpec, pixels: np.ndarray, deployed) -> list[dict]:
    """One row per tensor quantized in the artifact: tensor, block, op, sqnr_db, cosine."""
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.shape_inference import quant_pre_process


    proto = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    quantized = _output_quantization(proto)
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_value or None
    x = normalize(pixels, spec).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="evit-per-layer-") as d:
        float_path, pre = Path(d) / "fp32.onnx", Path(d) / "fp32.pre.onnx"
        # the float twin is traced in the artifact's attention layout, so tensor names agree
        # (artifacts from before the layout was recorded were all "channels")
        layout = next((e.value for e in proto.metadata_props if e.key == LAYOUT_KEY), "channels")
        export_onnx(deployed, spec.replace(notes=[]), float_path, OnnxOptions(batch=batch, attention_layout=layout))
        quant_pre_process(str(float_path), str(pre), skip_symbolic_shape=True)
        float_proto = onnx.load(str(pre))
    float_ops = _producer_ops(float_proto)
    floats = _activations(float_proto, x, batch)
    # int8 convs carry the ReLU that follows them (the output range starts at 0): compare
    # such a tensor with the float ReLU's output
    after_relu = {n.input[0]: n.output[0] for n in float_proto.graph.node if n.op_type == "Relu"}
    got = _activations(proto, x, batch)
    rows = []
    for name, values in got.items():
        deq = _dequantized(name, values, quantized, inits)
        base = _float_name(name)
        if deq is None or base not in floats or deq.shape != floats[base].shape:
            continue
        reference = floats[base]
        if base in after_relu and after_relu[base] not in got and (deq >= 0).all() and (reference < 0).any():
            reference = floats[after_relu[base]]
        rows.append({"tensor": base, "block": block_of(base), "op": op_kind(float_ops.get(base, "?")),
                     **tensor_error(reference, deq)})
    return rows
