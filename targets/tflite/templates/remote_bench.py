# Opener for evit-export's remote bench harness (validation/latency/remote_bench_script.py):
# inserted into the harness, which defines fail, random_input, MISSING_RUNTIME and CANNOT_RUN.
# Runs on the device with its own Python and runtime only.
# ruff: noqa: F821


def tflite_interpreter(path, threads):
    mod, package = tflite_runtime_module()
    return mod.Interpreter(model_path=path, num_threads=threads or None), package


def import_runtime():
    """Called by the harness before its memory baseline: the first runtime that imports."""
    tflite_runtime_module()


def tflite_runtime_module():
    for module, package in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                            ("tflite_runtime.interpreter", "tflite-runtime"), ("tensorflow.lite", "tensorflow")):
        try:
            return __import__(module, fromlist=["Interpreter"]), package
        except ImportError:
            continue
    fail(MISSING_RUNTIME, error="runtime missing", package="ai-edge-litert")


def open_model(path, threads, batch):
    import numpy as np

    interpreter, runtime = tflite_interpreter(path, threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = random_input(list(detail["shape"]), np.dtype(detail["dtype"]).name, np)

    def call():
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    return call, runtime, list(detail["shape"])
