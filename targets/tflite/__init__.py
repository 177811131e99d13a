"""TFLite / LiteRT target: native NHWC TensorFlow graph converted in a worker process,
fp32 / fp16 / dynamic / int8, LiteRT (XNNPACK) Runner. Importing this package imports
neither TensorFlow nor LiteRT."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from evit_export.core.spec import ModelSpec

from evit_export.targets.base import Artifact, GraphReport, Runner, RunnerOptions, Target, TensorInfo
from evit_export.targets.tflite.options import InputType, Layout, Quantize, TFLiteOptions


class TFLiteTarget(Target):
    name = "tflite"
    suffixes = (".tflite",)
    precisions = ("fp32", "fp16", "int8")
    options_type = TFLiteOptions
    imports_tensorflow = True  # LiteRT shares TensorFlow's import-order hazard with torch's triton
    # TFLite builtin op names that move or reshape data rather than compute, in
    # normalise_op_name spelling (the paper's "memory-bound" lens).
    memory_bound_ops: ClassVar[frozenset[str]] = frozenset({
        "reshape", "transpose", "split", "splitv", "slice", "stridedslice", "concatenation", "gather", "squeeze",
        "expanddims", "pad", "padv2", "cast", "add", "sub", "mul", "div", "relu", "logistic", "tile", "shape",
        "softmax", "quantize", "dequantize"})

    def export(self, model, spec: ModelSpec, out: Path, options: TFLiteOptions | None = None) -> Artifact:
        from evit_export.targets.tflite.exporter import export_tflite

        return export_tflite(model, spec, Path(out), self.check_options(options))

    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        from evit_export.targets.tflite.runner import LiteRTRunner

        options = options or RunnerOptions()
        return LiteRTRunner(Path(path), self.require_spec(path, spec), threads=options.threads)

    def embedded_spec_text(self, path: Path) -> bytes | None:
        from evit_export.targets.tflite.inspector import spec_text_from_tflite

        return spec_text_from_tflite(Path(path))

    def precision_family(self, spec: ModelSpec) -> str:
        # dynamic range: int8 weights, so judged like int8
        return "int8" if spec.precision == "dynamic" else super().precision_family(spec)

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        from evit_export.targets.tflite.inspector import describe_interpreter, spec_text_from_tflite
        from evit_export.targets.tflite.runner import interpreter

        spec_text = spec_text_from_tflite(Path(path))
        return describe_interpreter(interpreter(Path(path), 1, delegate=False), spec_text)

    def inspect(self, path: Path, profile: bool = False) -> GraphReport:
        from evit_export.targets.base import read_sidecar
        from evit_export.targets.tflite.inspector import op_histogram, parameter_count, read_artifact_bytes, read_model
        from evit_export.targets.tflite.runner import delegate_partitions, interpreter, time_invoke

        data = read_artifact_bytes(path)
        model = read_model(data)
        report = self.graph_report(op_histogram(model), parameter_count(model), len(data))
        gpu = ((read_sidecar(Path(path)) or {}).get("info") or {}).get("gpu_delegate")
        if gpu:
            report.extra["gpu_delegate_compatible"] = gpu.get("compatible") if gpu.get("checked") else "not checked"
        it = interpreter(Path(path), 1, delegate=True)
        report.extra["xnnpack_partitions"] = delegate_partitions(it)
        for role, d in (("input", it.get_input_details()[0]), ("output", it.get_output_details()[0])):
            report.extra[f"{role}_dtype"] = np.dtype(d["dtype"]).name
        if profile:
            report.extra["latency_ms_1_thread"] = time_invoke(Path(path))
        return report


__all__ = ["InputType", "Layout", "Quantize", "TFLiteOptions", "TFLiteTarget"]
