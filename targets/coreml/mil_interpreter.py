"""A numpy interpreter for CoreML ML Programs, so exported models can be checked
where CoreML itself cannot run (coremltools predicts on macOS only).

It reads a saved ``.mlpackage`` (the spec protobuf; its values through coremltools'
own MIL loader and ``libmilstoragepython`` blob reader; compressed weights expanded
once at load time by the ``decompress`` of coremltools' own constexpr op
definitions) and evaluates the ``main`` function op by op:

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

import functools
import inspect
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError

from evit_export.targets.coreml import mil_ops
from evit_export.targets.coreml.files import coremltools_reader as coremltools
from evit_export.targets.coreml.files import integrity_problems, read_model_spec


class UnsupportedOpError(UserError):
    """The program uses a MIL op this interpreter does not implement."""


_TUPLE_INPUTS = {("concat", "values"), ("stack", "values"), ("classify", "classes")}


@functools.cache
def mil_types():
    """coremltools' MIL type system (imported on first use, after the import-order guard)."""
    coremltools()
    from coremltools.converters.mil.mil import types

    return types


# --------------------------------------------------------------------------- types and values

def tensor_type(value_type):
    """(MIL builtin type, shape with None for a free dimension) of a tensor value type;
    (None, None) for any other type."""
    if value_type.WhichOneof("type") != "tensorType":
        return None, None
    t = value_type.tensorType
    dims = [int(d.constant.size) if d.WhichOneof("dimension") == "constant" else None for d in t.dimensions]
    return mil_types().PROTO_TO_BUILTIN_TYPE.get(t.dataType), dims  # None: a type this coremltools lacks


def storage_dtype(builtin) -> type | None:
    """The numpy dtype values of a MIL type are stored in (sub-byte types in 8 bits);
    None for strings and non-tensors, which are kept as they are."""
    if builtin is None:
        return None
    dtype = mil_types().nptype_from_builtin(builtin)
    return dtype if np.dtype(dtype).kind in "biuf" else None


class _ValueLoader:
    """Immediate and weight-file values through coremltools' own MIL protobuf loader
    (``milproto.load._load_value``: immediates, sub-byte unpacking, and blobs through
    libmilstoragepython's BlobReader). It is private in coremltools 9.0, which has no
    public reader for single values; the rest of that loader builds a whole PyMIL
    program, which would stop at the first damaged blob instead of naming every one."""

    def __init__(self, weights_dir: Path):
        coremltools()
        from coremltools.converters.mil.frontend.milproto import load as milproto_load

        self._load = milproto_load._load_value
        self._context = milproto_load.TranscriptionContext(str(weights_dir))
        self.weights_dir = Path(weights_dir)

    def immediate(self, value, where: str):
        kind = value.immediateValue.WhichOneof("value")
        if kind in ("list", "tuple"):
            # coremltools' loader reads tensors only; a list (classify's class labels)
            # is its elements, each one read by it.
            return [self.immediate(v, where) for v in getattr(value.immediateValue, kind).values]
        try:
            return self._load(self._context, value)
        except NotImplementedError as e:
            raise UnsupportedOpError(f"{where}: immediate value not implemented by the MIL interpreter ({e})") \
                from None

    def blob(self, value, where: str):
        """The weights at the value's offset; raises UserError naming the file, or
        ValueError/RuntimeError from coremltools' reader for a damaged blob."""
        name = value.blobFileValue.fileName.split("/")[-1]
        if not (self.weights_dir / name).is_file():
            raise UserError(f"{where}: weight file {name} is missing: re-export the model")
        return self._load(self._context, value)


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
        self.problems: list[str] = []  # weights that could not be read (lenient mode)
        self.lenient = lenient
        self._values = _ValueLoader(self.model_file.parent / "weights")
        prog = proto.mlProgram
        if "main" not in prog.functions:
            raise UserError(f"{path} has no 'main' function: not a model evit-export can check")
        fn = prog.functions["main"]
        block = fn.block_specializations[fn.opset]
        self.inputs = {}
        for inp in fn.inputs:
            builtin, shape = tensor_type(inp.type)
            self.inputs[inp.name] = (storage_dtype(builtin) or np.float32, shape)
        self.outputs = list(block.outputs)
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

    def _blob(self, value, where: str):
        """Weights from a weight file; in lenient mode a damaged blob becomes NaNs and a
        line in ``problems`` (so ``check`` can report every damaged blob and still run)."""
        try:
            return self._values.blob(value, where)
        except (RuntimeError, ValueError, IndexError) as e:
            bfv = value.blobFileValue
            msg = f"{bfv.fileName.split('/')[-1]} at offset {bfv.offset} ({where}) is unreadable: {e}"
            if not self.lenient:
                raise UserError(f"{self.path}: {msg}; the package is corrupt, re-export it") from None
            self.problems.append(msg)
            return np.full(tensor_type(value.type)[1], np.nan, dtype=np.float32)

    def _value(self, value, where: str):
        kind = value.WhichOneof("value")
        if kind == "immediateValue":
            return self._values.immediate(value, where)
        if kind == "blobFileValue":
            return self._blob(value, where)
        raise UnsupportedOpError(f"{where}: value kind {kind} is not implemented")

    def _add(self, index: int, op) -> None:
        out_name = op.outputs[0].name if op.outputs else "?"
        where = f"op #{index} '{op.type}' (output '{out_name}') in function main"
        if op.type == "const":
            self.consts[out_name] = _as_compute(self._value(op.attributes["val"], where))
            return
        if op.blocks:
            raise UnsupportedOpError(f"MIL op '{op.type}' with nested blocks ({where}) is not implemented by "
                                     "the evit-export MIL interpreter")
        consts, variables = self._operands(op, where)
        outputs = [(out.name, storage_dtype(tensor_type(out.type)[0])) for out in op.outputs]
        if op.type.startswith("constexpr_"):
            if variables:
                raise UserError(f"{where}: a constexpr op with non-constant inputs is invalid")
            self._fold_constexpr(op.type, consts, outputs, where)
            return
        if op.type == "classify":
            fn = None
        elif op.type in mil_ops.OPS:
            fn = mil_ops.OPS[op.type]
        else:
            raise UnsupportedOpError(f"MIL op '{op.type}' at {where} is not implemented by the evit-export MIL "
                                     f"interpreter (it evaluates: {', '.join(sorted(mil_ops.OPS))})")
        step = _Step(index, op.type, fn, consts, variables, outputs)
        if op.type == "classify":
            self.classify_op = step
        self.steps.append(step)
        for name, _ in outputs:
            self.producer[name] = step

    def _operands(self, op, where: str) -> tuple[dict, list]:
        """(constant operands by name, [(param, variable names, is_tuple)]). iOS16 constexpr
        ops carry their operands as attributes; those count as constants."""
        consts, variables = {}, []
        if op.type.startswith("constexpr_"):
            consts = {key: self._value(value, where) for key, value in op.attributes.items() if key != "name"}
        for param, arg in op.inputs.items():
            is_tuple = (op.type, param) in _TUPLE_INPUTS or len(arg.arguments) > 1
            names, values = [], []
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "value":
                    values.append(self._value(binding.value, where))
                    names.append(None)
                elif binding.name in self.consts:
                    values.append(self.consts[binding.name])
                    names.append(None)
                else:
                    values.append(None)
                    names.append(binding.name)
            if all(n is None for n in names):
                consts[param] = values if is_tuple else values[0]
            elif any(n is None for n in names):
                raise UnsupportedOpError(f"{where}: mixed constant/variable tuple input '{param}' is not "
                                         "implemented")
            else:
                variables.append((param, names, is_tuple))
        return consts, variables

    def _fold_constexpr(self, op_type: str, consts: dict, outputs: list, where: str) -> None:
        """Evaluate a compressed-weight op once, at load time, with ``decompress`` of
        coremltools' own definition of that op for this program's opset."""
        decompress = _decompressor(op_type, self.proto.specificationVersion)
        if decompress is None:
            raise UnsupportedOpError(f"MIL op '{op_type}' at {where} is not implemented by the evit-export MIL "
                                     "interpreter (coremltools defines no decompress for it)")
        # Operands the op leaves out (an optional offset, vector_axis) are None, as in coremltools.
        operands = {name: consts.get(name) for name in inspect.signature(decompress).parameters}
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                result = decompress(**operands)
        except (TypeError, ValueError, AttributeError, IndexError) as e:
            raise UserError(f"{where}: {op_type} cannot expand its weights ({e}): the package is corrupt, "
                            "re-export it") from None
        for name, dtype in outputs[:1]:
            self.consts[name] = _as_compute(_store(np.asarray(result), dtype))

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
    def verify_integrity(self) -> list[str]:
        """Problems found: unreadable weights, and digests that differ from those the
        exporter sealed into the model's metadata (none recorded: nothing to compare)."""
        return [f"corrupt weights: {p}" for p in self.problems] + integrity_problems(self.proto, self.path)


def _store(value, dtype):
    """Store an op output in its declared dtype (fp16 rounds; overflow becomes inf)."""
    if dtype is None or not isinstance(value, np.ndarray) and not np.isscalar(value):
        return value
    value = np.asarray(value)
    if value.dtype == dtype:
        return value
    with np.errstate(over="ignore", invalid="ignore"):
        return value.astype(dtype)


def _as_compute(value):
    """A constant as the ops read it: fp16 widened to fp32 (exact; ops compute in fp32)."""
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def _decompressor(op_type: str, specification_version: int):
    """``decompress`` of coremltools' definition of the constexpr op ``op_type`` for the
    opset of a model of this specification version (iOS16 and iOS18 define
    ``constexpr_lut_to_dense`` differently); None when coremltools has none."""
    ct = coremltools()
    from coremltools.converters.mil.mil.ops.registry import SSAOpRegistry

    variants = SSAOpRegistry.core_ops.get(op_type)
    if not variants:
        return None
    try:
        opset = ct.target(specification_version)
    except ValueError:  # a newer specification than this coremltools knows: its newest ops
        opset = max(variants)
    usable = [v for v in variants if v <= opset]
    return getattr(variants[max(usable)], "decompress", None) if usable else None
