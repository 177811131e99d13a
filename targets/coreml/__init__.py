"""CoreML target: ML Program (.mlpackage) or NeuralNetwork (.mlmodel) export of the
deploy graph, checked on macOS by CoreML and elsewhere by a numpy MIL interpreter.
Importing this package imports neither coremltools nor torch."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from evit_export.core.interrupt import cancellable
from evit_export.core.isolation import run_isolated
from evit_export.core.spec import ModelSpec
from evit_export.targets.apps import template_text
from evit_export.targets.base import Artifact, GraphReport, Runner, RunnerOptions, SPEC_KEY, Target, TensorInfo
from evit_export.targets.coreml.app import APPS
from evit_export.targets.coreml.exporter import check_out, export_coreml
from evit_export.targets.coreml.files import coremltools_reader, read_model_spec
from evit_export.targets.coreml.inspector import describe_proto, graph_summary
from evit_export.targets.coreml.runner import native_available, open_runner

from evit_export.targets.coreml.options import (Compression, ComputeUnits, CoreMLOptions, CoreMLPrecision,
                                                CoreMLRunnerOptions, InputKind, ModelFormat, OutputKind,
                                                RunnerOutput)


class CoreMLTarget(Target):
    name = "coreml"
    suffixes = (".mlpackage", ".mlmodel")
    precisions = ("fp32", "fp16", "int8")  # int8: weight-only (CoreMLOptions.for_precision)
    options_type = CoreMLOptions
    title = "CoreML"
    runner_options_type = CoreMLRunnerOptions
    extra = "coreml"
    requirements = {"coremltools": "CoreML export and checks"}
    colour = "#e69f00"
    auto_apps = ("ios",)
    cli_help = "Export to CoreML (ML Program or NeuralNetwork) for iPhone, then check it against PyTorch."
    imports_tensorflow = True  # coremltools imports TensorFlow when it is installed
    # Op types that move or reshape data rather than compute (the paper's "memory-bound"
    # lens), in normalise_op_name spelling: ML Program (MIL) ops, then NeuralNetwork layers.
    memory_bound_ops: ClassVar[frozenset[str]] = frozenset({
        "reshape", "transpose", "split", "slicebyindex", "concat", "gather", "squeeze", "expanddims", "pad",
        "identity", "cast", "add", "sub", "mul", "realdiv", "relu", "sigmoid", "softmax", "tile", "shape",
        "reshapestatic", "rankpreservingreshape", "splitnd", "softmaxnd", "multiply", "permute", "flatten",
        "concatnd", "slicestatic", "padding"})

    def export(self, model, spec: ModelSpec, out: Path, options: CoreMLOptions | None = None) -> Artifact:
        options = self.check_options(options)
        # coremltools (and the TensorFlow it imports) is native code that can segfault or
        # abort on a graph it does not expect: convert in a worker, so a crash is one line.
        # Ctrl-C here stops the worker (run_isolated kills it) and says what stopped.
        # Meanwhile this process imports the reader the check needs: done after the
        # conversion, its seconds would be the check's, and Ctrl-C would wait for them.
        with cancellable(f"CoreML export of {Path(out).name}"):
            return run_isolated(export_coreml, model, spec, Path(out), options, step="CoreML conversion",
                                fmt=f"CoreML {options.format}", while_waiting=coremltools_reader)

    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        """``options`` may be CoreMLRunnerOptions (compute units, classifier output,
        integrity check) or the shared RunnerOptions."""

        return open_runner(Path(path), self.require_spec(path, spec), CoreMLRunnerOptions.of(options))

    def embedded_spec_text(self, path: Path) -> str | None:
        return read_model_spec(Path(path))[0].description.metadata.userDefined.get(SPEC_KEY) or None

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        return describe_proto(read_model_spec(Path(path))[0], self.read_spec(path))

    def inspect(self, path: Path) -> GraphReport:
        hist, params, size, extra = graph_summary(Path(path))
        return self.graph_report(hist, params, size, extra)

    def app_writers(self) -> dict:
        return dict(APPS)

    def remote_bench_source(self) -> str:
        return template_text("evit_export.targets.coreml", "templates/remote_bench.py")

    def check_output(self, out: Path, options: CoreMLOptions) -> Path:
        return check_out(out, options)

    def export_suffix(self, options: CoreMLOptions) -> str:
        return options.format.suffix

    def check_skip_reason(self, options: CoreMLOptions, runner_options: RunnerOptions) -> str | None:
        native = CoreMLRunnerOptions.of(runner_options).native
        if options.format == ModelFormat.NEURALNETWORK and not (native_available() if native is None else native):
            return ("a NeuralNetwork .mlmodel can only be evaluated by CoreML itself (macOS); the MIL interpreter "
                    "runs ML Programs")
        return None

    def export_summary(self, artifact: Artifact, options: CoreMLOptions) -> list[str]:
        info = artifact.info
        lines = [f"wrote {artifact.path} ({info['file_size'] / 1e6:.2f} MB, {options.format}, "
                 f"{options.precision_label()}, iOS {info['min_ios']}+, {options.input} input, {options.output} "
                 f"output, batch {options.batch}, converted in {info['convert_seconds']:.1f} s)"]
        if options.compress != Compression.NONE:
            before, after = info["size_before_compression"], info["size_after_compression"]
            lines.append(f"weight compression {options.compress}: {before / 1e6:.2f} MB -> {after / 1e6:.2f} MB "
                         f"({100 * after / before:.0f}%)")
        return lines

    def precision_family(self, spec: ModelSpec) -> str:
        """Compressed weights (int8, 6-bit palettes) are judged like int8 artifacts."""
        if spec.precision in {c.spec_precision for c in Compression if c.spec_precision}:
            return "int8"
        return super().precision_family(spec)


__all__ = ["Compression", "ComputeUnits", "CoreMLOptions", "CoreMLPrecision", "CoreMLRunnerOptions", "CoreMLTarget",
           "InputKind", "ModelFormat", "OutputKind", "RunnerOutput"]
