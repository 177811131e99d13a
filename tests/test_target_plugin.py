"""Adding a target is one Target subclass: a throwaway target from another distribution
(tests/plugin_dist: torch.export's .pt2 archive, a real format run by PyTorch) goes
through the shared CLI, check, latency, packaging and sweep code with no change anywhere
else. In process it is registered with ``register_target``; end to end it is installed
as a real distribution whose entry point the registry finds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evit_export.core.errors import UserError
from evit_export.targets import (PrecisionNotApplicable, RunnerOptions, get_target, open_artifact, register_target,
                                 target_for, unregister_target)

PLUGIN_DIST = Path(__file__).parent / "plugin_dist"
sys.path.insert(0, str(PLUGIN_DIST))
from evit_pt2_target import ExportedProgramOptions, ExportedProgramTarget  # noqa: E402


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
    assert pt2_target.is_memory_bound("Reshape")
    assert not pt2_target.is_memory_bound("conv2d")
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
    assert report.passed, report.failures
    assert report.runtime == "torch.export", report.failures
    assert report.n == 10, report.failures
    assert report.max_abs <= 1e-4 * max(1.0, report.ref_max_abs)

    # bench: the same open_artifact -> Runner -> measure_latency path the bench command takes
    path, target, aspec = open_artifact(art.path)
    with target.open(path, spec=aspec, options=RunnerOptions(threads=1)) as runner:
        latency = measure_latency(runner, batch=4, threads=1, iterations=5)
    assert latency.runtime == "torch.export"
    assert latency.median_ms > 0
    assert latency.images_per_s > 0

    graph = target.inspect(path)
    assert graph.op_histogram["conv2d"] > 50
    assert 0 < graph.memory_bound_ops < graph.total_ops

    # package: no app templates for this target, so a generic integration note
    # latency is measured in a fresh process, which sees installed plug-ins only (the
    # end-to-end test below installs one); here it was registered in this process
    pkg = build_package(art.path, tmp_path / "pkg", threads=1, measure=False)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["target"] == "pt2"
    assert manifest["model"] == "m0.pt2"
    assert manifest["equivalence"]["passed"]
    assert manifest["apps"] == []
    assert manifest["io"]["inputs"][0]["shape"] == [4, 3, 64, 64]
    assert "No app template exists for pt2" in (pkg / "INTEGRATION.md").read_text()
    assert (pkg / "m0.pt2").read_bytes() == art.path.read_bytes()


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """The plug-in distribution built and installed for real (pip, setuptools) into a
    folder of its own; PYTHONPATH makes that folder part of any evit-export process."""
    site = tmp_path_factory.mktemp("plugin_site")
    build = tmp_path_factory.mktemp("plugin_build")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                           "--no-index", "--target", str(site), str(PLUGIN_DIST)],
                          capture_output=True, text=True, timeout=300, cwd=build)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert list(site.glob("evit_pt2_target-*.dist-info/entry_points.txt")), "no entry point was installed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return env


def _cli(env, *args, cwd, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "evit_export", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


# Opt-in (70 s of CLI processes): the default suite finds the installed plug-in in the CLI
# (test_broken_plugin_is_a_warning_not_a_broken_tool) and runs check, bench and package on
# a registered target in-process (test_check_bench_package_through_shared_code).
@pytest.mark.slow
def test_entry_point_target_works_end_to_end(installed_plugin, tmp_path):
    """Installed from its own distribution, the target has an export command built from
    its options, and check, bench, inspect, package, verify-package and sweep take it."""
    env = installed_plugin
    help_text = _cli(env, "-h", cwd=tmp_path).stdout
    assert " pt2 " in help_text, help_text
    assert "--batch N" in _cli(env, "pt2", "-h", cwd=tmp_path).stdout

    done = _cli(env, "pt2", "-v", "m0", "--img-size", "64", "--num-classes", "10", "--batch", "2",
                "-o", "m0.pt2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote m0.pt2" in done.stdout, done.stdout
    assert "PASS" in done.stdout, done.stdout

    check = _cli(env, "check", "m0.pt2", "--json", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["passed"], check.stderr
    bench = _cli(env, "bench", "m0.pt2", "--threads", "1", "--iterations", "3", "--json", cwd=tmp_path)
    assert bench.returncode == 0, bench.stderr
    assert "torch.export" in bench.stdout
    inspected = json.loads(_cli(env, "inspect", "m0.pt2", "--json", cwd=tmp_path).stdout)
    assert inspected["target"] == "pt2"
    assert inspected["op_histogram"]["conv2d"] > 50

    pkg = _cli(env, "package", "m0.pt2", "--out", "pkg", "--no-latency", cwd=tmp_path)
    assert pkg.returncode == 0, pkg.stderr
    assert json.loads((tmp_path / "pkg" / "manifest.json").read_text())["target"] == "pt2"
    verified = _cli(env, "verify-package", "pkg", cwd=tmp_path)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    sweep = _cli(env, "sweep", "--variants", "m0", "--targets", "pt2", "--precisions", "fp32,int8",
                 "--img-size", "64", "--num-classes", "10", "--out", "sw", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    cells = {c["precision"]: c for c in json.loads((tmp_path / "sw" / "results.json").read_text())["cells"]}
    assert cells["fp32"]["status"] == "done", cells["fp32"]
    assert cells["fp32"]["verdict"] == "pass", cells["fp32"]
    assert cells["int8"]["status"] == "skipped", cells["int8"]  # the format says it has no int8


def test_broken_plugin_is_a_warning_not_a_broken_tool(installed_plugin, tmp_path):
    """A plug-in whose entry point cannot load leaves the built-in formats working."""
    site = Path(installed_plugin["PYTHONPATH"].split(os.pathsep)[0])
    broken = tmp_path / "site"
    broken.mkdir()
    dist = next(site.glob("evit_pt2_target-*.dist-info"))
    (broken / "evit_broken-0.1.dist-info").mkdir()
    (broken / "evit_broken-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: evit-broken\n"
                                                                   "Version: 0.1\n")
    (broken / "evit_broken-0.1.dist-info" / "entry_points.txt").write_text(
        "[evit_export.targets]\nbroken = evit_no_such_module:Nothing\n")
    assert dist.is_dir()
    env = dict(installed_plugin, PYTHONPATH=os.pathsep.join([str(broken), installed_plugin["PYTHONPATH"]]))
    done = _cli(env, "-h", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert " onnx " in done.stdout
    assert " pt2 " in done.stdout
    assert "evit-export target plug-in 'broken'" in done.stderr
