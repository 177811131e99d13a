"""A throwaway export target from another distribution: torch.export's .pt2 archive (a
real format run by PyTorch), declared in the ``evit_export.targets`` entry-point group of
its own pyproject.toml. evit-export's tests install it and drive it through the CLI,
check, bench, package and sweep without any change to evit-export."""
from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.preprocess import normalize
from evit_export.core.spec import ModelSpec
from evit_export.targets import PrecisionNotApplicable, Target, TargetOptions
from evit_export.targets.base import Artifact, GraphReport, Runner, TensorInfo, cli_option, run_in_batches, write_sidecar

SPEC_FILE = "evit_spec.json"  # stored among the .pt2 archive's extra files


@dataclass(frozen=True)
class ExportedProgramOptions(TargetOptions):
    batch: int = cli_option(1, "Fixed batch size.", metavar="N")

    def __post_init__(self):
        if self.batch < 1:
            raise UserError(f"batch={self.batch} must be at least 1")

    @classmethod
    def for_precision(cls, precision, *, calibration_data=None, calibration_size=200, batch=1):
        if precision != "fp32":
            raise PrecisionNotApplicable(f"the .pt2 export here is fp32 only, not {precision}")
        return cls(batch=batch)

    def precision_label(self) -> str:
        return "fp32"


class ExportedProgramRunner(Runner):
    name = "torch.export"

    def __init__(self, path: Path, spec: ModelSpec):
        super().__init__(spec)
        self.module = torch.export.load(str(path)).module()

    def run(self, pixels: np.ndarray) -> np.ndarray:
        def forward(part):
            with torch.no_grad():
                return self.module(torch.from_numpy(part)).numpy()

        return run_in_batches(forward, normalize(pixels, self.spec), self.spec.batch).astype(np.float32)


class ExportedProgramTarget(Target):
    name = "pt2"
    suffixes = (".pt2",)
    precisions = ("fp32",)
    options_type = ExportedProgramOptions
    title = "torch.export archive"
    colour = "#7b61c4"
    cli_help = "Export to a torch.export .pt2 archive (a plug-in target from another distribution)."
    memory_bound_ops = frozenset({"reshape", "view", "permute", "transpose", "clone", "split", "slice",
                                  "cat", "pad", "add", "mul", "relu", "sigmoid", "softmax", "flatten"})

    def export(self, model, spec, out, options=None) -> Artifact:
        options = self.check_options(options)
        out = check_writable(Path(out))
        spec = spec.replace(precision="fp32", batch=options.batch, input_layout="NCHW", input_range="normalized",
                            input_dtype="float32")
        example = torch.zeros(options.batch, 3, spec.img_size, spec.img_size)
        program = torch.export.export(model.eval(), (example,))
        archive = io.BytesIO()  # torch.export.save wants a .pt2 name; the temporary path has none
        torch.export.save(program, archive, extra_files={SPEC_FILE: spec.to_json()})
        with atomic_path(out) as tmp:
            tmp.write_bytes(archive.getvalue())
        info = {"batch": options.batch, "file_size": out.stat().st_size}
        write_sidecar(out, spec, info)
        return Artifact(out, self.name, spec, info)

    def _load(self, path, extra=None):
        if not Path(path).is_file():
            raise UserError(f"{path} does not exist: check the artifact path")
        try:
            return torch.export.load(str(path), extra_files=extra)
        except (RuntimeError, ValueError, KeyError):
            raise UserError(f"{path} is not a torch.export archive: pass a .pt2 file") from None

    def embedded_spec_text(self, path):
        extra = {SPEC_FILE: ""}
        self._load(path, extra)
        return extra[SPEC_FILE] or None

    def open(self, path, spec=None, options=None) -> Runner:
        # torch's thread count is process-wide; RunnerOptions.threads is left to the caller.
        return ExportedProgramRunner(Path(path), self.require_spec(path, spec))

    def describe(self, path):
        spec = self.require_spec(path)
        shape = [spec.batch, 3, spec.img_size, spec.img_size]
        return {"inputs": [TensorInfo("x", shape, "float32", "NCHW", "normalized ((x/255 - mean)/std)")],
                "outputs": [TensorInfo("logits", [spec.batch, spec.num_classes], "float32", "NC", "logits")]}

    def inspect(self, path, profile=False) -> GraphReport:
        program = self._load(path)
        ops = Counter(str(node.target).split(".")[1] for node in program.graph.nodes
                      if node.op == "call_function" and str(node.target).startswith("aten."))
        params = sum(t.numel() for t in program.state_dict.values())
        return self.graph_report(ops, params, Path(path).stat().st_size)
