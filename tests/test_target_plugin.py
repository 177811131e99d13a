"""Adding a target is one Target subclass + register_target: a throwaway target defined
here (torch.export's .pt2 archive, a real format run by PyTorch) goes through the shared
check, latency and packaging code with no change anywhere else."""
from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from evit_export.core.atomic import atomic_path, check_writable
from evit_export.core.errors import UserError
from evit_export.core.preprocess import normalize
from evit_export.core.spec import ModelSpec
from evit_export.targets import (PrecisionNotApplicable, RunnerOptions, Target, TargetOptions, get_target,
                                 open_artifact, register_target, target_for, unregister_target)
from evit_export.targets.base import Artifact, GraphReport, Runner, TensorInfo, run_in_batches, write_sidecar

SPEC_FILE = "evit_spec.json"  # stored among the .pt2 archive's extra files


@dataclass(frozen=True)
class ExportedProgramOptions(TargetOptions):
    batch: int = 1

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


@pytest.fixture()
def pt2_target():
    register_target(ExportedProgramTarget)
    yield get_target("pt2")
    unregister_target("pt2")


@pytest.fixture(scope="module")
def deploy_m0():
    from evit_export.models.reference import deploy_for_export

    return deploy_for_export("m0", img_size=64, num_classes=10, seed=0)


def test_registered_target_is_found_by_name_and_suffix(pt2_target, tmp_path):
    assert isinstance(target_for(tmp_path / "m.pt2"), ExportedProgramTarget)
    assert pt2_target.is_memory_bound("Reshape") and not pt2_target.is_memory_bound("conv2d")
    with pytest.raises(PrecisionNotApplicable):
        ExportedProgramOptions.for_precision("int8")
    with pytest.raises(TypeError):  # a misspelled option cannot be dropped silently
        ExportedProgramOptions(bacth=2)
    with pytest.raises(UserError):  # another target's options are refused, not ignored
        from evit_export.targets.onnx import OnnxOptions

        pt2_target.export(None, None, tmp_path / "m.pt2", OnnxOptions())


def test_unregistered_suffix_is_unknown(tmp_path):
    with pytest.raises(UserError, match="not an artifact evit-export knows"):
        target_for(tmp_path / "m.pt2")


def test_check_bench_package_through_shared_code(pt2_target, deploy_m0, tmp_path):
    from evit_export.packaging.package import build_package
    from evit_export.validation.check import check_artifact
    from evit_export.validation.latency.measure import measure_latency

    deployed, spec = deploy_m0
    art = pt2_target.export(deployed, spec, tmp_path / "m0.pt2", ExportedProgramOptions(batch=4))
    assert pt2_target.read_spec(art.path).batch == 4

    # check: the reference is rebuilt from the embedded spec (seeded weights), 10 inputs
    # run as 4 + 4 + 2-padded-to-4 through the shared batching helper.
    report = check_artifact(art.path, n=10)
    assert report.passed and report.runtime == "torch.export" and report.n == 10, report.failures
    assert report.max_abs <= 1e-4 * max(1.0, report.ref_max_abs)

    # bench: the same open_artifact -> Runner -> measure_latency path the bench command takes
    path, target, aspec = open_artifact(art.path)
    with target.open(path, spec=aspec, options=RunnerOptions(threads=1)) as runner:
        latency = measure_latency(runner, batch=4, threads=1, iterations=5)
    assert latency.runtime == "torch.export" and latency.median_ms > 0 and latency.images_per_s > 0

    graph = target.inspect(path)
    assert graph.op_histogram["conv2d"] > 50 and 0 < graph.memory_bound_ops < graph.total_ops

    # package: no app templates for this target, so a generic integration note
    pkg = build_package(art.path, tmp_path / "pkg", threads=1)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["target"] == "pt2" and manifest["model"] == "m0.pt2"
    assert manifest["equivalence"]["passed"] and manifest["apps"] == []
    assert any(row["kind"] == "measured" and row["runtime"] == "torch.export" for row in manifest["latency"])
    assert manifest["io"]["inputs"][0]["shape"] == [4, 3, 64, 64]
    assert "No app template exists for pt2" in (pkg / "INTEGRATION.md").read_text()
    assert (pkg / "m0.pt2").read_bytes() == art.path.read_bytes()
