"""Ctrl-C, one mechanism (core.interrupt): a real SIGINT ends a cancellable block with
``Cancelled`` even when the code inside swallows ``KeyboardInterrupt`` (as converters
that catch broad exceptions do), and nothing is published through ``core.atomic``."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from evit_export.core.atomic import atomic_path
from evit_export.core.interrupt import Cancelled, cancellable, protected, raise_if_cancelled


def _sigint_self():
    os.kill(os.getpid(), signal.SIGINT)


def _swallowing_converter(out):
    """Stands for a library call that catches everything, then carries on writing."""
    try:
        _sigint_self()
        for _ in range(1000):  # the signal is delivered between bytecodes
            pass
    except BaseException:  # noqa: BLE001 - swallowing is the point of this test
        pass
    out.write_bytes(b"artifact")


def test_swallowed_ctrl_c_still_cancels_and_publishes_nothing(tmp_path):
    dest = tmp_path / "model.mlpackage.bin"
    with pytest.raises(Cancelled) as info:
        with cancellable("CoreML conversion of model.mlpackage"):
            with atomic_path(dest) as tmp:
                _swallowing_converter(tmp)
    assert str(info.value) == "CoreML conversion of model.mlpackage stopped; nothing was written"
    assert isinstance(info.value, KeyboardInterrupt)  # the CLI's one handler: exit 130
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_interrupt_turned_into_another_error_is_still_a_cancel(tmp_path):
    def wrapping_library():
        try:
            _sigint_self()
            for _ in range(1000):
                pass
        except KeyboardInterrupt:
            raise RuntimeError("conversion failed") from None

    with pytest.raises(Cancelled):
        with cancellable("conversion"):
            wrapping_library()


def test_protected_section_finishes_then_raises(tmp_path):
    written = []
    with pytest.raises(Cancelled, match="training stopped; epoch 3 is saved"):
        with cancellable("training", detail=lambda: "epoch 3 is saved"):
            with protected():
                _sigint_self()
                for name in ("weights", "state", "log"):
                    # published through core.atomic, whose rename checks for Ctrl-C:
                    # inside protected() it must wait, or the run is left half-written
                    with atomic_path(tmp_path / name) as tmp:
                        tmp.write_text(name)
                    written.append(name)
            written.append("never")
    assert written == ["weights", "state", "log"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "state", "weights"]


def test_no_interrupt_no_effect_and_handler_restored(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    with cancellable("x"):
        raise_if_cancelled()
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("ok")
    assert (tmp_path / "a.txt").read_text() == "ok"
    assert signal.getsignal(signal.SIGINT) is before
    # outside any block the flag of an earlier cancel is not consulted
    with pytest.raises(Cancelled):
        with cancellable("y"):
            _sigint_self()
            for _ in range(1000):
                pass
    with atomic_path(tmp_path / "b.txt") as tmp:
        tmp.write_text("ok")
    assert (tmp_path / "b.txt").exists()


def test_real_process_exits_130_with_one_line(tmp_path):
    """A process whose work swallows the interrupt: the CLI's handler (any
    KeyboardInterrupt -> exit 130) sees Cancelled, and no output appears."""
    script = textwrap.dedent(f"""
        import os, signal, sys, time
        from evit_export.core.atomic import atomic_path
        from evit_export.core.interrupt import cancellable
        try:
            with cancellable("export of out.bin"):
                with atomic_path({str(tmp_path / 'out.bin')!r}) as tmp:
                    print("ready", flush=True)
                    deadline = time.time() + 30
                    while time.time() < deadline:
                        try:
                            time.sleep(0.05)
                        except KeyboardInterrupt:
                            break  # a converter that swallows it and goes on
                    tmp.write_bytes(b"x")
        except KeyboardInterrupt as e:
            print(f"interrupted: {{e}}", file=sys.stderr)
            sys.exit(130)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "interrupted: export of out.bin stopped; nothing was written"
    assert list(tmp_path.iterdir()) == []


def test_inner_block_takes_back_a_replaced_handler(tmp_path):
    """A library that installs its own SIGINT handler (here: one that ignores it) while
    imported inside the command: the exporter's own block, entered after the import,
    takes Ctrl-C back, and the outer handler is restored afterwards."""
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(Cancelled, match="^conversion stopped"):
        with cancellable("command"):
            outer = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the library's import
            with cancellable("conversion"):
                with atomic_path(tmp_path / "out.bin") as tmp:
                    _swallowing_converter(tmp)
    assert signal.getsignal(signal.SIGINT) is before
    assert outer is not before
    assert list(tmp_path.iterdir()) == []
