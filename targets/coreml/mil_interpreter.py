"""A numpy interpreter for CoreML ML Programs, so exported models can be checked
where CoreML itself cannot run (coremltools predicts on macOS only).

It reads a saved ``.mlpackage`` (the spec protobuf and the weight blobs through
coremltools' ``libmilstoragepython`` blob reader) and evaluates the ``main``
function op by op:

- Every op computes in float32 and its outputs are stored in the dtype the program
  declares for them, so an fp16 program rounds (and overflows to inf) after every
  op as CoreML's fp16 execution does; ``cast`` converts exactly as declared.
- Image inputs arrive as the float pixel values (0..255) of the 8-bit image,
  as CoreML hands an ML Program its image; the program's own ops (scale, bias)
  do the rest. ``classify`` outputs the label and the probabilities in class order.
- An op the interpreter does not implement fails at load time with an error
  naming the op type, its output and its position; nothing passes through silently.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError

from evit_export.targets.coreml import mil_ops


class UnsupportedOpError(UserError):
    """The program uses a MIL op this interpreter does not implement."""


# MIL DataType enum (MIL.proto) -> numpy dtype, and the blob-reader method for it.
_DTYPES = {1: np.bool_, 2: np.object_, 10: np.float16, 11: np.float32, 12: np.float64, 21: np.int8,
           22: np.int16, 23: np.int32, 24: np.int64, 25: np.int8, 31: np.uint8, 32: np.uint16,
           33: np.uint32, 34: np.uint64, 35: np.uint8, 36: np.uint8, 37: np.uint8, 38: np.uint8, 39: np.uint8}
_SUB_BYTE_BITS = {25: 4, 35: 4, 36: 2, 37: 1, 38: 6, 39: 3}
_BLOB_READERS = {10: "read_fp16_data", 11: "read_float_data", 21: "read_int8_data", 22: "read_int16_data",
                 23: "read_int32_data", 25: "read_int4_data", 31: "read_uint8_data", 32: "read_uint16_data",
                 33: "read_uint32_data", 35: "read_uint4_data", 36: "read_uint2_data", 37: "read_uint1_data",
                 38: "read_uint6_data", 39: "read_uint3_data"}
_TUPLE_INPUTS = {("concat", "values"), ("stack", "values"), ("classify", "classes")}


# --------------------------------------------------------------------------- files

def _proto_module():
    from evit_export.core.import_order import tf_safe

    tf_safe()
    from coremltools.proto import Model_pb2

    return Model_pb2


def model_file_of(path: Path) -> Path:
    """The spec file inside an .mlpackage (via its Manifest.json), or the .mlmodel itself."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist: check the artifact path")
    if path.suffix.lower() == ".mlmodel":
        if not path.is_file():
            raise UserError(f"{path} is not a file: a .mlmodel is a single protobuf file")
        return path
    if not path.is_dir():
        raise UserError(f"{path} is not an mlpackage (not a folder): pass the .mlpackage folder that "
                        "coremltools or evit-export wrote")
    manifest = path / "Manifest.json"
    try:
        data = json.loads(manifest.read_text())
        root = data["itemInfoEntries"][data["rootModelIdentifier"]]["path"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not an mlpackage (no readable Manifest.json naming the model): pass the "
                        ".mlpackage folder that coremltools or evit-export wrote") from None
    model_file = path / "Data" / root
    if not model_file.is_file():
        raise UserError(f"{path} is not a complete mlpackage ({root} is missing): re-export it")
    return model_file


def read_model_spec(path: Path):
    """(Model protobuf, the file it came from)."""
    from google.protobuf.message import DecodeError

    model_file = model_file_of(path)
    proto = _proto_module().Model()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except (DecodeError, ValueError) as e:
        raise UserError(f"{path} does not hold a CoreML model spec ({str(e)[:80]}): re-export it") from None
    if proto.WhichOneof("Type") is None:
        raise UserError(f"{path} does not hold a CoreML model spec: re-export it")
    return proto, model_file


def write_model_spec(proto, model_file: Path) -> None:
    Path(model_file).write_bytes(proto.SerializeToString())


def weight_files(model_file: Path) -> list[Path]:
    weights = Path(model_file).parent / "weights"
    return sorted(p for p in weights.rglob("*") if p.is_file()) if weights.is_dir() else []


def program_digests(proto, package: Path) -> dict:
    """sha256 of the serialized program and of every weight file."""
    model_file = model_file_of(package)
    program = hashlib.sha256(proto.mlProgram.SerializeToString(deterministic=True)).hexdigest()
    weights = {p.relative_to(model_file.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
               for p in weight_files(model_file)}
    return {"program": program, "weights": weights}


# --------------------------------------------------------------------------- values

def _tensor_type(value_type):
    kind = value_type.WhichOneof("type")
    if kind != "tensorType":
        return None, None
    t = value_type.tensorType
    dims = []
    for d in t.dimensions:
        dims.append(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None)
    return t.dataType, dims


def _unpack(raw: bytes, dtype: int, shape: list) -> np.ndarray:
    count = int(np.prod(shape)) if shape else 1
    if dtype in _SUB_BYTE_BITS:
        vals = mil_ops._unpack_bits(np.frombuffer(raw, np.uint8), _SUB_BYTE_BITS[dtype], count)
        if dtype == 25:  # int4: two's complement
            vals = np.where(vals >= 8, vals.astype(np.int64) - 16, vals)
        return vals.astype(_DTYPES[dtype]).reshape(shape)
    return np.frombuffer(raw, _DTYPES[dtype]).reshape(shape).copy()


def _immediate(value, where: str):
    imm = value.immediateValue
    kind = imm.WhichOneof("value")
    if kind == "tensor":
        dtype, shape = _tensor_type(value.type)
        t = imm.tensor
        which = t.WhichOneof("value")
        if which == "bytes":
            return _unpack(t.bytes.values, dtype, shape or [])
        raw = list(getattr(t, which).values)
        if dtype == 2:
            arr = np.array(raw, dtype=object)
        else:
            arr = np.array(raw, dtype=_DTYPES.get(dtype, np.float32))
        return arr.reshape(shape) if shape is not None and None not in shape else arr
    if kind == "list":
        return [_immediate(v, where) for v in imm.list.values]
    if kind == "tuple":
        return [_immediate(v, where) for v in imm.tuple.values]
    raise UnsupportedOpError(f"{where}: immediate {kind} values are not implemented by the MIL interpreter")


@dataclass
class _Step:
    index: int
    type: str
    fn: object
    consts: dict
    vars: list  # (param, [var names], is_tuple)
    outputs: list  # (name, numpy dtype or None)
    cache: dict = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"op #{self.index} ({self.type} -> {self.outputs[0][0] if self.outputs else '?'})"


class MILProgram:
    """The ``main`` function of an ML Program, ready to evaluate."""

    def __init__(self, proto, model_file: Path, path: Path, lenient: bool = False):
        self.proto = proto
        self.path = Path(path)
        self.model_file = Path(model_file)
        self.weights_dir = self.model_file.parent / "weights"
        self.problems: list[str] = []  # weights that could not be read (lenient mode)
        self._readers: dict = {}
        self.lenient = lenient
        prog = proto.mlProgram
        if "main" not in prog.functions:
            raise UserError(f"{path} has no 'main' function: not a model evit-export can check")
        fn = prog.functions["main"]
        block = fn.block_specializations[fn.opset]
        self.inputs = {}
        for inp in fn.inputs:
            dtype, shape = _tensor_type(inp.type)
            self.inputs[inp.name] = (_DTYPES.get(dtype, np.float32), shape)
        self.outputs = list(block.outputs)
        desc_inputs = {f.name: f.type.WhichOneof("Type") for f in proto.description.input}
        self.input_is_image = any(kind == "imageType" for kind in desc_inputs.values())
        first_shape = next(iter(self.inputs.values()))[1] if self.inputs else None
        self.batch = first_shape[0] if first_shape else None
        self.consts: dict[str, object] = {}
        self.steps: list[_Step] = []
        self.producer: dict[str, _Step] = {}
        self.classify_op: _Step | None = None
        for i, op in enumerate(block.operations):
            self._add(i, op)

    # ---- loading
    @classmethod
    def load(cls, path: Path, lenient: bool = False) -> "MILProgram":
        proto, model_file = read_model_spec(Path(path))
        kind = proto.WhichOneof("Type")
        if kind != "mlProgram":
            raise UserError(f"{path} is a NeuralNetwork model ({kind}): the MIL interpreter evaluates ML "
                            "Programs only; re-export with --format mlprogram, or check it on macOS")
        return cls(proto, model_file, Path(path), lenient=lenient)

    def _blob(self, bfv, dtype: int, shape: list, where: str):
        name = bfv.fileName.split("/")[-1]
        file = self.weights_dir / name
        if dtype not in _BLOB_READERS:
            raise UnsupportedOpError(f"{where}: weights of MIL dtype {dtype} are not implemented")
        try:
            reader = self._readers.get(name)
            if reader is None:
                if not file.is_file():
                    raise UserError(f"{self.path}: weight file {name} is missing: re-export the model")
                from coremltools import libmilstoragepython

                reader = self._readers[name] = libmilstoragepython._BlobStorageReader(str(file))
            data = getattr(reader, _BLOB_READERS[dtype])(int(bfv.offset))
            if dtype == 10:
                data = data.view(np.float16)
            arr = np.asarray(data)
            count = int(np.prod(shape)) if shape else 1
            if arr.size != count:
                raise ValueError(f"blob holds {arr.size} values, the program declares {count}")
            return arr.reshape(shape)
        except (RuntimeError, ValueError, IndexError) as e:
            msg = f"{name} at offset {bfv.offset} ({where}) is unreadable: {e}"
            if not self.lenient:
                raise UserError(f"{self.path}: {msg}; the package is corrupt, re-export it") from None
            self.problems.append(msg)
            return np.full(shape, np.nan, dtype=np.float32)

    def _value(self, value, where: str):
        kind = value.WhichOneof("value")
        if kind == "immediateValue":
            return _immediate(value, where)
        if kind == "blobFileValue":
            dtype, shape = _tensor_type(value.type)
            arr = self._blob(value.blobFileValue, dtype, shape, where)
            return arr.astype(np.float32) if arr.dtype == np.float16 else arr
        raise UnsupportedOpError(f"{where}: value kind {kind} is not implemented")

    def _add(self, index: int, op) -> None:
        out_name = op.outputs[0].name if op.outputs else "?"
        where = f"op #{index} '{op.type}' (output '{out_name}') in function main"
        if op.type == "const":
            val = self._value(op.attributes["val"], where)
            if isinstance(val, np.ndarray) and val.dtype == np.float16:
                val = val.astype(np.float32)  # exact; ops compute in fp32 anyway
            self.consts[out_name] = val
            return
        if op.blocks:
            raise UnsupportedOpError(f"MIL op '{op.type}' with nested blocks ({where}) is not implemented by "
                                     "the evit-export MIL interpreter")
        if op.type == "classify":
            fn = None
        elif op.type in mil_ops.OPS:
            fn = mil_ops.OPS[op.type]
        elif op.type in mil_ops.CONSTEXPR_OPS:
            fn = mil_ops.CONSTEXPR_OPS[op.type]
        else:
            raise UnsupportedOpError(f"MIL op '{op.type}' at {where} is not implemented by the evit-export MIL "
                                     f"interpreter (it evaluates: {', '.join(sorted(mil_ops.OPS))})")
        consts, variables = {}, []
        if op.type in mil_ops.CONSTEXPR_OPS:
            # iOS16 constexpr ops carry their operands as attributes
            for key, value in op.attributes.items():
                if key != "name":
                    consts[key] = self._value(value, where)
        for param, arg in op.inputs.items():
            is_tuple = (op.type, param) in _TUPLE_INPUTS or len(arg.arguments) > 1
            names, values, all_const = [], [], True
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "value":
                    values.append(self._value(binding.value, where))
                    names.append(None)
                elif binding.name in self.consts:
                    values.append(self.consts[binding.name])
                    names.append(None)
                else:
                    all_const = False
                    values.append(None)
                    names.append(binding.name)
            if all_const:
                consts[param] = values if is_tuple else values[0]
            else:
                if any(n is None for n in names):
                    raise UnsupportedOpError(f"{where}: mixed constant/variable tuple input '{param}' is not "
                                             "implemented")
                variables.append((param, names, is_tuple))
        outputs = []
        for out in op.outputs:
            dtype, _ = _tensor_type(out.type)
            outputs.append((out.name, _DTYPES.get(dtype) if dtype is not None else None))
        step = _Step(index, op.type, fn, consts, variables, outputs)
        if op.type in mil_ops.CONSTEXPR_OPS:
            if variables:
                raise UserError(f"{where}: a constexpr op with non-constant inputs is invalid")
            result = fn(dict(consts), step.cache)
            for (name, dtype), value in zip(outputs, result):
                value = _store(value, dtype)
                self.consts[name] = value.astype(np.float32) if value.dtype == np.float16 else value
            return
        if op.type == "classify":
            self.classify_op = step
        self.steps.append(step)
        for name, _ in outputs:
            self.producer[name] = step

    # ---- running
    def _check_inputs(self, feeds: dict) -> dict:
        env = {}
        for name, (dtype, shape) in self.inputs.items():
            if name not in feeds:
                raise ValueError(f"missing input {name!r}")
            x = np.asarray(feeds[name])
            if shape and None not in shape and list(x.shape) != list(shape):
                raise ValueError(f"input {name!r} has shape {list(x.shape)}, the program expects {shape}")
            env[name] = x.astype(dtype, copy=False)
        return env

    def _execute(self, env: dict, on_output=None) -> dict:
        # inf/nan propagate as CoreML's would (fp16 overflow is what checks look for)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._steps(env, on_output)

    def _steps(self, env: dict, on_output) -> dict:
        for step in self.steps:
            p = dict(step.consts)
            for param, names, is_tuple in step.vars:
                p[param] = [env[n] for n in names] if is_tuple else env[names[0]]
            if step.fn is None:  # classify
                probs = np.asarray(p["probabilities"], np.float32)
                classes = list(np.asarray(p["classes"]).reshape(-1))
                label = [classes[i] for i in probs.reshape(-1, probs.shape[-1]).argmax(-1)]
                results = [np.array(label, dtype=object), probs]
                for (name, _), value in zip(step.outputs, results):
                    env[name] = value
                continue
            try:
                results = step.fn(p, step.cache)
            except NotImplementedError as e:
                raise UnsupportedOpError(f"{step.where}: {e}") from None
            for (name, dtype), value in zip(step.outputs, results):
                value = _store(value, dtype)
                env[name] = value
                if on_output is not None:
                    on_output(step, name, value)
        return env

    def run(self, feeds: dict, keep: list[str] | None = None) -> dict:
        """Block outputs (and the ``keep`` variables) for one batch of inputs."""
        env = self._execute(self._check_inputs(feeds))
        out = {name: env[name] for name in self.outputs}
        for name in keep or []:
            out[name] = env[name]
        return out

    def trace(self, feeds: dict) -> list[tuple[str, np.ndarray]]:
        """Every op output in execution order, named ``op_type:output``."""
        trace: list[tuple[str, np.ndarray]] = []

        def record(step, name, value):
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                trace.append((f"{step.type}:{name}", value))

        self._execute(self._check_inputs(feeds), on_output=record)
        return trace

    def logits_before_softmax(self) -> str | None:
        """The variable feeding the softmax whose result ``classify`` reports (through casts)."""
        if self.classify_op is None:
            return None
        name = next(names[0] for param, names, _ in self.classify_op.vars if param == "probabilities")
        step = self.producer.get(name)
        while step is not None and step.type in ("cast", "identity"):
            name = next(names[0] for param, names, _ in step.vars if param == "x")
            step = self.producer.get(name)
        if step is None or step.type != "softmax":
            return None
        return next(names[0] for param, names, _ in step.vars if param == "x")

    # ---- integrity
    def verify_integrity(self, key: str) -> list[str]:
        """Problems found: unreadable weights, and digests that differ from those the
        exporter sealed into the model's metadata (none recorded: nothing to compare)."""
        problems = [f"corrupt weights: {p}" for p in self.problems]
        sealed = self.proto.description.metadata.userDefined.get(key)
        if not sealed:
            return problems
        try:
            want = json.loads(sealed)
        except ValueError:
            return problems + ["integrity record in the model metadata is unreadable"]
        have = program_digests(self.proto, self.path)
        if have["program"] != want.get("program"):
            problems.append("the ML Program differs from the one exported (model.mlmodel was edited)")
        for name, digest in want.get("weights", {}).items():
            got = have["weights"].get(name)
            if got is None:
                problems.append(f"weight file {name} is missing")
            elif got != digest:
                problems.append(f"weight file {name} differs from the one exported (corrupted or edited)")
        return problems


def _store(value, dtype):
    """Store an op output in its declared dtype (fp16 rounds; overflow becomes inf)."""
    if dtype is None or not isinstance(value, np.ndarray) and not np.isscalar(value):
        return value
    value = np.asarray(value)
    if value.dtype == dtype:
        return value
    with np.errstate(over="ignore", invalid="ignore"):
        return value.astype(dtype)


# --------------------------------------------------------------------------- summary (inspect)

def program_summary(proto, path: Path) -> tuple[Counter, int, dict]:
    """Op histogram (without ``const``), parameter count and a few facts, read from the
    spec alone (no weights loaded)."""
    fn = proto.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    hist: Counter = Counter()
    params = 0
    consts = 0
    feeds_constexpr = set()
    for op in block.operations:
        if op.type.startswith("constexpr_"):
            for arg in op.inputs.values():
                feeds_constexpr.update(b.name for b in arg.arguments if b.WhichOneof("binding") == "name")
    for op in block.operations:
        if op.type == "const":
            consts += 1
            if op.outputs[0].name in feeds_constexpr:
                continue
            dtype, shape = _tensor_type(op.outputs[0].type)
            if dtype in (10, 11, 12) and shape:
                params += int(np.prod(shape))
            continue
        hist[op.type] += 1
        if op.type.startswith("constexpr_"):
            _, shape = _tensor_type(op.outputs[0].type)
            params += int(np.prod(shape)) if shape else 0
    dtypes = Counter()
    for op in block.operations:
        if op.type != "const":
            for out in op.outputs:
                dt, _ = _tensor_type(out.type)
                if dt is not None:
                    dtypes[{10: "fp16", 11: "fp32"}.get(dt, str(dt))] += 1
    extra = {"opset": fn.opset, "const_ops": consts, "activation_dtypes": dict(dtypes)}
    return hist, params, extra
