"""Reading a .pte back without running it: the program (ExecuTorch's own flatbuffer
reader), the spec in its constant method, the forward method's I/O, the kernels it
calls outside any delegate, the nodes inside each XNNPACK partition, and the
memory-planned arena. Nothing here loads the runtime."""
from __future__ import annotations

import json
import math
import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from evit_export.targets.base import SPEC_KEY, TensorInfo, parse_spec

from evit_export.core.errors import UserError

# The method holding the ModelSpec JSON: a constant method returns its string without
# running a kernel, so the runtime on a phone (``Module.execute``) reads it like we do.
SPEC_METHOD = SPEC_KEY
FORWARD = "forward"
XNNPACK_BACKEND = "XnnpackBackend"
PTE_IDENTIFIER = b"ET"  # the flatbuffer file identifier is "ET" + a schema version ("ET12")

# executorch's ScalarType codes (schema/scalar_type.fbs) this tool's programs use.
_SCALAR_TYPES = {0: "uint8", 1: "int8", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 11: "bool"}


def read_pte_bytes(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: check the artifact path")
    data = path.read_bytes()
    if len(data) < 8 or data[4:6] != PTE_IDENTIFIER:
        raise UserError(f"{path} is not an ExecuTorch program (no ET flatbuffer header): pass a .pte file "
                        "exported by evit-export or executorch")
    return data


def quiet_executorch_import() -> None:
    """Importing executorch registers torchao's enums with torch's pytree, which logs a
    deprecation line addressed to torchao's developers on every run: not for our users."""
    import logging

    from evit_export.core.optional import require

    require("executorch")
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def load_program(path: Path):
    """(the deserialised PTE file, its bytes); a UserError for a damaged or foreign file."""
    quiet_executorch_import()
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = read_pte_bytes(path)
    try:
        return deserialize_pte_binary(data), data
    except Exception as e:  # noqa: BLE001 - flatc / flatbuffer errors of many kinds for a damaged file
        first = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise UserError(f"{path} is not a readable ExecuTorch program ({first}): re-export it") from None


def execution_plan(pte, name: str):
    return next((plan for plan in pte.program.execution_plan if plan.name == name), None)


def spec_text_from_pte(pte) -> str | None:
    plan = execution_plan(pte, SPEC_METHOD)
    if plan is None or not plan.outputs:
        return None
    value = plan.values[plan.outputs[0]].val
    return getattr(value, "string_val", None)


def _tensor(plan, index: int):
    return plan.values[index].val


def describe_pte(pte) -> dict[str, list[TensorInfo]]:
    plan = execution_plan(pte, FORWARD)
    if plan is None:
        raise UserError("the program has no forward method: it was not exported by evit-export")
    spec = parse_spec(spec_text_from_pte(pte))

    def info(index, role):
        t = _tensor(plan, index)
        dtype = _SCALAR_TYPES.get(int(t.scalar_type), str(t.scalar_type))
        if role == "input":
            rng = ("normalized ((x/255 - mean)/std), mean/std in the spec method" if spec is None
                   or spec.input_range == "normalized" else spec.input_range)
            return TensorInfo(f"input_{index}", list(t.sizes), dtype, "NCHW", rng)
        return TensorInfo(f"output_{index}", list(t.sizes), dtype, "NC", "logits")

    return {"inputs": [info(i, "input") for i in plan.inputs], "outputs": [info(i, "output") for i in plan.outputs]}


@dataclass
class ProgramSummary:
    kernel_ops: Counter = field(default_factory=Counter)  # operators run outside delegates
    delegated_ops: Counter = field(default_factory=Counter)  # XNNPACK node types inside partitions
    partitions: Counter = field(default_factory=Counter)  # backend id -> delegate calls
    params: int = 0
    arena_bytes: int = 0
    buffer_sizes: list = field(default_factory=list)


def summarise(pte) -> ProgramSummary:
    """What the forward method runs: kernel calls, delegate calls and the nodes in
    each XNNPACK blob, parameters (delegate constants + program constants), arena."""
    plan = execution_plan(pte, FORWARD)
    if plan is None:
        raise UserError("the program has no forward method: it was not exported by evit-export")
    summary = ProgramSummary(buffer_sizes=list(plan.non_const_buffer_sizes))
    summary.arena_bytes = int(sum(plan.non_const_buffer_sizes))
    for chain in plan.chains:
        for instruction in chain.instructions:
            args = instruction.instr_args
            kind = type(args).__name__
            if kind == "KernelCall":
                summary.kernel_ops[plan.operators[args.op_index].name] += 1
            elif kind == "DelegateCall":
                delegate = plan.delegates[args.delegate_index]
                summary.partitions[delegate.id] += 1
                if delegate.id == XNNPACK_BACKEND:
                    blob = pte.program.backend_delegate_data[delegate.processed.index].data
                    nodes, params = xnnpack_graph_summary(bytes(blob))
                    summary.delegated_ops.update(nodes)
                    summary.params += params
    # Constant tensors the program itself holds (outside delegates): buffer index > 0.
    for value in plan.values:
        t = value.val
        if type(t).__name__ == "Tensor" and getattr(t, "data_buffer_idx", 0) > 0 and getattr(t, "allocation_info",
                                                                                              None) is None:
            summary.params += math.prod(t.sizes) if t.sizes else 1
    return summary


@lru_cache(maxsize=1)
def _xnnpack_schema() -> bytes:
    from importlib import resources

    return resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs").read_bytes()


def _flatc() -> str:
    from executorch.exir._serialize._flatbuffer import _get_flatc_path  # the flatc executorch ships

    return _get_flatc_path()


# flatc writes non-finite floats (clamp bounds) as bare inf/nan, which JSON does not have.
_NON_FINITE = re.compile(rb":\s*(-?)(inf|nan)\b")


def xnnpack_graph_summary(blob: bytes) -> tuple[Counter, int]:
    """(node type -> count, constant parameter count) of one XNNPACK delegate blob:
    an XNNPACK header ("XH00") naming where its flatbuffer lies, decoded with flatc."""
    if blob[4:8] != b"XH00":
        return Counter({"<unreadable XNNPACK blob>": 1}), 0
    offset = int.from_bytes(blob[10:14], "little")
    size = int.from_bytes(blob[14:18], "little")
    with tempfile.TemporaryDirectory(prefix="evit-pte-") as d:
        schema, graph = Path(d) / "schema.fbs", Path(d) / "graph.bin"
        schema.write_bytes(_xnnpack_schema())
        graph.write_bytes(blob[offset:offset + size])
        proc = subprocess.run([_flatc(), "--json", "--strict-json", "--raw-binary", "-o", d, str(schema), "--",
                               str(graph)], capture_output=True, check=False)
        out = Path(d) / "graph.json"
        if proc.returncode != 0 or not out.exists():
            return Counter({"<unreadable XNNPACK blob>": 1}), 0
        text = _NON_FINITE.sub(lambda m: b': "' + m.group(1) + m.group(2) + b'"', out.read_bytes())
    graph_json = json.loads(text)
    nodes = Counter(_xnn_op_name(n["xnode_union_type"]) for n in graph_json.get("xnodes", []))
    params = 0
    for value in graph_json.get("xvalues", []):
        union = value.get("xvalue_union", {})
        tensor = union.get("tensor_value", union)
        if tensor.get("constant_buffer_idx", 0):
            params += math.prod(tensor.get("dims") or [1])
    return nodes, params


def _xnn_op_name(union_type: str) -> str:
    """``XNNConv2d`` -> ``Conv2d``: XNNPACK's node type, as inspect lists it."""
    return union_type.removeprefix("XNN")


def spec_json(text: str | None) -> dict | None:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
