"""onnxruntime Runner (CPU provider) over an exported .onnx file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from evit_export.core.preprocess import to_model_input
from evit_export.core.spec import ModelSpec

from evit_export.targets.base import Runner, run_in_batches


def import_runtime() -> None:
    """onnxruntime's import, before bench's memory baseline (``Target.import_runtime``)."""
    import onnxruntime  # noqa: F401


def session_options(threads: int | None = None, optimize: bool = True):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return opts


class OnnxRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: Path, spec: ModelSpec, threads: int | None = None):
        import onnxruntime as ort

        super().__init__(spec)
        self.path = Path(path)
        self.threads = threads
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dim0 = inp.shape[0]
        self.batch = dim0 if isinstance(dim0, int) else None

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = to_model_input(pixels, self.spec)
        fn = lambda part: self.session.run(None, {self.input_name: part})[0]
        return run_in_batches(fn, x, self.batch).astype(np.float32)

    def timed_call(self, pixels: np.ndarray):
        x = to_model_input(pixels, self.spec)
        feeds = {self.input_name: x}
        return lambda: self.session.run(None, feeds)

    def memory_plan(self) -> dict | None:
        """None: onnxruntime plans its activations (memory patterns over a BFC arena) inside
        the session and exposes neither the plan nor the arena's size to Python; the
        measured resident peak is the figure for it."""
        return None

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """All node outputs of the (unoptimised) graph, in node order."""
        import onnx
        import onnxruntime as ort

        proto = onnx.shape_inference.infer_shapes(onnx.load(str(self.path)))
        typed = {vi.name: vi for vi in list(proto.graph.value_info) + list(proto.graph.output)}
        existing = {o.name for o in proto.graph.output}
        order = []
        for node in proto.graph.node:
            for name in node.output:
                if name and name in typed:
                    order.append(name)
                    if name not in existing:
                        proto.graph.output.append(typed[name])
                        existing.add(name)
        session = ort.InferenceSession(proto.SerializeToString(), session_options(self.threads, optimize=False),
                                       providers=["CPUExecutionProvider"])
        x = to_model_input(pixels, self.spec)
        if self.batch and len(x) != self.batch:
            x = np.repeat(x[:1], self.batch, axis=0)
        names = [o.name for o in session.get_outputs()]
        values = dict(zip(names, session.run(names, {self.input_name: x})))
        return [(n, values[n][: len(pixels)] if values[n].ndim and values[n].shape[0] == len(x) else values[n])
                for n in order if n in values]
