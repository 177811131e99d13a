"""ExecuTorch export: torch.export of the folded deploy graph, two graph rewrites that
keep it inside XNNPACK, fp16 or PT2E static int8 (XNNPACK quantizer), lowering to the
XNNPACK (or CoreML) delegate, the spec as a constant method, an atomic .pte write."""
from __future__ import annotations

import copy
import time
from pathlib import Path

from evit_export.targets.base import Artifact, write_sidecar
from evit_export.targets.calibration import calibration_record
from evit_export.targets.executorch.inspector import (
    SPEC_METHOD,
    XNNPACK_BACKEND,
    load_program,
    quiet_executorch_import,
    summarise,
)
from evit_export.targets.executorch.options import Backend, ExecuTorchOptions, ExecuTorchPrecision

from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.optional import require
from evit_export.core.spec import ModelSpec


def _half_precision(model):
    """fp16 inside, fp32 at the boundary: callers feed every format the same tensors;
    XNNPACK runs the casts as its own Convert nodes."""
    import torch

    class HalfPrecision(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner.half()

        def forward(self, x):
            return self.inner(x.half()).float()

    return HalfPrecision(copy.deepcopy(model)).eval()


def keep_in_delegate(ep) -> dict[str, int]:
    """Rewrite two patterns XNNPACK does not take, each of which would end a partition
    (and cost a delegate call plus a portable kernel at run time): ``split`` (the deploy
    graph's per-head chunks and q/k/v) becomes one ``slice`` per piece, and a batched
    3-D ``matmul`` becomes ``bmm`` (lowering would otherwise decompose it into
    ``expand_copy`` + ``bmm``, and XNNPACK has no expand). Returns how many of each."""
    import torch

    aten = torch.ops.aten
    graph = ep.graph_module.graph
    counts = {"split": 0, "matmul": 0}
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in (aten.split.Tensor, aten.split_with_sizes.default):
            counts["split"] += _split_to_slices(graph, node, aten)
        elif node.target == aten.matmul.default and _is_plain_bmm(node):
            node.target = aten.bmm.default
            counts["matmul"] += 1
    graph.eliminate_dead_code()
    ep.graph_module.recompile()
    return counts


def _is_plain_bmm(node) -> bool:
    a, b = (arg.meta["val"].shape for arg in node.args[:2])
    return len(a) == len(b) == 3 and a[0] == b[0] and a[2] == b[1]


def _split_to_slices(graph, node, aten) -> int:
    src, sizes = node.args[0], node.args[1]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    length = src.meta["val"].shape[dim]
    if isinstance(sizes, int):  # split(x, n): equal pieces of n, the last one shorter
        sizes = [min(sizes, length - start) for start in range(0, length, sizes)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    users = list(node.users)
    if any(u.target.__name__ != "getitem" for u in users if u.op == "call_function") or any(
            u.op != "call_function" for u in users):
        return 0
    for user in users:
        i = user.args[1]
        with graph.inserting_before(user):
            piece = graph.call_function(aten.slice.Tensor, (src, dim, starts[i], starts[i] + sizes[i]))
        piece.meta = dict(user.meta)
        user.replace_all_uses_with(piece)
        graph.erase_node(user)
    graph.erase_node(node)
    return 1


def _quantize_int8(model, example, pixels, spec: ModelSpec, batch: int):
    """PT2E static int8 with the XNNPACK quantizer (symmetric, per-channel weights),
    calibrated on ``pixels``: ExecuTorch's recipe for XNNPACK's int8 kernels."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from evit_export.core.preprocess import normalize

    quantizer = XNNPACKQuantizer()
    quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    graph = exported(model, example)[0].module()
    prepared = prepare_pt2e(graph, quantizer)
    x = torch.from_numpy(normalize(pixels, spec))
    with torch.no_grad():
        for i in range(len(x)):
            prepared(x[i:i + 1].repeat(batch, 1, 1, 1))
    return convert_pt2e(prepared)


def _partitioners(options: ExecuTorchOptions):
    if options.backend == Backend.COREML:
        from evit_export.core.import_order import tf_safe

        require("coremltools")
        tf_safe()  # coremltools imports TensorFlow when it is installed: torch's triton must come first
        from executorch.backends.apple.coreml.partition import CoreMLPartitioner

        return [CoreMLPartitioner()]
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    return [XnnpackPartitioner()]


def exported(module, example):
    """(torch.export program of ``module`` with ``keep_in_delegate`` applied, rewrite counts)."""
    import torch

    ep = torch.export.export(module, (example,), strict=False)
    return ep, keep_in_delegate(ep)


def _lower(module, example, spec_json: str, options: ExecuTorchOptions) -> tuple[bytes, dict]:
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower

    ep, rewrites = exported(module, example)
    edge = to_edge_transform_and_lower(ep, partitioner=_partitioners(options),
                                       constant_methods={SPEC_METHOD: spec_json})
    program = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
    return bytes(program.buffer), rewrites


def export_executorch(model, spec: ModelSpec, out: Path, options: ExecuTorchOptions | None = None) -> Artifact:
    """Export the folded deploy ``model`` to ``out`` (.pte), atomically."""
    quiet_executorch_import()
    import torch

    options = options or ExecuTorchOptions()
    out = check_writable(Path(out))
    spec = spec.replace(precision=str(options.precision), batch=options.batch, input_layout="NCHW",
                        input_range="normalized", input_dtype="float32")
    spec.toolchain.update(_versions())
    started = time.perf_counter()
    info: dict = {"precision": str(options.precision), "batch": options.batch, "backend": str(options.backend)}
    example = torch.zeros(options.batch, 3, spec.img_size, spec.img_size)
    module = model.eval()
    with torch.no_grad():
        if options.precision == ExecuTorchPrecision.FP16:
            module = _half_precision(module)
        elif options.precision == ExecuTorchPrecision.INT8:
            pixels, info["calibration"] = calibration_record(spec, options.calibration_data,
                                                             options.calibration_size)
            info["quantization"] = ("PT2E static (XNNPACK quantizer): weights int8 symmetric per channel, "
                                    "activations int8 per tensor, min/max calibration")
            module = _quantize_int8(module, example, pixels, spec, options.batch)
        buffer, info["graph_rewrites"] = _lower(module, example, spec.to_json(), options)
    info["export_seconds"] = round(time.perf_counter() - started, 2)
    with atomic_path(out) as tmp:
        tmp.write_bytes(buffer)
    info["file_size"] = out.stat().st_size
    info.update(_delegation(out))
    write_sidecar(out, spec, info)
    return Artifact(out, "executorch", spec, info)


def _delegation(path: Path) -> dict:
    """How much of forward the delegate took: a partition count and the kernels left over."""
    summary = summarise(load_program(path)[0])
    return {"partitions": dict(summary.partitions), "xnnpack_partitions": summary.partitions.get(XNNPACK_BACKEND, 0),
            "non_delegated_ops": dict(summary.kernel_ops), "arena_bytes": summary.arena_bytes}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for dist in ("executorch", "torch", "torchao"):
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return found


def check_out(out: Path) -> Path:
    if not str(out).lower().endswith(".pte"):
        raise UserError(f"out={out} must end in .pte")
    return check_writable(Path(out))
