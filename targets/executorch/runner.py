"""ExecuTorch Runner: the ``executorch.runtime`` Python bindings (the same C++ runtime
and XNNPACK delegate an app links) over a .pte file."""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from evit_export.targets.base import Runner, run_in_batches
from evit_export.targets.executorch.inspector import FORWARD, load_program, quiet_executorch_import

from evit_export.core.errors import UserError
from evit_export.core.preprocess import to_model_input
from evit_export.core.spec import ModelSpec

# The runtime's own log lines (ET_LOG "[file.cpp:NN] ...", cpuinfo probing /sys on
# x86) and torch's glog-style warnings at import: not actionable for a user.
_NOISE = re.compile(r"^(\[[\w.]+\.(cpp|c|h):\d+\]|[IW]\d{4} \d\d:\d\d:\d\d)")
_default_threads: int | None = None  # the XNNPACK threadpool's size before any runner changed it


@contextlib.contextmanager
def runtime_logs_filtered() -> Iterator[None]:
    """Run a block with fd 1 and 2 captured, then pass on all but the runtime's noise."""
    streams = [(1, sys.stdout), (2, sys.stderr)]
    saved = []
    files = []
    for fd, stream in streams:
        stream.flush()
        saved.append(os.dup(fd))
        files.append(tempfile.TemporaryFile())
        os.dup2(files[-1].fileno(), fd)
    try:
        yield
    finally:
        for (fd, stream), old, captured in zip(streams, saved, files):
            stream.flush()
            os.dup2(old, fd)
            os.close(old)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _NOISE.match(line):
                    stream.write(line)
            stream.flush()
            captured.close()

BACKEND_NAMES = {"XnnpackBackend": "XNNPACK", "CoreMLBackend": "CoreML"}


def runtime():
    import warnings

    quiet_executorch_import()
    with runtime_logs_filtered(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bindings warn at import that their API is "experimental"
        from executorch.runtime import Runtime

        return Runtime.get()


def set_threads(threads: int | None) -> int:
    """Size the runtime's threadpool (XNNPACK's workers): ``threads``, or the size it
    had before any runner changed it. The pool is one per process, so the last runner
    opened decides; returns the size now in force."""
    global _default_threads
    import warnings

    from executorch.extension.pybindings import portable_lib

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental API": the only way to size the pool from Python
        if _default_threads is None:
            _default_threads = portable_lib._threadpool_get_thread_count()
        wanted = threads or _default_threads
        if portable_lib._threadpool_get_thread_count() != wanted:
            portable_lib._unsafe_reset_threadpool(wanted)
        return portable_lib._threadpool_get_thread_count()


class ExecuTorchRunner(Runner):
    name = "executorch"

    def __init__(self, path: Path, spec: ModelSpec, threads: int | None = None):
        super().__init__(spec)
        self.path = Path(path)
        pte, _ = load_program(self.path)  # a foreign or damaged file is one line, before the runtime sees it
        delegates = {d.id for plan in pte.program.execution_plan for d in plan.delegates}
        rt = runtime()
        missing = sorted(d for d in delegates if not rt.backend_registry.is_available(d))
        if missing:
            raise UserError(f"{self.path.name} is delegated to {', '.join(missing)}, which this ExecuTorch runtime "
                            "does not have (the CoreML backend runs only on macOS / iOS): check it on a Mac, or "
                            "export with backend=xnnpack")
        with runtime_logs_filtered():  # the threadpool's first use probes the CPU, loudly
            self.threads = set_threads(threads)
            self.program = rt.load_program(self.path)
            self.method = self.program.load_method(FORWARD)
        meta = self.method.metadata.input_tensor_meta(0)
        self.batch = int(meta.sizes()[0])
        # the delegates the program names, as their projects spell them (a CoreML .pte is not XNNPACK's)
        backends = ", ".join(sorted(BACKEND_NAMES.get(d, d.removesuffix("Backend")) for d in delegates))
        backends = backends or "portable kernels"
        self.name = f"executorch ({backends}, {self.threads} thread{'s' if self.threads != 1 else ''})"

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        return self.method.execute((torch.from_numpy(np.ascontiguousarray(x, np.float32)),))[0].numpy()

    def run(self, pixels: np.ndarray) -> np.ndarray:
        x = to_model_input(pixels, self.spec)
        return run_in_batches(self._forward, x, self.batch).astype(np.float32)

    def timed_call(self, pixels: np.ndarray):
        """Inputs copied into the method once; the timed call runs the plan only."""
        import torch
        from evit_export.targets.base import pad_batch

        x = pad_batch(to_model_input(pixels, self.spec)[: self.batch], self.batch)
        raw = self.method._method  # the bound C++ method: set_inputs once, execute per call
        raw.set_inputs((torch.from_numpy(np.ascontiguousarray(x, np.float32)),))
        return raw.execute

    def tensors(self, pixels: np.ndarray):
        raise NotImplementedError(
            "the ExecuTorch runtime cannot expose intermediate tensors: each XNNPACK partition runs as one "
            "delegate call, and the Python runtime gives no per-op outputs (ETDump debug buffers need a runtime "
            "built with the event tracer); localise on the ONNX export of the same model instead")
