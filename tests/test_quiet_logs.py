"""Issue 15: TensorFlow / absl / oneDNN / LiteRT log lines never reach the user's
terminal in coreml, inspect, parity or bench (they go to fd 2 from native code)."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

from cli_helpers import run_cli_process

if importlib.util.find_spec("coremltools") is None or importlib.util.find_spec("ai_edge_litert") is None:
    pytest.skip("needs the [coreml] and [tflite] extras", allow_module_level=True)

NOISE = re.compile(r"^([IWE]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|INFO: Created TensorFlow"
                   r"|.*oneDNN custom operations)", re.M)

EXPORT = """
import sys
import evit_export
from evit_export.data import DIGITS_LABELS
model = evit_export.load_model("m0", num_classes=10, img_size=64, labels=list(DIGITS_LABELS), seed=0)
evit_export.export(model, "tflite", out=sys.argv[1] + "/m0.tflite")
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet")
    subprocess.run([sys.executable, "-c", EXPORT, str(root)], check=True, capture_output=True, timeout=600)
    r = run_cli_process("coreml", "--variant", "m0", "--img-size", "64", "--num-classes", "10",
                        "--out", root / "m0.mlpackage")
    assert r.returncode == 0, r.stderr
    assert not NOISE.search(r.stderr), r.stderr
    return root


@pytest.mark.parametrize("args", [("inspect", "m0.mlpackage"), ("inspect", "m0.tflite"),
                                  # opt-in (18 s): inspect and parity start the same runtimes
                                  pytest.param(("bench", "m0.mlpackage", "m0.tflite", "--iterations", "3"),
                                               marks=pytest.mark.slow),
                                  ("parity", "m0.tflite", "--limit", "20")])
def test_no_native_log_lines(artifacts, args):
    r = run_cli_process(*args, cwd=artifacts)
    assert r.returncode == 0, r.stderr
    assert not NOISE.search(r.stderr), r.stderr
    assert not NOISE.search(r.stdout), r.stdout
