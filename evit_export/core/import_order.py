"""Import-order guard for TensorFlow.

On this stack, importing TensorFlow before torch's triton (which ``torch._dynamo``
imports) segfaults the process, and coremltools imports TensorFlow at import time
when it is installed. So ``import torch; import coremltools`` dies with SIGSEGV
while ``import torch; import torch._dynamo; import coremltools`` works. Every
module that imports tensorflow, coremltools or LiteRT calls ``tf_safe()`` first.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from evit_export.core.interrupt import protected


def quiet_runtime_logs() -> None:
    """coremltools warns at import about missing macOS-only proxies and untested
    versions, TensorFlow prints C++ INFO lines; none of it is actionable for a user."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    # torchao (which coremltools and executorch import) registers its enums with torch's
    # pytree, and torch logs a deprecation line addressed to torchao's developers
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def tf_safe() -> None:
    """Load torch and triton (via torch._dynamo) before anything imports TensorFlow."""
    quiet_runtime_logs()
    if "torch._dynamo" in sys.modules:
        return
    if "tensorflow" in sys.modules:
        # Too late to fix the order in this process; torch must not load triton now.
        return

    # Ctrl-C in the middle of these imports leaves native modules half initialised and
    # the process segfaults on its way out: hold it until they are done.
    with protected():
        import torch
        import torch._dynamo  # noqa: F401


# Lines the native runtimes print straight to file descriptor 2 (absl / glog INFO and
# WARNING lines, TensorFlow's oneDNN notice, LiteRT's delegate notice): not actionable
# for a user, and Python's logging settings cannot reach them.
_NATIVE_NOISE = re.compile(r"^([IW]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::InitializeLog"
                           r"|INFO: Created TensorFlow Lite|INFO: Initialized TensorFlow Lite)")


@contextlib.contextmanager
def native_logs_filtered() -> Iterator[None]:
    """Run a block with fd 2 captured; afterwards pass on what it printed except the
    native runtimes' INFO/WARNING noise (errors and Python warnings still show)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not _NATIVE_NOISE.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()
