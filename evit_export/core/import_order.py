"""Import-order guard for TensorFlow.

On this stack, importing TensorFlow before torch's triton (which ``torch._dynamo``
imports) segfaults the process, and coremltools imports TensorFlow at import time
when it is installed. So ``import torch; import coremltools`` dies with SIGSEGV
while ``import torch; import torch._dynamo; import coremltools`` works. Every
module that imports tensorflow, coremltools or LiteRT calls ``tf_safe()`` first.
"""
from __future__ import annotations

import sys


def quiet_runtime_logs() -> None:
    """coremltools warns at import about missing macOS-only proxies and untested
    versions, TensorFlow prints C++ INFO lines; none of it is actionable for a user."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def tf_safe() -> None:
    """Load torch and triton (via torch._dynamo) before anything imports TensorFlow."""
    quiet_runtime_logs()
    if "torch._dynamo" in sys.modules:
        return
    if "tensorflow" in sys.modules:
        # Too late to fix the order in this process; torch must not load triton now.
        return
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401
