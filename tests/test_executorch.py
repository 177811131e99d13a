"""ExecuTorch target (.pte): export through the registry, the spec inside the program,
the real ExecuTorch runtime (XNNPACK) against PyTorch, int8 against fp32, inspect,
bench with threads, package + verify-package, simulate's refusal, bad input.

ExecuTorch lowering is slow (tens of seconds per program even at 64 px on two cores),
so the default tests share two exports of one M0 with the same seeded weights: fp32
through the Python API, int8 through the command line (calibrated on a folder of
images); fp16, the sweep and M0-M5 at 224 px are behind ``-m slow``."""
from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli, run_cli_process
from evit_export.targets import RunnerOptions, get_target, open_artifact, target_for

from evit_export.core.errors import UserError

if importlib.util.find_spec("executorch") is None:
    pytest.skip("needs the [executorch] extra", allow_module_level=True)

from evit_export.targets.executorch import ExecuTorchOptions, ExecuTorchTarget


@pytest.fixture(scope="module")
def target():
    return get_target("executorch")  # through the registry (TARGET_CLASSES), like every command


@pytest.fixture(scope="module")
def m0(tmp_path_factory):
    from evit_export.models.reference import deploy_for_export

    from evit_export.data import DIGITS_LABELS

    deployed, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=3, labels=list(DIGITS_LABELS))
    return deployed, spec, tmp_path_factory.mktemp("executorch")


@pytest.fixture(scope="module")
def fp32(target, m0):
    deployed, spec, root = m0
    return target.export(deployed, spec, root / "m0.pte", ExecuTorchOptions())


@pytest.fixture(scope="module")
def int8(target, m0):
    """`evit-export executorch --precision int8` on the same seeded weights as ``fp32``,
    calibrated on a folder of real digit images (one unreadable file skipped), checked."""
    from conftest import write_digits_folder

    _, _, root = m0
    images = write_digits_folder(root / "calibration", 24, size=64)
    done = run_cli_process("executorch", "-v", "m0", "--img-size", "64", "--num-classes", "10", "--seed", "3",
                           "--precision", "int8", "--calibration-data", images, "--calibration-size", "16", "-n", "8",
                           "-o", root / "m0_int8.pte", cwd=root, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "m0_int8.pte", done


def _pixels(n, size=64, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 3, size, size)).astype(np.float32)


def test_registered_by_suffix_with_its_own_extra(target):
    from evit_export.core.optional import missing_message

    assert isinstance(target, ExecuTorchTarget) and isinstance(target_for("x/m.pte"), ExecuTorchTarget)
    assert "pip install 'evit-export[executorch]'" in missing_message("executorch")
    assert target.colour not in {get_target(n).colour for n in ("onnx", "coreml", "tflite")}


def test_spec_travels_inside_the_program(target, fp32, tmp_path):
    """The spec is a constant method of the .pte: read back with no sidecar beside it."""
    alone = tmp_path / "copy.pte"
    shutil.copy(fp32.path, alone)
    assert not (tmp_path / "copy.pte.evit.json").exists()
    spec = json.loads(target.embedded_spec_text(alone))
    assert spec["variant"] == "m0" and spec["num_classes"] == 10 and spec["labels"][3] == "3"
    assert target.read_spec(alone).precision == "fp32"
    io = target.describe(alone)
    assert io["inputs"][0].shape == [1, 3, 64, 64] and io["outputs"][0].shape == [1, 10]
    assert io["inputs"][0].dtype == "float32"


def test_runtime_matches_pytorch(target, m0, fp32):
    import torch

    from evit_export.core.preprocess import normalize

    deployed, spec, _ = m0
    pixels = _pixels(3)
    with torch.no_grad():
        want = deployed(torch.from_numpy(normalize(pixels, spec))).numpy()
    with target.open(fp32.path) as runner:
        got = runner.run(pixels)  # 3 images through a batch-1 program
    assert got.shape == (3, 10)
    assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())


def test_inspect_reports_delegation_and_arena(target, fp32):
    report = target.inspect(fp32.path)
    extra = report.extra
    # The graph rewrites keep the whole network in one XNNPACK partition: no split or
    # expand kernels left between partitions.
    assert extra["xnnpack_partitions"] == 1, extra
    assert extra["non_delegated_ops"] == {}, extra
    assert report.op_histogram["Conv2d"] > 50 and report.op_histogram["BatchMatrixMultiply"] > 0
    assert extra["memory_planned_arena_bytes"] > 0 and extra["delegated_ops"] == report.total_ops
    assert 2_000_000 < report.params < 2_400_000
    assert 0 < report.memory_bound_ops < report.total_ops
    assert fp32.info["xnnpack_partitions"] == 1 and fp32.info["graph_rewrites"]["split"] > 0


def test_check_and_bench_through_shared_code(fp32):
    from evit_export.validation.check import check_artifact
    from evit_export.validation.latency.measure import measure_latency

    report = check_artifact(fp32.path, n=6)
    assert report.passed and report.runtime.startswith("executorch"), report.failures
    path, target, spec = open_artifact(fp32.path)
    with target.open(path, spec=spec, options=RunnerOptions(threads=1)) as runner:
        assert runner.threads == 1  # XNNPACK's threadpool resized
        latency = measure_latency(runner, batch=1, threads=1, iterations=5)
    assert latency.median_ms > 0 and latency.images_per_s > 0


def test_parity_on_the_embedded_digits(fp32):
    """Accuracy parity, written once against the protocol, takes a .pte: a digits-labelled
    model is compared with PyTorch on the embedded validation digits."""
    from evit_export.validation.parity import check_parity

    report = check_parity([fp32.path], limit=40)
    assert report.images == 40, report
    row = report.artifacts[0]
    assert row.runtime.startswith("executorch"), row
    assert row.agreement == 100.0, row  # fp32: PyTorch's top-1 on every image
    assert report.passed, row


@pytest.mark.slow  # the int8 export (PT2E + XNNPACK lowering) takes 6-10 min on two busy cores
def test_int8_keeps_logits_close_to_fp32(target, fp32, int8):
    """Realistic random weights (random BN statistics and gammas): the int8 program's
    logits stay at cosine >= 0.98 to the fp32 program's, image by image."""
    from evit_export.targets.base import read_sidecar

    path, done = int8
    assert "PASS" in done.stdout and "1 XNNPACK partition" in done.stdout, done.stdout
    assert "cpuinfo" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    pixels = _pixels(8, seed=1)
    with target.open(fp32.path) as a, target.open(path) as b:
        want, got = a.run(pixels), b.run(pixels)
    cos = (want * got).sum(1) / (np.linalg.norm(want, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() >= 0.98, cos
    info = read_sidecar(path)["info"]
    assert target.read_spec(path).precision == "int8"
    calibration = info["calibration"]
    assert calibration["source"].startswith("16 images from calibration/") and not calibration["random"], calibration
    assert target.inspect(path).op_histogram["Convert"] > 0  # quantize/dequantize inside XNNPACK
    assert info["file_size"] < 0.5 * fp32.info["file_size"]


@pytest.mark.slow  # the int8 export (PT2E + XNNPACK lowering) takes 6-10 min on two busy cores
def test_cli_check_bench_inspect_simulate(int8):
    """The commands a user runs next on the .pte: check, bench with threads, inspect,
    and simulate, which refuses: no device profile is fitted for ExecuTorch, and no
    other format's profile (XNNPACK-based TFLite ones included) is borrowed."""
    from evit_export.validation.latency.profiles import builtin_profiles

    path, _ = int8
    root = path.parent
    # an int8 model is judged on real images of its classes: the digits folder it was calibrated on
    check = run_cli_process("check", path.name, "--images", "calibration", "--json", "-n", "6", cwd=root)
    assert check.returncode == 0 and json.loads(check.stdout)["passed"], check.stdout + check.stderr
    assert "_pytree" not in check.stderr and "Warning" not in check.stderr, check.stderr
    bench = run_cli_process("bench", path.name, "--threads", "1", "--iterations", "5", "--json", cwd=root)
    assert bench.returncode == 0 and "executorch (XNNPACK, 1 thread)" in bench.stdout, bench.stdout + bench.stderr
    inspected = json.loads(run_cli_process("inspect", path.name, "--json", cwd=root).stdout)
    assert inspected["target"] == "executorch" and inspected["extra"]["xnnpack_partitions"] == 1
    assert inspected["extra"]["memory_planned_arena_bytes"] > 0
    for name in list(builtin_profiles())[:2]:
        done = run_cli_process("simulate", path.name, "--device", name, cwd=root)
        text = done.stdout + done.stderr
        assert done.returncode == 2 and "executorch int8" in text and "Traceback" not in text, (name, text)
    help_text = run_cli_process("executorch", "-h").stdout
    for flag in ("--precision", "--batch", "--backend", "--calibration-data"):
        assert flag in help_text, help_text


def test_package_and_verify(fp32, tmp_path):
    from evit_export.packaging.package import build_package
    from evit_export.packaging.verify import verify_package

    pkg = build_package(fp32.path, tmp_path / "pkg", threads=1)
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["target"] == "executorch" and manifest["apps"] == ["python"]
    assert manifest["equivalence"]["passed"]
    assert any(row["kind"] == "measured" and row["runtime"].startswith("executorch") for row in manifest["latency"])
    # no device profile is fitted for ExecuTorch: no estimate borrowed from another format
    assert not [row for row in manifest["latency"] if row["kind"] == "estimate"]
    integration = (pkg / "INTEGRATION.md").read_text()
    assert "org.pytorch:executorch-android" in integration and "github.com/pytorch/executorch" in integration
    assert "executorch" in (pkg / "requirements.txt").read_text()
    assert verify_package(pkg).ok


def test_python_app_predicts_expected(fp32, tmp_path):
    """The package's predict.py (its own model_runtime.py over executorch.runtime) gives
    the scores expected.json recorded for the sample."""
    import subprocess
    import sys

    from evit_export.packaging.package import build_package

    pkg = build_package(fp32.path, tmp_path / "pkg", threads=1, measure=False)
    expected = json.loads((pkg / "expected.json").read_text())["artifact"]["top5"]
    done = subprocess.run([sys.executable, "predict.py", "sample.png", "--json"], cwd=pkg, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    top = json.loads(done.stdout)["sample.png"]
    assert [t["label"] for t in top] == [e["label"] for e in expected]
    assert abs(top[0]["score"] - expected[0]["score"]) < 1e-4


def test_remote_harness_runs_the_pte_with_only_the_runtime(fp32, tmp_path):
    """The script bench --remote uploads (harness + this format's opener), run here as a
    device would run it: a plain Python with the executorch runtime."""
    import subprocess
    import sys

    from evit_export.validation.latency.remote import remote_script

    script = tmp_path / "bench.py"
    script.write_text(remote_script(fp32.path))
    done = subprocess.run([sys.executable, str(script), str(fp32.path), "--threads", "1", "--iterations", "5"],
                          capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["runtime"].startswith("executorch 1.") and result["batch"] == 1 and result["threads"] == 1, result


def test_simulate_refuses_without_an_executorch_profile(fp32):
    from evit_export.validation.latency import estimates_for, require_fit
    from evit_export.validation.latency.profiles import builtin_profiles

    assert estimates_for(fp32.spec, "executorch", "fp32") == []
    for profile in builtin_profiles().values():
        assert "executorch" not in profile.formats
        with pytest.raises(UserError, match="executorch fp32"):
            require_fit(profile, "executorch", "fp32", fp32.path.name)


def test_localize_says_why_not(target, fp32):
    with target.open(fp32.path) as runner, pytest.raises(NotImplementedError, match="intermediate tensors"):
        runner.tensors(_pixels(1))


def test_bad_input_is_one_line(capsys, tmp_path, target):
    fake = tmp_path / "fake.pte"
    fake.write_bytes(b"not a program at all")
    with pytest.raises(UserError, match="not an ExecuTorch program"):
        target.read_spec(fake)
    code, _, err = run_cli(capsys, "inspect", fake)
    assert "not an ExecuTorch program" in assert_one_line_error(code, err)
    for bad, message in (({"precision": "int4"}, "precision=int4"), ({"batch": 0}, "batch=0"),
                         ({"calibration_data": "random"}, "only applies to int8"),
                         ({"backend": "coreml", "precision": "int8"}, "backend=coreml")):
        with pytest.raises(UserError, match=message):
            ExecuTorchOptions(**bad)
    with pytest.raises(UserError, match="must end in .pte"):
        target.check_output(tmp_path / "m.onnx", ExecuTorchOptions())


def test_sweep_precisions_map(target):
    from evit_export.targets.base import PrecisionNotApplicable

    assert ExecuTorchOptions.for_precision("int8", calibration_data="random").calibration_data == "random"
    assert ExecuTorchOptions.for_precision("fp16").precision_label() == "fp16"
    with pytest.raises(PrecisionNotApplicable):
        ExecuTorchOptions.for_precision("int4")
