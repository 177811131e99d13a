"""Reading and editing a .tflite flatbuffer through LiteRT's own schema bindings
(``flatbuffer_utils`` object API: ``ModelT``), never TensorFlow: metadata, tensor
names, op histogram, parameters, I/O description."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError

from evit_export.targets.base import SPEC_KEY, TensorInfo, parse_spec
from evit_export.core.optional import require

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier at bytes 4..8


def _fbu():
    require("ai_edge_litert")
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils


def read_model(data: bytes):
    """The flatbuffer as LiteRT's object API ``ModelT``; ValueError for anything else."""
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ValueError("not a TFLite flatbuffer")
    return _fbu().read_model_from_bytearray(bytearray(data))


def write_model(model) -> bytes:
    return bytes(_fbu().convert_object_to_bytearray(model))


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def read_flatbuffer_metadata(data: bytes) -> dict[str, bytes]:
    """{name: bytes} of the model's metadata entries."""
    model = read_model(data)
    out = {}
    for entry in model.metadata or []:
        buf = model.buffers[entry.buffer].data
        out[_text(entry.name)] = bytes(np.asarray(buf, np.uint8)) if buf is not None else b""
    return out


def add_flatbuffer_metadata(data: bytes, entries: dict[str, bytes], output_name: str | None = None,
                            input_name: str | None = None) -> bytes:
    """Append (or replace) metadata entries: each one a new buffer + Metadata table.
    ``output_name`` renames the graph's output tensor (the converter calls it
    "Identity"; the signature already calls it by its key); ``input_name`` likewise
    (quantized models call it "serving_default_image:0")."""
    from ai_edge_litert import schema_py_generated as schema

    model = read_model(data)
    sub = model.subgraphs[0]
    for indices, name in ((sub.outputs, output_name), (sub.inputs, input_name)):
        for idx in indices if name else ():
            sub.tensors[idx].name = name
    model.metadata = [m for m in (model.metadata or []) if _text(m.name) not in entries]
    for name, payload in entries.items():
        buf = schema.BufferT()
        buf.data = np.frombuffer(payload, np.uint8).copy()
        model.buffers.append(buf)
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = len(model.buffers) - 1
        model.metadata.append(meta)
    return write_model(model)


def constant_tensors(model) -> list[tuple[int, str, int]]:
    """(tensor index, name, buffer index) of every tensor with data (weights, biases,
    constant shapes) in the main subgraph; metadata buffers excluded."""
    meta_buffers = {m.buffer for m in model.metadata or []}
    out = []
    for i, tensor in enumerate(model.subgraphs[0].tensors):
        b = tensor.buffer
        if b and b not in meta_buffers and model.buffers[b].data is not None and len(model.buffers[b].data):
            out.append((i, _text(tensor.name), b))
    return out


def read_artifact_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the artifact path")
    data = path.read_bytes()
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise UserError(f"{path} is not a TFLite model: pass a .tflite file")
    return data


def spec_text_from_tflite(path: Path) -> bytes | None:
    data = read_artifact_bytes(path)
    try:
        meta = read_flatbuffer_metadata(data)
    except Exception:  # a damaged flatbuffer fails anywhere inside the generated unpacker
        raise UserError(f"{path} is not a readable TFLite flatbuffer: pass a .tflite file") from None
    return meta.get(SPEC_KEY)


def op_histogram(model) -> Counter:
    """Op names (BuiltinOperator names, or the custom code) of the main subgraph."""
    fbu = _fbu()
    names = []
    for i, code in enumerate(model.operatorCodes):
        if fbu.get_builtin_code_from_operator_code(code) == fbu.BuiltinOperator.CUSTOM:
            names.append(_text(code.customCode) or "CUSTOM")
        else:
            names.append(fbu.opcode_to_name(model, i) or f"BUILTIN_{i}")
    return Counter(names[op.opcodeIndex] for op in model.subgraphs[0].operators)


def parameter_count(model) -> int:
    tensors = model.subgraphs[0].tensors
    return sum(int(np.prod(tensors[i].shape)) if tensors[i].shape is not None and len(tensors[i].shape) else 1
               for i, _, _ in constant_tensors(model))


def describe_interpreter(it, spec_text) -> dict[str, list[TensorInfo]]:
    """I/O tensors of an allocated LiteRT interpreter, with the spec's layout and range."""
    spec = parse_spec(spec_text)
    layout = spec.input_layout if spec else "NHWC"
    rng = ("normalized ((x/255 - mean)/std), mean/std in metadata" if spec is None or
           spec.input_range == "normalized" else "0..255 RGB pixels")

    def info(d, role):
        shape = [int(s) for s in d["shape"]]
        dtype = np.dtype(d["dtype"]).name
        scale, zp = d["quantization"]
        q = f" (quantized: scale {scale:.6g}, zero point {zp})" if scale else ""
        if role == "input":
            return TensorInfo(d["name"], shape, dtype, layout, rng + q)
        return TensorInfo(d["name"], shape, dtype, "NC", "logits" + q)

    return {"inputs": [info(d, "input") for d in it.get_input_details()],
            "outputs": [info(d, "output") for d in it.get_output_details()]}
