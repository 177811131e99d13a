"""LiteRT Runner (XNNPACK by default) over an exported .tflite file."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from evit_export.core.import_order import native_logs_filtered, tf_safe
from evit_export.core.optional import require
from evit_export.core.preprocess import normalize
from evit_export.core.spec import ModelSpec
from evit_export.targets.base import pad_batch, run_in_batches, Runner
from evit_export.targets.tflite.inspector import read_model



def import_runtime() -> None:
    """LiteRT's import (behind the import-order guard), before bench's memory baseline."""

    require("ai_edge_litert")
    tf_safe()
    import ai_edge_litert.interpreter  # noqa: F401


def arena_extent(path: Path) -> int:
    """Bytes LiteRT's arena planner spans for ``path`` with its builtin kernels (no
    delegate): the extent of the addresses of every non-constant tensor of the model after
    ``allocate_tensors``. The Python Interpreter exposes no arena size, but each tensor's
    buffer is a numpy view at its planned address. Kernel temporaries (im2col) share the
    arena but cannot be read from Python (indices past the model's tensors crash it), so
    this is the arena up to the last model tensor: a lower bound of the whole."""

    model = read_model(Path(path).read_bytes())
    subgraph = model.subgraphs[0]
    constant = {i for i, t in enumerate(subgraph.tensors)
                if model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)}
    it = interpreter(path, 1, delegate=False)
    spans = []
    for index in range(len(subgraph.tensors)):
        if index in constant:
            continue
        try:
            view = it.tensor(index)()
        except ValueError:  # a tensor without data (optional, or not allocated)
            continue
        if view.nbytes:
            start = view.__array_interface__["data"][0]
            spans.append((start, start + view.nbytes))
    return max(end for _, end in spans) - min(start for start, _ in spans) if spans else 0


def interpreter(path: Path | None = None, threads: int | None = None, delegate: bool = True,
                preserve: bool = False, content: bytes | None = None):
    """An allocated LiteRT Interpreter; ``delegate=False`` runs the builtin kernels only,
    ``preserve`` keeps every intermediate tensor readable (localisation)."""

    require("ai_edge_litert")
    tf_safe()
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kw = {}
    if not delegate or preserve:
        kw["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve:
        kw["experimental_preserve_all_tensors"] = True
    source = {"model_content": content} if content is not None else {"model_path": str(path)}
    with native_logs_filtered():  # LiteRT announces its XNNPACK delegate on fd 2
        it = Interpreter(num_threads=threads, **source, **kw)
        it.allocate_tensors()
    return it


def delegate_partitions(it) -> int:
    """How many pieces the XNNPACK delegate took over (1 = the whole graph). LiteRT
    2.3's Interpreter has no public view of its execution plan after delegation, so
    this reads the private ``_get_ops_details`` (a DELEGATE node per partition)."""
    return sum(op["op_name"] == "DELEGATE" for op in it._get_ops_details())


def graph_input(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Pixels -> the float tensor the TF graph's input takes (before any quantisation)."""
    x = normalize(pixels, spec) if spec.input_range == "normalized" else pixels.astype(np.float32)
    if spec.input_layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x, np.float32)


def dequantize(arr: np.ndarray, quant: tuple) -> np.ndarray:
    scale, zp = quant
    if arr.dtype.kind in "iu" and scale:
        return ((arr.astype(np.float32) - zp) * scale).astype(np.float32)
    return arr.astype(np.float32)


def time_invoke(path: Path, runs: int = 20) -> float:
    """Median single-thread invoke time in ms (``inspect --profile``)."""
    it = interpreter(path, 1)
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(3):
        it.invoke()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e3, 3)


class LiteRTRunner(Runner):
    """LiteRT Interpreter (XNNPACK by default), fixed batch, any I/O dtype."""

    name = "litert"

    def __init__(self, path: Path, spec: ModelSpec, threads: int | None = None, xnnpack: bool = True):
        super().__init__(spec)
        self.path = Path(path)
        self.threads = threads
        self.interpreter = interpreter(self.path, threads, delegate=xnnpack)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    def feed(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels -> this model's input tensor (layout, range, dtype, quantisation)."""
        x = graph_input(pixels, self.spec)
        dtype = np.dtype(self.input["dtype"])
        if dtype.kind in "iu":
            scale, zp = self.input["quantization"]
            info = np.iinfo(dtype)
            q = np.rint(x / (scale or 1.0) + zp) if scale else np.rint(x)
            return np.clip(q, info.min, info.max).astype(dtype)
        return x.astype(dtype)

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        it = self.interpreter
        it.set_tensor(self.input["index"], x)
        it.invoke()
        return dequantize(it.get_tensor(self.output["index"]), self.output["quantization"])

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return run_in_batches(self._invoke, self.feed(pixels), self.batch).astype(np.float32)

    def timed_call(self, pixels: np.ndarray):
        """Inference only (the input tensor is set once, outside the timed region)."""
        x = pad_batch(self.feed(pixels[: self.batch]), self.batch)
        self.interpreter.set_tensor(self.input["index"], x)
        return self.interpreter.invoke

    def memory_plan(self) -> dict | None:
        """LiteRT's planned arena for this model with its builtin kernels (``arena_extent``).
        The XNNPACK delegate, when on, keeps its own workspace, which Python cannot see."""
        return {"planned_bytes": arena_extent(self.path),
                "source": "LiteRT arena planner, builtin kernels without delegates: extent of the model's "
                          "non-constant tensors (kernel scratch and XNNPACK's workspace not included)"}

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Every op output of one forward pass in execution order, dequantised, from the
        builtin kernels (delegates off) with all tensors preserved. Without delegates
        LiteRT runs the main subgraph's operators in their flatbuffer order, and its
        tensor indices are the flatbuffer's, so the order comes from the file."""

        it = interpreter(self.path, self.threads, preserve=True)
        x = pad_batch(self.feed(pixels[: self.batch]), self.batch)
        it.set_tensor(self.input["index"], x)
        it.invoke()
        details = {d["index"]: d for d in it.get_tensor_details()}
        n = min(len(pixels), self.batch)
        out = []
        for op in read_model(self.path.read_bytes()).subgraphs[0].operators:
            for idx in op.outputs:
                if idx < 0 or idx not in details:
                    continue
                d = details[idx]
                arr = dequantize(it.get_tensor(idx), d["quantization"])
                if arr.ndim and arr.shape[0] == self.batch and self.batch != n:
                    arr = arr[:n]
                out.append((d["name"] or f"tensor_{idx}", arr))
        return out
