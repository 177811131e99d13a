"""TFLite / LiteRT target: native NHWC TensorFlow graph converted in a worker process,
fp32 / fp16 / dynamic / int8, LiteRT (XNNPACK) Runner. Importing this package imports
neither TensorFlow nor LiteRT."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from evit_export.core.spec import ModelSpec
from evit_export.targets.apps import template_text
from evit_export.targets.base import Artifact, GraphReport, read_sidecar, Runner, RunnerOptions, Target, TensorInfo
from evit_export.targets.tflite.app import APPS, input_quantization
from evit_export.targets.tflite.debug import layer_errors
from evit_export.targets.tflite.exporter import check_out, export_tflite
from evit_export.targets.tflite.inspector import (describe_interpreter, op_histogram, parameter_count,
                                                  read_artifact_bytes, read_model, spec_text_from_tflite)
from evit_export.targets.tflite.options import InputType, Layout, Quantize, TFLiteOptions
from evit_export.targets.tflite.runner import delegate_partitions, interpreter, LiteRTRunner



class TFLiteTarget(Target):
    name = "tflite"
    suffixes = (".tflite",)
    precisions = ("fp32", "fp16", "int8")
    options_type = TFLiteOptions
    title = "TFLite / LiteRT"
    extra = "tflite"
    requirements = {"tensorflow": "the TFLite converter", "ai_edge_litert": "running .tflite models (LiteRT)"}
    colour = "#22a884"
    kernel_library = "xnnpack"
    auto_apps = ("android", "python")
    python_requirement = "ai-edge-litert>=1.0"
    cli_help = "Export to TFLite / LiteRT: native NHWC graph, fp32 / fp16 / dynamic / int8, spec in metadata."
    imports_tensorflow = True  # LiteRT shares TensorFlow's import-order hazard with torch's triton
    # TFLite builtin op names that move or reshape data rather than compute, in
    # normalise_op_name spelling (the paper's "memory-bound" lens).
    memory_bound_ops: ClassVar[frozenset[str]] = frozenset({
        "reshape", "transpose", "split", "splitv", "slice", "stridedslice", "concatenation", "gather", "squeeze",
        "expanddims", "pad", "padv2", "cast", "add", "sub", "mul", "div", "relu", "logistic", "tile", "shape",
        "softmax", "quantize", "dequantize"})

    def export(self, model, spec: ModelSpec, out: Path, options: TFLiteOptions | None = None) -> Artifact:
        return export_tflite(model, spec, Path(out), self.check_options(options))

    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        options = options or RunnerOptions()
        return LiteRTRunner(Path(path), self.require_spec(path, spec), threads=options.threads)

    def embedded_spec_text(self, path: Path) -> bytes | None:
        return spec_text_from_tflite(Path(path))

    def precision_family(self, spec: ModelSpec) -> str:
        # dynamic range: int8 weights, so judged like int8
        return "int8" if spec.precision == "dynamic" else super().precision_family(spec)

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        spec_text = spec_text_from_tflite(Path(path))
        return describe_interpreter(interpreter(Path(path), 1, delegate=False), spec_text)

    def inspect(self, path: Path) -> GraphReport:
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
        return report

    def int8_layer_errors(self, path: Path, spec: ModelSpec, pixels, deployed) -> list[dict]:
        return layer_errors(Path(path), spec, pixels, deployed)

    def app_writers(self) -> dict:
        return dict(APPS)

    def input_quantization(self, path: Path) -> tuple[float, int] | None:
        return input_quantization(path)

    def remote_bench_source(self) -> str:
        return template_text("evit_export.targets.tflite", "templates/remote_bench.py")

    def check_output(self, out: Path, options: TFLiteOptions) -> Path:
        return check_out(out)

    def default_out_name(self, spec: ModelSpec, options: TFLiteOptions) -> str:
        tag = "" if options.precision == Quantize.NONE else f"_{options.precision}"
        return f"{spec.variant}{tag}.tflite"

    def export_summary(self, artifact: Artifact, options: TFLiteOptions) -> list[str]:
        info = artifact.info
        gpu = info.get("gpu_delegate") or {}
        gpu_text = ("GPU delegate: compatible" if gpu.get("compatible") else
                    f"GPU delegate: NOT fully compatible ({len(gpu.get('problems', []))} findings)"
                    if gpu.get("checked") else "GPU delegate: not checked")
        return [f"wrote {artifact.path} ({info['file_size'] / 1e6:.2f} MB, {info['precision']}, input "
                f"{info['io']['input']['dtype']} {info['layout']}, batch {options.batch}, "
                f"{info['export_seconds']:.1f} s); labels in {info['labels']}; {gpu_text}"]


__all__ = ["InputType", "Layout", "Quantize", "TFLiteOptions", "TFLiteTarget"]
