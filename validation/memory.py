"""Memory: measured (the process's resident high-water mark) and planned from the graph.

Measured. ``start_peak_tracking`` takes the baseline (after the runtime's import, before
the model's load) and ``peak_above`` the high-water mark above it. On Linux writing "5"
to ``/proc/self/clear_refs`` resets the kernel's high-water mark (``VmHWM``) to the
present resident size, so import-time transients do not hide the model's own peak;
where the kernel refuses, or there is no ``/proc`` (macOS), the peak is the growth of
``getrusage``'s ``ru_maxrss`` (a lower bound: a peak below an earlier one is not seen).
The method used travels with every figure.

Planned. ``static_memory`` prices a model before any device runs it: one forward pass is
exported (``torch.export``, decomposed to core ATen ops, as ExecuTorch lowers it), each
tensor lives from the op that produces it to the last op that reads it (reshapes alias
their input), and the tensors are laid out largest first, the way LiteRT's arena planner
and ExecuTorch's greedy memory planner place them. ``activation_bytes`` is the arena ExecuTorch's planner would reserve (its
shared-object placement, checked against a real ExecuTorch plan in the tests);
``packed_activation_bytes`` the tighter best-fit offset layout; ``peak_live_bytes`` the
most bytes alive at once (no layout can go below it); ``weight_bytes`` the constants at
the artifact's precision. Kernel scratch (im2col buffers, XNNPACK's workspace) is not in
the graph and so not in these figures: LiteRT's builtin kernels put theirs in the same
arena, which is why its arena is larger than the plan; the measured peak covers it.
"""
from __future__ import annotations

import functools

import os
import resource
import sys
from dataclasses import dataclass

from evit_export.core.errors import UserError

_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"
ARENA_ALIGNMENT = 64  # bytes: LiteRT's arena alignment (ExecuTorch aligns to 16)
# Bytes per activation element for each precision family (int8 models keep int8
# activations between quantised ops; fp16 ones halve fp32's).
ELEMENT_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


# --------------------------------------------------------------------------- measured
@dataclass(frozen=True)
class PeakBaseline:
    rss_bytes: int  # resident size (or ru_maxrss where no reset is possible) at the baseline
    method: str  # how the peak above it is read, in words
    resettable: bool  # the kernel's high-water mark was reset to rss_bytes


def _status_bytes(key: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in bytes, from /proc (None off Linux)."""
    try:
        with open(_STATUS, encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError):
        return None
    return None


def _maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def start_peak_tracking() -> PeakBaseline:
    """The baseline for ``peak_above``; resets the kernel's high-water mark where allowed."""
    rss = _status_bytes("VmRSS")
    if rss is not None:
        try:
            fd = os.open(_CLEAR_REFS, os.O_WRONLY)
            try:
                os.write(fd, b"5")  # "5": reset the peak resident size (Linux >= 4.0)
            finally:
                os.close(fd)
            rss = _status_bytes("VmRSS") or rss
            return PeakBaseline(rss, "VmHWM above VmRSS, high-water mark reset (/proc/self/clear_refs)", True)
        except OSError:
            pass
    return PeakBaseline(_maxrss_bytes(), "growth of ru_maxrss (high-water mark not resettable here: a lower "
                        "bound)", False)


def peak_above(baseline: PeakBaseline) -> int:
    """Bytes the resident high-water mark rose above ``baseline``."""
    if baseline.resettable:
        hwm = _status_bytes("VmHWM")
        if hwm is not None:
            return max(0, hwm - baseline.rss_bytes)
    return max(0, _maxrss_bytes() - baseline.rss_bytes)


# --------------------------------------------------------------------------- planned
@dataclass
class TensorLife:
    name: str
    nbytes: int
    first: int  # index of the op that produces it (0 for graph inputs)
    last: int  # index of the last op that reads it (the end for graph outputs)


def _aligned(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def peak_live_bytes(tensors: list[TensorLife]) -> int:
    """The most bytes alive at any op: the floor under every arena layout."""
    events: dict[int, int] = {}
    for t in tensors:
        events[t.first] = events.get(t.first, 0) + t.nbytes
        events[t.last + 1] = events.get(t.last + 1, 0) - t.nbytes
    live = peak = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


def plan_arena(tensors: list[TensorLife], alignment: int = ARENA_ALIGNMENT) -> int:
    """Arena bytes when tensors are placed greedily by size (largest first), each at the
    smallest gap between tensors alive at the same time that holds it (best fit), else
    above them all: the placement LiteRT's ``ArenaPlanner`` and ExecuTorch's greedy
    planner use."""
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    arena = 0
    for t in sorted(tensors, key=lambda t: (-t.nbytes, t.first)):
        size = _aligned(t.nbytes, alignment)
        overlapping = sorted((o, s) for o, s, f, last in placed if f <= t.last and t.first <= last)
        best, best_gap, cursor = None, None, 0
        for offset, used in overlapping:
            gap = offset - cursor
            if gap >= size and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, offset + used)
        offset = cursor if best is None else best
        placed.append((offset, size, t.first, t.last))
        arena = max(arena, offset + size)
    return arena


def plan_shared_objects(tensors: list[TensorLife], alignment: int = 16) -> int:
    """Arena bytes when tensors are placed the way ExecuTorch's default ``greedy`` memory
    planner does: largest first, each into the first buffer ("shared object") where nothing
    alive at the same time sits (at offset 0), else the first buffer with room above the
    tensors it overlaps in time, else a new buffer of its own size; the arena is the sum
    of the buffers. Looser than ``plan_arena`` (buffers never grow), and what an
    ExecuTorch program really reserves."""
    buffers: list[tuple[int, list[tuple[int, int, int, int]]]] = []  # (size, [(offset, size, first, last)])
    for t in sorted(tensors, key=lambda t: -t.nbytes):
        size = _aligned(t.nbytes, alignment)
        entry = (size, t.first, t.last)
        if not _place_free(buffers, entry) and not _place_above(buffers, entry):
            buffers.append((size, [(0, size, t.first, t.last)]))
    return sum(size for size, _ in buffers)


def _overlaps(first: int, last: int, other_first: int, other_last: int) -> bool:
    return not (last < other_first or first > other_last)


def _place_free(buffers, entry) -> bool:
    size, first, last = entry
    for _, allocations in buffers:
        if not any(_overlaps(first, last, f, e) for _, _, f, e in allocations):
            allocations.append((0, size, first, last))
            return True
    return False


def _place_above(buffers, entry) -> bool:
    size, first, last = entry
    for capacity, allocations in buffers:
        top = max((o + s for o, s, f, e in allocations if _overlaps(first, last, f, e)), default=0)
        if top and top + size <= capacity:
            allocations.append((top, size, first, last))
            return True
    return False


# Ops whose output is a view of their input's bytes in every runtime (a reshape moves no
# data); transposes, slices and expands are copies in ONNX, LiteRT and ExecuTorch alike.
_ALIAS_OPS = frozenset({"view", "_unsafe_view", "reshape", "alias", "squeeze", "unsqueeze", "flatten", "detach",
                        "lift_fresh_copy"})


def _op_name(node) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.split(".")[0]


def _vals(node):
    val = node.meta.get("val")
    return list(val) if isinstance(val, (tuple, list)) else [val]


def graph_tensor_lives(exported, element_bytes: int = 4) -> list[TensorLife]:
    """Tensor lifetimes of a ``torch.export`` program in its execution order; weights and
    other constants are left out (they are not activations). ``element_bytes`` prices
    each floating-point element at the artifact's precision."""
    import operator

    import torch

    sig = exported.graph_signature
    user_inputs = set(sig.user_inputs)
    nodes = list(exported.graph_module.graph.nodes)
    end = len(nodes)
    lives: dict[object, TensorLife] = {}  # key: (node name, output index)
    root: dict[str, object] = {}  # node name -> key of the tensor its value lives in

    def size_of(val) -> int:
        if not isinstance(val, torch.Tensor):
            return 0
        per = element_bytes if val.dtype.is_floating_point else val.element_size()
        return int(val.numel()) * per

    for i, node in enumerate(nodes):
        if node.op == "placeholder":
            if node.name in user_inputs:
                key = (node.name, 0)
                lives[key] = TensorLife(node.name, size_of(node.meta.get("val")), 0, 0)
                root[node.name] = key
            continue
        if node.op == "output":
            for arg in _flat_nodes(node.args):
                if arg.name in root:
                    lives[root[arg.name]].last = end
            continue
        if node.op != "call_function":
            continue
        inputs = [a for a in _flat_nodes((node.args, node.kwargs)) if a.name in root]
        for arg in inputs:
            lives[root[arg.name]].last = max(lives[root[arg.name]].last, i)
        if node.target is operator.getitem:
            parent, index = node.args
            key = (parent.name, index)
            if key in lives:
                root[node.name] = key
            continue
        if _op_name(node) in _ALIAS_OPS and inputs:
            root[node.name] = root[inputs[0].name]
            continue
        vals = _vals(node)
        for k, val in enumerate(vals):
            if size_of(val):
                lives[(node.name, k)] = TensorLife(f"{node.name}:{k}" if len(vals) > 1 else node.name,
                                                   size_of(val), i, i)
        if len(vals) == 1 and (node.name, 0) in lives:
            root[node.name] = (node.name, 0)
    return list(lives.values())


def _flat_nodes(args) -> list:
    import torch

    found: list = []
    torch.fx.node.map_arg(args, found.append)
    return found


def export_graph(model, example):
    """``model``'s forward on ``example`` as a core-ATen ``torch.export`` program (the graph
    ExecuTorch plans; the same op granularity the other runtimes run)."""
    import torch

    with torch.no_grad():
        return torch.export.export(model.eval(), (example,), strict=False).run_decompositions()


def memory_of_program(exported, element_bytes: int = 4, weight_element_bytes: int | None = None) -> dict:
    """Planned memory of an exported program: arena, live peak, weights (bytes)."""
    import torch

    lives = graph_tensor_lives(exported, element_bytes)
    weights = 0
    for value in list(exported.state_dict.values()) + list(getattr(exported, "constants", {}).values()):
        if isinstance(value, torch.Tensor):
            per = (weight_element_bytes or element_bytes) if value.dtype.is_floating_point else value.element_size()
            weights += int(value.numel()) * per
    return {"activation_bytes": plan_shared_objects(lives), "packed_activation_bytes": plan_arena(lives),
            "peak_live_bytes": peak_live_bytes(lives), "weight_bytes": weights, "tensors": len(lives)}


def memory_of_model(model, img_size: int, batch: int = 1, precision: str = "fp32") -> dict:
    """Planned memory of ``model`` on a ``batch`` x 3 x ``img_size``² input at ``precision``."""
    import torch

    example = torch.zeros(batch, 3, img_size, img_size)
    return memory_of_program(export_graph(model, example), ELEMENT_BYTES[precision])


def _exported(ref: str, checkpoint, img_size: int | None, batch: int | None):
    """(label, core-ATen program, size, batch) of a model reference: exported once per
    process, whatever the precisions it is then priced at (the export is the slow part);
    again when a file it was read from has changed."""
    stamps = tuple(_file_stamp(p) for p in (ref, checkpoint) if p is not None)
    return _exported_cached(ref, checkpoint, img_size, batch, stamps)


def _file_stamp(path) -> tuple | None:
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None  # a model name, not a file
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _exported_cached(ref: str, checkpoint, img_size: int | None, batch: int | None, stamps: tuple):
    import torch
    from evit_export.validation.latency.workloads import resolve

    label, model, size, batch = resolve(ref, checkpoint, img_size, batch)
    return label, export_graph(model, torch.zeros(batch, 3, size, size)), size, batch


def static_memory(ref: str, *, img_size: int | None = None, batch: int | None = None, checkpoint=None,
                  precision: str | None = None) -> dict:
    """Planned activation arena, live peak and weight bytes of a model reference (``m0``,
    ``timm:<name>``, or an exported artifact: its size, batch and precision), with what
    the figures rest on."""
    from evit_export.validation.latency.workloads import is_artifact_ref

    if precision is None and is_artifact_ref(ref):
        from evit_export.targets import open_artifact

        _, target, spec = open_artifact(ref)
        precision = target.precision_family(spec)
    precision = precision or "fp32"
    if precision not in ELEMENT_BYTES:
        raise UserError(f"precision={precision} is not one of {', '.join(ELEMENT_BYTES)}")
    label, exported, size, batch = _exported(ref, checkpoint, img_size, batch)
    result = memory_of_program(exported, ELEMENT_BYTES[precision])
    return {"model": label, "img_size": size, "batch": batch, "precision": precision, **result,
            "method": "tensor lifetimes of the core-ATen graph in execution order; activation_bytes: "
                      "ExecuTorch's greedy shared-object placement, packed_activation_bytes: best-fit offsets "
                      f"(LiteRT's arena planner, before its kernels' scratch); {ELEMENT_BYTES[precision]} byte(s) "
                      "per activation element"}
