"""Runners over a CoreML artifact: ``MLModel.predict`` on macOS, the numpy MIL
interpreter (``mil_interpreter.py``) everywhere else or when asked (``native=False``)."""
from __future__ import annotations

import contextlib
import platform
from pathlib import Path

import numpy as np

from evit_export.core.errors import UserError
from evit_export.core.preprocess import to_model_input
from evit_export.core.spec import ModelSpec

from evit_export.targets.base import Runner, pad_batch, run_in_batches
from evit_export.targets.coreml.exporter import INPUT_NAME
from evit_export.targets.coreml.files import coremltools, coremltools_reader
from evit_export.targets.coreml.options import CoreMLRunnerOptions, RunnerOutput
from evit_export.targets.coreml.mil_interpreter import MILProgram


def import_runtime() -> None:
    """coremltools (behind the import-order guard) and, off macOS, the MIL interpreter:
    imported before bench's memory baseline. CoreML exposes no memory plan of its own
    (``Runner.memory_plan`` stays None): the measured resident peak is the figure."""
    if native_available():
        coremltools()
    else:
        coremltools_reader()
        import evit_export.targets.coreml.mil_interpreter  # noqa: F401


def native_available() -> bool:
    return platform.system() == "Darwin"


def open_runner(path: Path, spec: ModelSpec, options: CoreMLRunnerOptions) -> Runner:
    """Native CoreML where it exists (unless ``options.native`` is False), else the interpreter."""
    native = native_available() if options.native is None else options.native
    if native and not native_available():
        raise UserError("native CoreML prediction needs macOS: drop --native to use the MIL interpreter")
    runner = NativeRunner if native else InterpreterRunner
    return runner(Path(path), spec, options)


class NativeRunner(Runner):
    """``MLModel.predict`` (macOS): a PIL image per prediction for image inputs (batch 1),
    the whole float batch for tensor inputs."""

    def __init__(self, path: Path, spec: ModelSpec, options: CoreMLRunnerOptions):
        super().__init__(spec)
        ct = coremltools()
        units = ct.ComputeUnit[options.compute_units.name]
        self.name = f"coreml ({options.compute_units.name})"
        self.model = ct.models.MLModel(str(path), compute_units=units)
        self.description = self.model.get_spec().description
        self.output_kind = "probabilities" if self.description.predictedProbabilitiesName else "logits"
        self.batch = spec.batch
        self._integrity_failures: list[str] = []

    def integrity_failures(self) -> list[str]:
        return list(self._integrity_failures)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        return run_in_batches(self._predict, pixels, self.batch).astype(np.float32)

    def _predict(self, part: np.ndarray) -> np.ndarray:
        from PIL import Image

        if self.spec.input_range == "pixels":
            feeds = [{INPUT_NAME: Image.fromarray(np.clip(np.rint(img.transpose(1, 2, 0)), 0, 255)
                                                  .astype(np.uint8), "RGB")} for img in part]
        else:
            feeds = [{INPUT_NAME: to_model_input(part, self.spec)}]
        rows = []
        for feed in feeds:
            res = self.model.predict(feed)
            if self.description.predictedProbabilitiesName:
                probs = res[self.description.predictedProbabilitiesName]
                rows.append(np.array([[probs[label] for label in self.spec.labels]], np.float32))
            else:
                out = np.asarray(res[self.description.output[0].name], np.float32)
                rows.append(out.reshape(-1, out.shape[-1]))
        return np.concatenate(rows)

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        raise NotImplementedError("native CoreML cannot expose intermediate tensors: use --no-native")


class InterpreterRunner(Runner):
    """The numpy MIL interpreter. For a classifier artifact, ``run`` returns the logits
    feeding the final softmax (``output="logits"``, tight fp32 checks) or the declared
    probabilities (``output="probabilities"``)."""

    name = "mil-interpreter"
    deployment_runtime = False  # it checks numerics; its speed says nothing about a device

    def __init__(self, path: Path, spec: ModelSpec, options: CoreMLRunnerOptions):
        super().__init__(spec)
        self.path = Path(path)
        self.threads = options.threads
        self.program = MILProgram.load(self.path, lenient=True)
        if options.verify_integrity:
            self._integrity_failures = self.program.verify_integrity()
        else:
            self._integrity_failures = [f"corrupt weights: {p}" for p in self.program.problems]
        self.batch = self.program.batch
        self.classifier = self.program.classify_op is not None
        self.logits_var = self.program.logits_before_softmax() if self.classifier else None
        wants_logits = options.output == RunnerOutput.LOGITS
        self.from_logits = self.classifier and wants_logits and self.logits_var is not None
        self.output_kind = "probabilities" if self.classifier and not self.from_logits else "logits"

    def integrity_failures(self) -> list[str]:
        return list(self._integrity_failures)

    def _feed(self, pixels: np.ndarray) -> np.ndarray:
        # An image input reaches the program as the float pixel values of an 8-bit buffer.
        return to_model_input(pixels, self.spec).astype(np.float32)

    def _limits(self):
        """numpy's BLAS threads: 1 unless asked (small GEMMs lose more to thread
        hand-offs than they gain, badly so on a busy machine)."""
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - comes with scikit-learn
            return contextlib.nullcontext()
        return threadpool_limits(self.threads or 1)

    def run(self, pixels: np.ndarray) -> np.ndarray:
        with self._limits():
            return run_in_batches(self._interpret, pixels, self.batch).astype(np.float32)

    def _interpret(self, part: np.ndarray) -> np.ndarray:
        x = self._feed(part)
        if self.from_logits:
            return self.program.run({INPUT_NAME: x}, keep=[self.logits_var])[self.logits_var]
        outs = self.program.run({INPUT_NAME: x})
        if self.classifier:
            return outs[self.program.classify_op.outputs[1][0]]
        return next(iter(outs.values()))

    def timed_call(self, pixels: np.ndarray):
        """Inference only (inputs converted and split into artifact batches beforehand)."""
        x = self._feed(pixels)
        size = self.batch or len(x)
        parts = [pad_batch(x[start:start + size], size) for start in range(0, len(x), size)]

        def call():
            with self._limits():
                for part in parts:
                    self.program.run({INPUT_NAME: part})
        return call

    def tensors(self, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
        x = self._feed(pixels[:1])
        if self.batch and len(x) != self.batch:
            x = np.repeat(x, self.batch, axis=0)
        with self._limits():
            trace = self.program.trace({INPUT_NAME: x})
        return [(name, arr[:1] if arr.ndim and arr.shape[0] == self.batch and self.batch > 1 else arr)
                for name, arr in trace]
