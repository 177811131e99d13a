"""Reading an .onnx file back: its proto, embedded spec, I/O tensors, op histogram and
per-op-type kernel time (onnxruntime's profiler)."""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError

from evit_export.targets.base import SPEC_KEY, TensorInfo, parse_spec


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


def describe_proto(proto) -> dict[str, list[TensorInfo]]:
    import onnx

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


def op_histogram(proto) -> Counter:
    return Counter(node.op_type for node in proto.graph.node)


def parameter_count(proto) -> int:
    return int(sum(np.prod(t.dims) if len(t.dims) else 1 for t in proto.graph.initializer))


def profile_node_time(path: Path, runs: int = 10, threads: int = 1) -> tuple[dict[str, tuple[str, float]], object]:
    """(node name -> (op type, median kernel ms per run), the optimized graph onnxruntime ran):
    onnxruntime's profiler over ``runs`` calls on random input (a free batch dimension: 1).
    The median, not the mean: the profiler cannot skip the first call, which pays for
    first-touch allocations, and a shared machine's stalls hit single calls."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.log_severity_level = 3  # saving the optimized graph warns that it is machine-specific: we only read it
    with tempfile.TemporaryDirectory() as d:
        opts.profile_file_prefix = str(Path(d) / "prof")
        opts.optimized_model_filepath = str(Path(d) / "optimized.onnx")
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [s if isinstance(s, int) else 1 for s in inp.shape]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        for _ in range(runs):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
        optimized = onnx.load(opts.optimized_model_filepath).graph
    calls: dict[str, tuple[str, list[float]]] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            name = ev["name"][:-len("_kernel_time")]
            calls.setdefault(name, (ev.get("args", {}).get("op_name", "?"), []))[1].append(ev.get("dur", 0) / 1e3)
    return {name: (op, float(np.median(ms))) for name, (op, ms) in calls.items()}, optimized


def profile_op_time(path: Path, runs: int = 10, threads: int = 1) -> dict[str, float]:
    """Share of onnxruntime kernel time per op type (optimised graph)."""
    totals: Counter = Counter()
    for op, ms in profile_node_time(path, runs, threads)[0].values():
        totals[op] += ms
    whole = sum(totals.values()) or 1
    return {op: round(t / whole, 4) for op, t in totals.most_common()}
