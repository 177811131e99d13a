"""ExecuTorch from the command line beyond the default tests in test_executorch.py: a
missing runtime is one line naming the extra; (slow) fp16, the sweep, and M0-M5 at
224 px staying in one XNNPACK partition."""
from __future__ import annotations

import importlib.util
import json
import os

import pytest
from cli_helpers import run_cli_process

if importlib.util.find_spec("executorch") is None:
    pytest.skip("needs the [executorch] extra", allow_module_level=True)


def test_missing_runtime_is_one_line(tmp_path):
    """Without executorch installed, the export command names the extra (a
    sitecustomize hides the module from this process)."""
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'executorch' or name.startswith('executorch.'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, Hide())\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    done = run_cli_process("executorch", "-v", "m0", "--img-size", "64", "--num-classes", "10", "-o",
                           tmp_path / "m.pte", env=env, cwd=tmp_path)
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "pip install 'evit-export[executorch]'" in lines[0]
    assert not (tmp_path / "m.pte").exists()


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ExecuTorch lowering: many minutes per program on two cores
def test_fp16_export_and_check(tmp_path):
    done = run_cli_process("executorch", "-v", "m0", "--img-size", "64", "--num-classes", "10", "--precision",
                           "fp16", "-n", "8", "-o", tmp_path / "m0_fp16.pte", cwd=tmp_path, timeout=1800)
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr
    inspected = json.loads(run_cli_process("inspect", tmp_path / "m0_fp16.pte", "--json").stdout)
    assert inspected["extra"]["xnnpack_partitions"] == 1


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ExecuTorch lowering: many minutes per program on two cores
def test_sweep_executorch(tmp_path):
    from conftest import write_digits_folder

    # an M0 of 10 unnamed classes is not the digits model: int8 is calibrated and judged on
    # images of its domain (a folder of real digits, 10 classes)
    images = write_digits_folder(tmp_path / "digits", 24, size=64)
    done = run_cli_process("sweep", "--variants", "m0", "--targets", "executorch", "--precisions", "fp32,int8",
                           "--img-size", "64", "--num-classes", "10", "--calibration-data", images, "--data", images,
                           "--out", "sw", cwd=tmp_path, timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    cells = {c["precision"]: c for c in json.loads((tmp_path / "sw" / "results.json").read_text())["cells"]}
    assert cells["fp32"]["status"] == "done" and cells["fp32"]["verdict"] == "pass", cells["fp32"]
    assert cells["int8"]["status"] == "done", cells["int8"]


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ExecuTorch lowering: many minutes per program on two cores
@pytest.mark.parametrize("variant", ["m0", "m1", "m2", "m3", "m4", "m5"])
def test_variants_at_224_stay_in_one_partition(variant, tmp_path):
    done = run_cli_process("executorch", "-v", variant, "-n", "4", "-o", tmp_path / f"{variant}.pte", cwd=tmp_path,
                           timeout=3600)
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout + done.stderr
    inspected = json.loads(run_cli_process("inspect", tmp_path / f"{variant}.pte", "--json").stdout)
    assert inspected["extra"]["xnnpack_partitions"] == 1 and inspected["extra"]["non_delegated_ops"] == {}


@pytest.mark.slow
@pytest.mark.timeout(3600)  # ExecuTorch lowering: many minutes per program on two cores
def test_coreml_backend_exports_here_and_runs_only_on_apple(tmp_path):
    """The CoreML delegate is compiled on Linux; the Linux runtime has no CoreMLBackend,
    so opening the program is one line saying where it runs (checkable only on a Mac)."""
    done = run_cli_process("executorch", "-v", "m0", "--img-size", "64", "--num-classes", "10", "--backend",
                           "coreml", "--precision", "fp16", "--no-check", "-o", tmp_path / "m0_coreml.pte",
                           cwd=tmp_path, timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    inspected = json.loads(run_cli_process("inspect", tmp_path / "m0_coreml.pte", "--json").stdout)
    assert inspected["extra"]["delegate_calls"].get("CoreMLBackend", 0) >= 1
    check = run_cli_process("check", tmp_path / "m0_coreml.pte")
    assert check.returncode == 2 and "CoreMLBackend" in check.stderr and "Traceback" not in check.stderr, check.stderr
