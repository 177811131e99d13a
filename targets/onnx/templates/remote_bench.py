# Opener for evit-export's remote bench harness (validation/latency/remote_bench_script.py):
# inserted into the harness, which defines fail, random_input, MISSING_RUNTIME and CANNOT_RUN.
# Runs on the device with its own Python and runtime only.
# ruff: noqa: F821


def import_runtime():
    """Called by the harness before its memory baseline."""
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        fail(MISSING_RUNTIME, error="runtime missing", package="onnxruntime")


def open_model(path, threads, batch):
    import_runtime()
    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else batch for d in inp.shape]
    dtype = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
             "tensor(int8)": "int8"}.get(inp.type, "float32")
    feed = {inp.name: random_input(shape, dtype, np)}
    return (lambda: session.run(None, feed)), f"onnxruntime {ort.__version__}", shape
