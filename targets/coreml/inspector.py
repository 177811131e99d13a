"""What a CoreML artifact is, read from its spec alone (no weights loaded): inputs and
outputs (``describe``) and the op histogram, parameters and size (``inspect``)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.spec import ModelSpec
from evit_export.targets.base import TensorInfo
from evit_export.targets.coreml.files import coremltools_reader, integrity_problems, package_size, read_model_spec
from evit_export.targets.coreml.mil_interpreter import mil_types, tensor_type



def describe_proto(proto, spec: ModelSpec | None) -> dict[str, list[TensorInfo]]:
    """{'inputs': [...], 'outputs': [...]} of a Model protobuf."""
    coremltools_reader()
    from coremltools.proto.FeatureTypes_pb2 import ArrayFeatureType, ImageFeatureType

    colors = {ImageFeatureType.GRAYSCALE: "grayscale", ImageFeatureType.RGB: "RGB", ImageFeatureType.BGR: "BGR"}
    dtypes = {ArrayFeatureType.FLOAT32: "float32", ArrayFeatureType.FLOAT16: "float16",
              ArrayFeatureType.INT32: "int32", ArrayFeatureType.DOUBLE: "float64"}

    def info(feature, role: str) -> TensorInfo:
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            t = feature.type.imageType
            color = colors.get(t.colorSpace, ImageFeatureType.ColorSpace.Name(t.colorSpace))
            return TensorInfo(feature.name, [1, 3, int(t.height), int(t.width)], "image", "NCHW",
                              f"{color} 8-bit image (0..255); x/255 - mean and 1/std built in")
        if kind == "multiArrayType":
            t = feature.type.multiArrayType
            dtype = dtypes.get(t.dataType, ArrayFeatureType.ArrayDataType.Name(t.dataType).lower())
            shape = [int(s) for s in t.shape]
            if role == "output":
                return TensorInfo(feature.name, shape, dtype, "NC", "logits")
            rng = ("normalized ((x/255 - mean)/std), mean/std in metadata"
                   if spec is None or spec.input_range == "normalized" else spec.input_range)
            return TensorInfo(feature.name, shape, dtype, "NCHW", rng)
        if kind == "dictionaryType":
            return TensorInfo(feature.name, [None], "dict[str,float]", "NC", "probabilities")
        if kind == "stringType":
            return TensorInfo(feature.name, [], "string", "-", "class label")
        return TensorInfo(feature.name, [], kind or "?", "-", "")

    return {"inputs": [info(f, "input") for f in proto.description.input],
            "outputs": [info(f, "output") for f in proto.description.output]}


def graph_summary(path: Path) -> tuple[Counter, int, int, dict]:
    """(op histogram, parameter count, bytes on disk, facts) of a saved artifact."""
    path = Path(path)
    proto, _ = read_model_spec(path)

    missing = [p for p in integrity_problems(proto, path) if p.endswith("is missing")]
    if missing:
        raise UserError(f"{path}: {missing[0]}; the package is incomplete: copy it again or re-export it")
    kind = proto.WhichOneof("Type")
    extra: dict = {"model_type": kind, "specification_version": proto.specificationVersion}
    if kind == "mlProgram":
        hist, params, more = program_summary(proto)
        extra.update(more)
    else:
        hist, params = neural_network_summary(proto)
    return hist, params, package_size(path), extra


def program_summary(proto) -> tuple[Counter, int, dict]:
    """Op histogram (without ``const``), parameter count and a few facts of an ML Program."""

    types = mil_types()
    fn = proto.mlProgram.functions["main"]
    ops = fn.block_specializations[fn.opset].operations
    # consts that only feed compressed-weight ops: counted through those ops' outputs
    feeds_constexpr = {b.name for op in ops if op.type.startswith("constexpr_")
                       for arg in op.inputs.values() for b in arg.arguments if b.WhichOneof("binding") == "name"}
    hist: Counter = Counter()
    dtypes: Counter = Counter()
    params = consts = 0
    for op in ops:
        builtin, shape = tensor_type(op.outputs[0].type)
        if op.type == "const":
            consts += 1
            if op.outputs[0].name not in feeds_constexpr and builtin is not None and types.is_float(builtin) \
                    and shape:
                params += int(np.prod(shape))
            continue
        hist[op.type] += 1
        if op.type.startswith("constexpr_"):
            params += int(np.prod(shape)) if shape else 0
        for out in op.outputs:
            out_type, _ = tensor_type(out.type)
            if out_type is not None:
                dtypes[types.builtin_to_string(out_type)] += 1
    extra = {"opset": fn.opset, "const_ops": consts, "activation_dtypes": dict(dtypes)}
    return hist, params, extra


def neural_network_summary(proto) -> tuple[Counter, int]:
    """Layer histogram and weight count of a NeuralNetwork (.mlmodel) spec."""
    nn = getattr(proto, proto.WhichOneof("Type"))
    hist: Counter = Counter()
    params = 0
    for layer in getattr(nn, "layers", []):
        kind = layer.WhichOneof("layer")
        body = getattr(layer, kind)
        if kind == "activation":  # name it by its function (relu, sigmoid, ...)
            hist[body.WhichOneof("NonlinearityType").lower()] += 1
        else:
            hist[kind] += 1
        for field in ("weights", "bias"):
            w = getattr(body, field, None)
            if w is not None and hasattr(w, "floatValue"):
                params += len(w.floatValue) or len(w.float16Value) // 2
    return hist, params

