"""ExecuTorch target: torch.export of the folded deploy graph lowered to the XNNPACK
delegate (or CoreML for Apple devices), fp32 / fp16 / static int8, the spec in a
constant method of the .pte, ``executorch.runtime`` Runner. Importing this package
imports neither torch nor executorch."""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from evit_export.targets.base import Artifact, GraphReport, Runner, RunnerOptions, Target, TensorInfo
from evit_export.targets.executorch.options import Backend, ExecuTorchOptions, ExecuTorchPrecision

from evit_export.core.spec import ModelSpec

PACKAGE = "evit_export.targets.executorch"
BACKEND_NAMES = {"XnnpackBackend": "XNNPACK", "CoreMLBackend": "CoreML"}  # delegate ids as users know them


class ExecuTorchTarget(Target):
    name = "executorch"
    suffixes = (".pte",)
    precisions = tuple(str(p) for p in ExecuTorchPrecision)
    options_type = ExecuTorchOptions
    title = "ExecuTorch"
    extra = "executorch"
    requirements: ClassVar[dict[str, str]] = {"executorch": "ExecuTorch export and its runtime (.pte)"}
    colour = "#ee4c2c"  # PyTorch's orange-red
    kernel_library = "xnnpack"
    auto_apps = ("python",)
    python_requirement = "executorch>=1.5"
    cli_help = "Export to ExecuTorch (.pte): XNNPACK delegate, fp32 / fp16 / int8, spec in a constant method."
    # What moves or reshapes data rather than computes, in normalise_op_name spelling:
    # XNNPACK node types inside partitions and ATen kernels outside them.
    memory_bound_ops: ClassVar[frozenset[str]] = frozenset({
        "staticreshape", "statictranspose", "staticslice", "concatenate2", "concatenate3", "concatenate4",
        "concatenate5", "staticconstantpad", "convert", "copy", "add", "multiply", "subtract", "div", "clamp",
        "sigmoid", "softmax", "staticresizebilinear2d", "evenspliton2", "evensplit3",
        "aten::expandcopy", "aten::splitwithsizescopy", "aten::viewcopy", "aten::permutecopy", "aten::slicecopy",
        "aten::cat", "aten::clone", "dimorderops::todimordercopy"})

    def export(self, model, spec: ModelSpec, out: Path, options: ExecuTorchOptions | None = None) -> Artifact:
        from evit_export.targets.executorch.exporter import export_executorch

        return export_executorch(model, spec, Path(out), self.check_options(options))

    def open(self, path: Path, spec: ModelSpec | None = None, options: RunnerOptions | None = None) -> Runner:
        from evit_export.targets.executorch.runner import ExecuTorchRunner

        options = options or RunnerOptions()
        return ExecuTorchRunner(Path(path), self.require_spec(path, spec), threads=options.threads)

    def embedded_spec_text(self, path: Path) -> str | None:
        from evit_export.targets.executorch.inspector import load_program, spec_text_from_pte

        return spec_text_from_pte(load_program(Path(path))[0])

    def describe(self, path: Path) -> dict[str, list[TensorInfo]]:
        from evit_export.targets.executorch.inspector import describe_pte, load_program

        return describe_pte(load_program(Path(path))[0])

    def inspect(self, path: Path) -> GraphReport:
        from evit_export.targets.executorch.inspector import XNNPACK_BACKEND, load_program, summarise

        pte, data = load_program(Path(path))
        summary = summarise(pte)
        histogram = summary.delegated_ops + summary.kernel_ops
        extra = {"xnnpack_partitions": summary.partitions.get(XNNPACK_BACKEND, 0),
                 "delegate_calls": dict(summary.partitions),
                 "delegated_ops": sum(summary.delegated_ops.values()),
                 "non_delegated_ops": dict(summary.kernel_ops.most_common()),
                 "memory_planned_arena_bytes": summary.arena_bytes,
                 "memory_planned_buffers": summary.buffer_sizes,
                 "methods": sorted(p.name for p in pte.program.execution_plan)}
        return self.graph_report(histogram, summary.params, len(data), extra)

    def app_writers(self) -> dict:
        from evit_export.targets.executorch.app import APPS

        return dict(APPS)

    def remote_bench_source(self) -> str:
        from evit_export.targets.apps import template_text

        return template_text(PACKAGE, "templates/remote_bench.py")

    def check_output(self, out: Path, options: ExecuTorchOptions) -> Path:
        from evit_export.targets.executorch.exporter import check_out

        return check_out(out)

    def export_summary(self, artifact: Artifact, options: ExecuTorchOptions) -> list[str]:
        info = artifact.info
        leftover = sum(info.get("non_delegated_ops", {}).values())
        partitions = ", ".join(f"{n} {BACKEND_NAMES.get(backend, backend)} partition{'s' if n != 1 else ''}"
                               for backend, n in info.get("partitions", {}).items()) or "no delegate partition"
        lines = [(f"wrote {artifact.path} ({info['file_size'] / 1e6:.2f} MB, {options.precision_label()}, batch "
                  f"{options.batch}, {partitions}, {leftover} op(s) outside the delegate, "
                  f"{info['export_seconds']:.1f} s)")]
        if options.backend == Backend.COREML:
            lines.append("the CoreML delegate runs only on macOS / iOS: check this program on a Mac "
                         "(the ExecuTorch runtime here has no CoreMLBackend)")
        return lines


__all__ = ["Backend", "ExecuTorchOptions", "ExecuTorchPrecision", "ExecuTorchTarget"]
