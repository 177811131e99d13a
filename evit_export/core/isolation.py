"""Run a converter (or a runtime) in a child process, so that a native crash in it
(segfault, abort, out-of-memory kill) becomes a one-line error and the calling process
carries on: a sweep keeps going with its other cells, the CLI exits 2 instead of dying.

``run_isolated(fn, *args, step=..., fmt=...)`` calls ``fn(*args, **kwargs)`` in a
``multiprocessing`` *spawn* child (a fresh interpreter: no TensorFlow/triton import
order inherited from the parent, no forked torch thread pools) and returns its result.
A ``UserError`` raised in the child is raised again here unchanged; any other exception
keeps its type where it can be pickled; a child killed by a signal raises
``WorkerCrashed("<step> of <format> crashed (SIGSEGV) …")``.

The child's stdout/stderr go to a log file (converters print progress bars and C++
warnings; a crash may print a few lines of its own); the last line of that log is
quoted in the error, so the user still sees one line.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from multiprocessing.connection import wait
from pathlib import Path

from evit_export.core.atomic import scratch_dir
from evit_export.core.errors import UserError


class WorkerCrashed(UserError):
    """A worker process died natively (signal) or exited without an answer."""

    def __init__(self, message: str, *, step: str, fmt: str, exitcode: int | None):
        super().__init__(message)
        self.step, self.fmt, self.exitcode = step, fmt, exitcode

    def __reduce__(self):  # picklable, so a nested worker can pass it on
        return _rebuild_crash, (str(self), self.step, self.fmt, self.exitcode)


def _rebuild_crash(message, step, fmt, exitcode):
    return WorkerCrashed(message, step=step, fmt=fmt, exitcode=exitcode)


def signal_name(exitcode: int) -> str:
    """``-11`` -> ``SIGSEGV`` (multiprocessing reports death by signal N as -N)."""
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def die_with_parent(expected_parent: int | None = None) -> None:
    """Linux: the kernel kills this child when the parent dies (SIGKILL of the CLI must
    not leave a converter running on, writing into a folder nobody cleans up). With
    ``expected_parent``, a child whose parent is already another process stops at once."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: best effort only
        pass
    parent = os.getppid()
    if parent == 1 or (expected_parent is not None and parent != expected_parent):
        os.kill(os.getpid(), signal.SIGKILL)  # the parent died before prctl: follow it now


def _child_main(conn, log_path, fn, args, kwargs) -> None:
    die_with_parent()
    # fd level, so native libraries' output goes to the log too.
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        result = fn(*args, **kwargs)
        conn.send(("ok", result))
    except BaseException as e:  # noqa: BLE001 (reported to the parent, which raises it again)
        try:
            conn.send(("error", e))
        except Exception:  # noqa: BLE001 (the exception itself does not pickle)
            conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        conn.close()


def _last_line(log_path: Path) -> str:
    try:
        text = log_path.read_bytes()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def crash_message(step: str, fmt: str, exitcode: int | None, log_tail: str) -> str:
    if exitcode is not None and exitcode < 0:
        how = f"crashed ({signal_name(exitcode)})"
    elif exitcode is None:
        how = "did not finish"
    else:
        how = f"exited with status {exitcode} without a result"
    said = f"; its last output: {log_tail!r}" if log_tail else ""
    return (f"{step} of {fmt} {how} in its worker process{said}; nothing was written — "
            "retry, or try another precision/format or a newer converter version")


# multiprocessing's resource tracker (a helper process) warns at exit about semaphores a
# worker could not release; a worker killed on purpose (Ctrl-C, timeout) leaves some, and
# the warning would be a second, useless line on the user's terminal. The tracker takes
# its warning filters from this process's -W options (sys.warnoptions) when it starts.
_TRACKER_FILTER = "ignore::UserWarning:multiprocessing.resource_tracker"


def _quiet_resource_tracker() -> None:
    if _TRACKER_FILTER not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_FILTER)


def run_isolated(fn, *args, step: str, fmt: str, timeout: float | None = None, while_waiting=None, **kwargs):
    """``fn(*args, **kwargs)`` in a spawned child; see the module docstring.

    ``fn``, the arguments and the result must pickle (module-level functions, tensors,
    nn.Modules, paths). ``timeout`` (seconds) kills the child and raises WorkerCrashed.
    ``while_waiting``: called here once the child has started (work this process needs
    next, such as an import, done while the child works instead of after it).
    """
    _quiet_resource_tracker()
    ctx = multiprocessing.get_context("spawn")
    with scratch_dir("evit-worker-") as tmp:
        log_path = Path(tmp) / "worker.log"
        log_path.touch()
        receiver, sender = ctx.Pipe(duplex=False)
        # Not a daemon: a converter may start processes of its own. The finally below and
        # PR_SET_PDEATHSIG (in the child) make sure it never outlives this call.
        proc = ctx.Process(target=_child_main, args=(sender, str(log_path), fn, args, kwargs))
        proc.start()
        sender.close()
        message, ready = None, []
        try:
            if while_waiting is not None:
                while_waiting()
            # Read before join: a large result would block the child on a full pipe.
            ready = wait([receiver, proc.sentinel], timeout)
            if receiver in ready:
                try:
                    message = receiver.recv()
                except EOFError:  # died after closing its end
                    message = None
            proc.join(None if message is not None else 5)
        finally:
            if proc.is_alive():  # timeout, Ctrl-C or an error here: never leave it running
                proc.kill()
                proc.join()
            receiver.close()
        if message is None:
            exitcode = proc.exitcode
            if not ready:
                raise WorkerCrashed(f"{step} of {fmt} did not finish within {timeout:g} s and was stopped; "
                                    "nothing was written — retry with a smaller model or a longer timeout",
                                    step=step, fmt=fmt, exitcode=exitcode)
            raise WorkerCrashed(crash_message(step, fmt, exitcode, _last_line(log_path)),
                                step=step, fmt=fmt, exitcode=exitcode)
    kind, value = message
    if kind == "error":
        raise value
    return value
