"""Converter isolation: a worker that crashes natively (a real SIGSEGV / SIGABRT in a
real child process) becomes one WorkerCrashed line naming the step and the format,
and the calling process carries on."""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from evit_export.core.errors import UserError
from evit_export.core.isolation import WorkerCrashed, run_isolated


def test_result_comes_back():
    assert run_isolated(divmod, 17, 5, step="arithmetic", fmt="test") == (3, 2)


def test_segfault_becomes_one_line_and_caller_carries_on():
    # ctypes.string_at(0) reads address 0: a real segmentation fault in the child.
    with pytest.raises(WorkerCrashed) as info:
        run_isolated(ctypes.string_at, 0, step="CoreML conversion", fmt="mlprogram")
    msg = str(info.value)
    assert msg.startswith("CoreML conversion of mlprogram crashed (SIGSEGV)"), msg
    assert "\n" not in msg
    assert isinstance(info.value, UserError)
    assert info.value.exitcode == -signal.SIGSEGV
    # the caller is alive and a next cell runs
    assert run_isolated(pow, 2, 10, step="next", fmt="cell") == 1024


def test_abort_is_named():
    with pytest.raises(WorkerCrashed, match=r"^TFLite conversion of int8 crashed \(SIGABRT\)"):
        run_isolated(os.abort, step="TFLite conversion", fmt="int8")


def test_exit_without_result_and_timeout():
    with pytest.raises(WorkerCrashed, match="exited with status 7 without a result"):
        run_isolated(os._exit, 7, step="export", fmt="onnx")
    with pytest.raises(WorkerCrashed, match="did not finish within 0.5 s"):
        run_isolated(signal.pause, step="export", fmt="onnx", timeout=0.5)


def test_errors_keep_their_type():
    with pytest.raises(ValueError, match="invalid literal"):
        run_isolated(int, "x", step="parse", fmt="text")
    with pytest.raises(UserError, match="bad input"):
        run_isolated(_raise_user_error, step="parse", fmt="text")


def _raise_user_error():
    raise UserError("bad input: fix it")


CLI_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    import typer
    from evit_export.cli import app, main
    from evit_export.core.isolation import run_isolated

    @app.command("crashy")
    def crashy():
        run_isolated(ctypes.string_at, 0, step="Conversion", fmt="testformat")

    if __name__ == "__main__":  # spawn re-imports the main module in the worker
        main(sys.argv[1:])
""")


def test_cli_prints_one_line_and_exits_2(tmp_path):
    # A real process, as a user runs it: no traceback, one line, exit 2.
    script = tmp_path / "crashy.py"
    script.write_text(CLI_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), "crashy"], capture_output=True, text=True, timeout=120, check=False,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Conversion of testformat crashed (SIGSEGV)" in lines[0]


# A converter that crashes natively, for real: ``sitecustomize`` (on PYTHONPATH for the
# CLI process and every process it starts) makes the converter's own process read
# address 0 when it imports the converter library. The CLI process itself never
# crashes: it only runs the converter in a worker.
CRASHING_SITE = textwrap.dedent("""
    import ctypes, importlib.abc, sys

    def _cmdline():
        with open("/proc/self/cmdline", "rb") as f:
            return f.read().replace(b"\\0", b" ").decode(errors="replace")

    class _CrashOnImport(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == MODULE and WORKER in _cmdline():
                ctypes.string_at(0)  # SIGSEGV
            return None

    sys.meta_path.insert(0, _CrashOnImport())
""")


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    d = tmp_path_factory.mktemp("iso")
    proc = subprocess.run([sys.executable, "-m", "evit_export", "fold", "-v", "m0", "--seed", "0", "--img-size",
                           "64", "--num-classes", "10", "-o", str(d / "m0.safetensors")], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    return d / "m0.safetensors"


@pytest.mark.parametrize("fmt, module, worker, out_name, step", [
    ("tflite", "tensorflow", "evit_export.targets.tflite.worker", "m0.tflite", "TFLite"),
    ("coreml", "coremltools", "--multiprocessing-fork", "m0.mlpackage", "CoreML"),
])
def test_converter_crash_in_worker(small_checkpoint, tmp_path, fmt, module, worker, out_name, step):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(f"MODULE = {module!r}\nWORKER = {worker!r}\n" + CRASHING_SITE)
    out = tmp_path / "out" / out_name
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "evit_export", fmt, "-c", str(small_checkpoint), "-o", str(out),
                           "--no-check"], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error:"), lines[-1]
    assert step in lines[-1], lines[-1]
    assert "SIGSEGV" in lines[-1], lines[-1]
    assert sum(ln.startswith("error") for ln in lines) == 1, proc.stderr
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")] if out.parent.exists() else True
