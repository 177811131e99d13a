"""Latency of one model file, measured on the machine this script runs on.

Shipped to a remote device by ``evit-export bench --remote`` and run there with the
device's own Python. Self-contained on purpose: standard library plus the runtime
that opens the model (onnxruntime, LiteRT / tflite-runtime / TensorFlow Lite, or
coremltools on macOS), because nothing of evit-export is installed on the device.
Prints one JSON object; exit status 3 names a missing runtime, 4 a model it cannot run.

    python remote_bench_script.py MODEL [--threads N] [--iterations N] [--batch N]
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

MISSING_RUNTIME, CANNOT_RUN = 3, 4


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Hardware", "Model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{platform.node()}: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def fail(code: int, **info):
    print(json.dumps(info))
    sys.exit(code)


def random_input(shape, dtype_name: str, np):
    rng = np.random.default_rng(0)
    if "int" in dtype_name:
        return rng.integers(0, 255 if "uint" in dtype_name else 127, size=shape).astype(dtype_name)
    return rng.standard_normal(shape).astype(dtype_name)


def onnx_call(path, threads, batch):
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        fail(MISSING_RUNTIME, error="runtime missing", package="onnxruntime")
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


def tflite_interpreter(path, threads):
    for module, package in (("ai_edge_litert.interpreter", "ai-edge-litert"),
                            ("tflite_runtime.interpreter", "tflite-runtime"), ("tensorflow.lite", "tensorflow")):
        try:
            mod = __import__(module, fromlist=["Interpreter"])
        except ImportError:
            continue
        return mod.Interpreter(model_path=path, num_threads=threads or None), f"{package}"
    fail(MISSING_RUNTIME, error="runtime missing", package="ai-edge-litert")


def tflite_call(path, threads, batch):
    import numpy as np

    interpreter, runtime = tflite_interpreter(path, threads)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    x = random_input(list(detail["shape"]), np.dtype(detail["dtype"]).name, np)

    def call():
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
    return call, runtime, list(detail["shape"])


def coreml_call(path, threads, batch):
    if platform.system() != "Darwin":
        fail(CANNOT_RUN, error="CoreML models run only on macOS (coremltools MLModel.predict)")
    try:
        import coremltools as ct
        import numpy as np
    except ImportError:
        fail(MISSING_RUNTIME, error="runtime missing", package="coremltools")
    model = ct.models.MLModel(path)
    inp = model.get_spec().description.input[0]
    if inp.type.WhichOneof("Type") == "imageType":
        from PIL import Image

        size = (inp.type.imageType.width, inp.type.imageType.height)
        feed = {inp.name: Image.fromarray(random_input((size[1], size[0], 3), "uint8", np))}
        shape = [1, 3, size[1], size[0]]
    else:
        shape = list(inp.type.multiArrayType.shape)
        feed = {inp.name: random_input(shape, "float32", np)}
    return (lambda: model.predict(feed)), f"coremltools {ct.__version__} MLModel.predict", shape


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    suffix = args.model.rstrip("/").lower().rsplit(".", 1)[-1]
    opener = {"onnx": onnx_call, "ort": onnx_call, "tflite": tflite_call, "mlpackage": coreml_call,
              "mlmodel": coreml_call}.get(suffix)
    if opener is None:
        fail(CANNOT_RUN, error=f"unknown model format .{suffix}")
    try:
        call, runtime, shape = opener(args.model, args.threads, args.batch)
        for _ in range(3):
            call()
        times = []
        for _ in range(args.iterations):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    except Exception as e:  # report any runtime failure as data, not a traceback over SSH
        fail(CANNOT_RUN, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    times.sort()
    print(json.dumps({"runtime": runtime, "batch": int(shape[0]) if shape else 1, "threads": args.threads or None,
                      "median_ms": round(statistics.median(times), 3),
                      "p90_ms": round(times[min(len(times) - 1, int(0.9 * len(times)))], 3),
                      "min_ms": round(times[0], 3), "iterations": len(times), "machine": machine(),
                      "python": platform.python_version()}))


if __name__ == "__main__":
    main()
