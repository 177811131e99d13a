"""ONNX target: TorchScript export, onnxsim, fp16 / static int8, onnxruntime Runner.
Importing this package imports neither onnx nor onnxruntime."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from evit_export.core.spec import ModelSpec

from evit_export.targets.base import Artifact, GraphReport, Runner, RunnerOptions, Target, TensorInfo
from evit_export.targets.onnx.options import OnnxOptions, OnnxPrecision, QuantFormat


class OnnxTarget(Target):
    name = "onnx"
    # Not ".ort": the mobile format keeps neither the spec nor a graph onnx can read back.
    suffixes = (".onnx",)
    precisions = tuple(str(p) for p in OnnxPrecision)
    options_type = OnnxOptions
    # ONNX op types that move or reshape data rather than compute (the paper's
    # "memory-bound" lens), in normalise_op_name spelling.
    memory_bound_ops: ClassVar[frozenset[str]] = frozenset({
        "reshape", "transpose", "split", "slice", "concat", "gather", "squeeze", "unsqueeze", "flatten", "pad",
        "identity", "cast", "add", "sub", "mul", "div", "relu", "sigmoid", "expand", "tile", "shape",
        "constantofshape", "softmax", "quantizelinear", "dequantizelinear"})

    def export(self, model, spec: ModelSpec, out: Path, options: OnnxOptions | None = None) -> Artifact:
        from evit_export.targets.onnx.exporter import export_onnx

        return export_onnx(model, spec, Path(out), self.check_options(options))

    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        from evit_export.targets.onnx.runner import OnnxRunner

        options = options or RunnerOptions()
        return OnnxRunner(Path(path), self.require_spec(path, spec), threads=options.threads)

    def embedded_spec_text(self, path: Path) -> str | None:
        from evit_export.targets.onnx.inspector import load_proto, spec_text_from_proto

        return spec_text_from_proto(load_proto(path))

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        from evit_export.targets.onnx.inspector import describe_proto, load_proto

        return describe_proto(load_proto(path))

    def inspect(self, path: Path, profile: bool = False) -> GraphReport:
        from evit_export.targets.onnx.inspector import load_proto, op_histogram, parameter_count, profile_op_time

        proto = load_proto(path)
        report = self.graph_report(op_histogram(proto), parameter_count(proto), Path(path).stat().st_size)
        if profile:
            report.extra["time_share"] = profile_op_time(Path(path))
        return report


__all__ = ["OnnxOptions", "OnnxPrecision", "OnnxTarget", "QuantFormat"]
