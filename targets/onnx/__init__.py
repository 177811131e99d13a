"""ONNX target: TorchScript export, onnxsim, fp16 / static int8, onnxruntime Runner.
Importing this package imports neither onnx nor onnxruntime."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from evit_export.core.spec import ModelSpec
from evit_export.targets.apps import template_text
from evit_export.targets.base import Artifact, GraphReport, Runner, RunnerOptions, Target, TensorInfo
from evit_export.targets.onnx.app import APPS
from evit_export.targets.onnx.debug import layer_errors
from evit_export.targets.onnx.exporter import export_onnx
from evit_export.targets.onnx.inspector import (describe_proto, load_proto, op_histogram, parameter_count,
                                                profile_op_time, spec_text_from_proto)
from evit_export.targets.onnx.options import OnnxOptions, OnnxPrecision, QuantFormat
from evit_export.targets.onnx.runner import OnnxRunner



class OnnxTarget(Target):
    name = "onnx"
    # Not ".ort": the mobile format keeps neither the spec nor a graph onnx can read back.
    suffixes = (".onnx",)
    precisions = tuple(str(p) for p in OnnxPrecision)
    options_type = OnnxOptions
    title = "ONNX"
    colour = "#3d8fd6"
    kernel_library = "mlas"
    extra_suffixes = (".ort",)  # onnxruntime's mobile format: runnable remotely, no spec inside
    auto_apps = ("web", "python")
    python_requirement = "onnxruntime>=1.18"
    cli_help = "Export the folded deploy graph to ONNX (simplified, checked, spec in metadata)."
    # ONNX op types that move or reshape data rather than compute (the paper's
    # "memory-bound" lens), in normalise_op_name spelling.
    memory_bound_ops: ClassVar[frozenset[str]] = frozenset({
        "reshape", "transpose", "split", "slice", "concat", "gather", "squeeze", "unsqueeze", "flatten", "pad",
        "identity", "cast", "add", "sub", "mul", "div", "relu", "sigmoid", "expand", "tile", "shape",
        "constantofshape", "softmax", "quantizelinear", "dequantizelinear"})

    def export(self, model, spec: ModelSpec, out: Path, options: OnnxOptions | None = None) -> Artifact:
        return export_onnx(model, spec, Path(out), self.check_options(options))

    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        options = options or RunnerOptions()
        return OnnxRunner(Path(path), self.require_spec(path, spec), threads=options.threads)

    def embedded_spec_text(self, path: Path) -> str | None:
        return spec_text_from_proto(load_proto(path))

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        return describe_proto(load_proto(path))

    def inspect(self, path: Path) -> GraphReport:
        proto = load_proto(path)
        return self.graph_report(op_histogram(proto), parameter_count(proto), Path(path).stat().st_size)

    def op_time_profile(self, path: Path, threads: int = 1) -> dict[str, float]:
        return profile_op_time(Path(path), threads=threads)

    def int8_layer_errors(self, path: Path, spec: ModelSpec, pixels, deployed) -> list[dict]:
        return layer_errors(Path(path), spec, pixels, deployed)

    def app_writers(self) -> dict:
        return dict(APPS)

    def remote_bench_source(self) -> str:
        return template_text("evit_export.targets.onnx", "templates/remote_bench.py")

    def default_out_name(self, spec: ModelSpec, options: OnnxOptions) -> str:
        tag = "" if options.precision == OnnxPrecision.FP32 else f"_{options.precision}"
        return f"{spec.variant}{tag}.onnx"

    def export_summary(self, artifact: Artifact, options: OnnxOptions) -> list[str]:
        info = artifact.info
        batch = "dynamic" if options.batch is None else options.batch
        lines = [f"wrote {artifact.path} ({info['file_size'] / 1e6:.2f} MB, opset {options.opset}, "
                 f"{options.precision_label()}, batch {batch}, simplified with {info['simplifier']}, "
                 f"{info['export_seconds']:.1f} s)"]
        if options.ort_format:
            verdict = info["ort"]["mobile_usability"]
            lines.append(f"wrote {info['ort']['path']} ({info['ort']['size'] / 1e6:.2f} MB); mobile usability "
                         f"check exit {verdict['returncode']}, details in {artifact.path}.evit.json")
        return lines


__all__ = ["OnnxOptions", "OnnxPrecision", "OnnxTarget", "QuantFormat"]
