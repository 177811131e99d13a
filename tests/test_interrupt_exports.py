"""Issue 15: Ctrl-C in the middle of an export stops it: no new artifact, exit 130, one
line saying what stopped. CoreML's converter swallows KeyboardInterrupt, so this is the
case that used to write the package and print PASS."""
from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

# find_spec, not importorskip: importing coremltools here (it imports TensorFlow) before
# torch's triton would crash this test process (see evit_export.core.import_order).
if importlib.util.find_spec("coremltools") is None:
    pytest.skip("coremltools is not installed (pip install 'evit-export[coreml]')", allow_module_level=True)


def _start(out, tmp):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TMPDIR=str(tmp))
    return subprocess.Popen([sys.executable, "-m", "evit_export", "coreml", "--variant", "m0", "--img-size", "64",
                             "--num-classes", "10", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _assert_stopped(proc, out, tmp_path):
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(("W0000", "I0000"))]
    assert lines[-1].startswith("interrupted"), stderr
    assert "Traceback" not in stderr and "PASS" not in stdout
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("m0.mlpackage")]
    return lines[-1]


def test_ctrl_c_while_coremltools_converts(tmp_path):
    """SIGINT once coremltools has started writing its package in the temp folder:
    conversion is under way, inside the code that used to swallow the interrupt."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "m0.mlpackage"
    proc = _start(out, tmp)
    deadline = time.monotonic() + 240
    while not any(p.suffix == ".mlpackage" for p in tmp.rglob("*")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "conversion never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    line = _assert_stopped(proc, out, tmp_path)
    assert line == "interrupted: CoreML export of m0.mlpackage stopped; nothing was written", line


def test_ctrl_c_during_start_up_imports(tmp_path):
    """SIGINT while torch / coremltools load: held until the import is complete (an
    interrupted TensorFlow import crashes at exit), then a clean stop."""
    out = tmp_path / "m0.mlpackage"
    proc = _start(out, tmp_path)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    _assert_stopped(proc, out, tmp_path)
