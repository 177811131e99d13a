"""Ctrl-C, one mechanism for every long command: training, conversions, checks.

Python turns SIGINT into ``KeyboardInterrupt`` at the next bytecode, but a converter
that catches broad exceptions (or runs native code that reports failure its own way)
can swallow it and carry on to write its output. Inside ``cancellable(what)`` a SIGINT
also sets a flag that the interrupt cannot take back: ``raise_if_cancelled()`` (called
before anything is published; ``core.atomic`` calls it before every rename) and the end
of the block turn it into ``Cancelled(what)``, whatever the code in between did with
the ``KeyboardInterrupt``. ``protected()`` holds Ctrl-C while files that belong together
are written (a checkpoint and its training state) and delivers it afterwards.

``Cancelled`` is a ``KeyboardInterrupt``, so the CLI's one handler prints its message
(one line) and exits 130.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator


class Cancelled(KeyboardInterrupt):
    """Ctrl-C stopped ``what``; ``str()`` is the one-line message for the user."""

    def __init__(self, what: str, detail: str = "nothing was written"):
        super().__init__(f"{what} stopped; {detail}")
        self.what = what


class _State:
    def __init__(self):
        self.requested = False  # a SIGINT arrived inside a cancellable block
        self.depth = 0  # nesting of cancellable blocks
        self.held = 0  # nesting of protected sections: raise later, not now
        self.pending = False  # a SIGINT arrived while held


_state = _State()


def _on_sigint(signum, frame) -> None:
    _state.requested = True
    if _state.held:
        _state.pending = True
        return
    raise KeyboardInterrupt


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_if_cancelled() -> None:
    """Raise ``KeyboardInterrupt`` again when Ctrl-C arrived inside the current
    ``cancellable`` block, even if the first one was swallowed; the block turns it
    into ``Cancelled`` with its own description. Inside ``protected()`` it waits: files
    that belong together are all published, and the end of that section raises."""
    if _state.depth and _state.requested and not _state.held:
        raise KeyboardInterrupt


def _cancelled(what: str, detail: str | Callable[[], str]) -> Cancelled:
    return Cancelled(what, detail() if callable(detail) else detail)


@contextlib.contextmanager
def cancellable(what: str, detail: str | Callable[[], str] = "nothing was written") -> Iterator[None]:
    """Run a block so that Ctrl-C ends it with ``Cancelled(what, detail)``; ``detail``
    may be a function, asked when the interrupt arrives (what is left at that moment).

    A library that installs its own SIGINT handler when imported replaces ours: enter
    (another) block after such imports. Outside the main thread it only checks the flag.
    """
    # Install at the outermost block, and again in an inner one when a library imported
    # in between has put its own handler in place (ours comes back when it ends).
    install = _in_main_thread() and signal.getsignal(signal.SIGINT) is not _on_sigint
    previous = signal.signal(signal.SIGINT, _on_sigint) if install else None
    if _state.depth == 0:
        _state.requested = _state.pending = False
    _state.depth += 1
    try:
        yield
    except KeyboardInterrupt as e:
        if isinstance(e, Cancelled):
            raise
        raise _cancelled(what, detail) from None
    except BaseException:
        if _state.requested:  # the interrupt surfaced as some other error
            raise _cancelled(what, detail) from None
        raise
    finally:
        _state.depth -= 1
        if install:
            signal.signal(signal.SIGINT, previous)
    if _state.requested:  # swallowed inside the block
        raise _cancelled(what, detail)


@contextlib.contextmanager
def protected() -> Iterator[None]:
    """Hold Ctrl-C until the block has finished (files that must be written together);
    then raise it. Outside a ``cancellable`` block it holds SIGINT on its own."""
    own = _in_main_thread() and _state.depth == 0
    previous = signal.signal(signal.SIGINT, _on_sigint) if own else None
    _state.held += 1
    try:
        yield
    finally:
        _state.held -= 1
        if own:
            signal.signal(signal.SIGINT, previous)
    if _state.pending and not _state.held:
        _state.pending = False
        if own:
            _state.requested = False
        raise KeyboardInterrupt
