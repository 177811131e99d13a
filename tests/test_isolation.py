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
    assert "\n" not in msg and isinstance(info.value, UserError)
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
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Conversion of testformat crashed (SIGSEGV)" in lines[0]
