# Opener for evit-export's remote bench harness (validation/latency/remote_bench_script.py):
# inserted into the harness, which defines fail, random_input, MISSING_RUNTIME and CANNOT_RUN.
# Runs on the device with its own Python and the executorch runtime only.
# ruff: noqa: F821


def import_runtime():
    """Called by the harness before its memory baseline: torch + the ExecuTorch bindings."""
    try:
        import torch  # noqa: F401
        from executorch.runtime import Runtime  # noqa: F401
    except ImportError:
        fail(MISSING_RUNTIME, error="runtime missing", package="executorch")


def open_model(path, threads, batch):
    import numpy as np
    import torch
    from executorch import version as et_version
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    if threads:
        portable_lib._unsafe_reset_threadpool(int(threads))  # XNNPACK's workers: one pool per process
    try:
        method = Runtime.get().load_program(path).load_method("forward")
    except Exception as e:  # noqa: BLE001 - e.g. a delegate this runtime lacks (CoreML off Apple devices)
        fail(CANNOT_RUN, error=f"executorch cannot load {path}: {str(e).splitlines()[0] if str(e) else e!r}")
    shape = list(method.metadata.input_tensor_meta(0).sizes())
    raw = method._method  # inputs set once; each timed call runs the plan only
    raw.set_inputs((torch.from_numpy(random_input(shape, "float32", np)),))
    return raw.execute, f"executorch {et_version.__version__}", shape
