# Opener for evit-export's remote bench harness (validation/latency/remote_bench_script.py):
# inserted into the harness, which defines fail, random_input, MISSING_RUNTIME and CANNOT_RUN.
# Runs on the device with its own Python and runtime only.
# ruff: noqa: F821
import platform


def import_runtime():
    """Called by the harness before its memory baseline."""
    if platform.system() != "Darwin":
        fail(CANNOT_RUN, error="CoreML models run only on macOS (coremltools MLModel.predict)")
    try:
        import coremltools  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        fail(MISSING_RUNTIME, error="runtime missing", package="coremltools")


def open_model(path, threads, batch):
    import_runtime()
    import coremltools as ct
    import numpy as np

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
