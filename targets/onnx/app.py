"""App templates for ONNX artifacts: a static web page (onnxruntime-web) and a Python
script (onnxruntime). The target's ``app_writers`` returns ``APPS``."""
from __future__ import annotations

from html import escape

from evit_export.targets.apps import AppContext, write_python_app, write_template
from evit_export.targets.onnx.vendor import ORT_WEB_VERSION, vendor_ort_web
from evit_export.targets import get_target

TEMPLATES = "evit_export.targets.onnx"
WEB_FILES = ("index.html", "app.js", "preprocess.js", "package.json")


def write_web_app(ctx: AppContext) -> str:
    web = ctx.root / "web"
    if ctx.vendor_runtime:
        ctx.log(f"vendoring onnxruntime-web {ORT_WEB_VERSION}")
        vendor_ort_web(web / "vendor")
        runtime_dir = "vendor/"
    else:
        runtime_dir = "node_modules/onnxruntime-web/dist/"
    values = {"MODEL_FILE": ctx.model_file, "WASM_PATHS": runtime_dir, "ORT_SCRIPT": runtime_dir + "ort.wasm.min.js",
              "ORT_WEB_VERSION": ORT_WEB_VERSION, "TITLE": f"{ctx.class_prefix} classifier",
              "NPM_NAME": f"{ctx.package_id}-classifier-web", "VARIANT": ctx.spec.variant.upper(),
              "NUM_CLASSES": ctx.spec.num_classes, "SAMPLE_NOTE": escape(ctx.expected["description"])}
    for name in WEB_FILES:
        write_template(TEMPLATES, f"templates/web/{name}", web / name, values)
    ctx.copy_model(web)
    for name in ("labels.txt", "preprocessing.json", "sample.png"):
        ctx.copy_root_file(name, web)
    setup = ("" if ctx.vendor_runtime else "npm install                 # onnxruntime-web "
             f"{ORT_WEB_VERSION} into node_modules/ (or package with --vendor-runtime)\n")
    return (f"```bash\ncd web\n{setup}python3 -m http.server 8000   # any static server; open "
            "http://localhost:8000/\n```\nDrop an image on the page (or pick a file): it shows the top-5 and the "
            "in-browser inference time. Scripts can call `await window.evitClassify(imageUrl)` → "
            "`[{label, score}, …]` (top-5 softmax probabilities). `preprocess.js` restates the tool's resize "
            "(the canvas only decodes), so the page feeds the model the same pixels the checks used.\n")


def write_python(ctx: AppContext) -> str:
    return write_python_app(ctx, TEMPLATES, get_target("onnx").python_requirement)


APPS = {"web": write_web_app, "python": write_python}
