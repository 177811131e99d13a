# Opener for evit-export's remote bench harness (validation/latency/remote_bench_script.py):
# inserted into the harness, which defines fail, random_input, MISSING_RUNTIME and CANNOT_RUN.
# Runs on the device with its own Python and the executorch runtime only.
# ruff: noqa: F821


def open_model(path, threads, batch):
    try:
        import numpy as np
        import torch
        from executorch import version as et_version
        from executorch.extension.pybindings import portable_lib
        from executorch.runtime import Runtime
    except ImportError:
        fail(MISSING_RUNTIME, error="runtime missing", package="executorch")
    if threads:
        portable_lib._unsafe_reset_threadpool(int(threads))  # XNNPACK's workers: one pool per process
    try:
        method = Runtime.get().load_program(path).load_method("forward")
    except Exception as e:  # e.g. a delegate this runtime lacks
        fail(CANNOT_RUN, error=f"executorch cannot load {path}: {e}")
    meta = method.metadata.input_tensor_meta(0)
    shape = list(meta.sizes())
    raw = method._method
    raw.set_inputs((torch.from_numpy(random_input(shape, "float32", np)),))
    return raw.execute, f"executorch {et_version.__version__}", shape
