"""App templates for ExecuTorch artifacts: the shared Python app (``executorch.runtime``)
and, in the usage text, what an Android or iOS app adds to run the same .pte. The
target's ``app_writers`` returns ``APPS``."""
from __future__ import annotations

from evit_export.targets.apps import AppContext, write_python_app

TEMPLATES = "evit_export.targets.executorch"


def _mobile_text(ctx: AppContext) -> str:
    batch = ctx.spec.batch or 1
    size = ctx.spec.img_size
    return (f"\n**On a phone.** The same `{ctx.model_file}` runs in ExecuTorch's mobile runtimes, which bundle the "
            "XNNPACK delegate:\n\n"
            "- Android: add the AAR `org.pytorch:executorch-android` (Maven Central) to the app's dependencies, "
            f"then `Module.load(path).forward(EValue.from(Tensor.fromBlob(floats, longArrayOf({batch}, 3, {size}, "
            f"{size}))))`.\n"
            "- iOS / macOS: add the Swift package `https://github.com/pytorch/executorch` (products `executorch` and "
            f"`backend_xnnpack`), then `Module(filePath:)` and `forward` with a `{batch}x3x{size}x{size}` float "
            "tensor.\n\n"
            "Feed the normalised image `(x/255 - mean)/std` in NCHW float32 (mean, std and the resize are in "
            "`preprocessing.json`); the output is logits. The model's labels and preprocessing are also inside the "
            f"file: `execute(\"{_spec_method()}\")` returns the spec JSON without running the network.\n")


def _spec_method() -> str:
    from evit_export.targets.executorch.inspector import SPEC_METHOD

    return SPEC_METHOD


def write_python(ctx: AppContext) -> str:
    from evit_export.targets import get_target

    text = write_python_app(ctx, TEMPLATES, get_target("executorch").python_requirement)
    return text + _mobile_text(ctx)


APPS = {"python": write_python}
