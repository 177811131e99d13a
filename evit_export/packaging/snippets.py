"""Integration snippets for app packages, one per deployment runtime.

These are the only per-format texts in packaging: how an app feeds the model is
inherently runtime-specific. Every value in them comes from the artifact's spec.
"""
from __future__ import annotations

from evit_export.core.spec import ModelSpec


def _floats(values) -> str:
    return ", ".join(f"{v:.6g}" for v in values)


def onnx_snippet(model_file: str, spec: ModelSpec) -> str:
    return f'''```python
# onnxruntime (Linux edge box / server). Preprocessing from preprocessing.json.
import json, numpy as np, onnxruntime as ort
from PIL import Image

session = ort.InferenceSession("{model_file}", providers=["CPUExecutionProvider"])
labels = open("labels.txt").read().splitlines()
mean = np.array([{_floats(spec.mean)}], np.float32).reshape(1, 3, 1, 1)
std = np.array([{_floats(spec.std)}], np.float32).reshape(1, 3, 1, 1)

def classify(path):
    img = Image.open(path).convert("RGB")
    short = int({spec.img_size} / {spec.crop_pct})           # resize shorter side, then centre crop
    w, h = img.size
    img = img.resize((max(short, round(w * short / h)), max(short, round(h * short / w))), Image.BICUBIC)
    left, top = (img.width - {spec.img_size}) // 2, (img.height - {spec.img_size}) // 2
    img = img.crop((left, top, left + {spec.img_size}, top + {spec.img_size}))
    x = np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 255.0
    x = ((x - mean) / std).astype(np.float32)
    logits = session.run(None, {{session.get_inputs()[0].name: x}})[0][0]
    return labels[int(logits.argmax())]
```
'''


def coreml_snippet(model_file: str, spec: ModelSpec) -> str:
    name = model_file.split("/")[-1].rsplit(".", 1)[0]
    if spec.input_range == "pixels":
        feed = ("The model takes the camera frame as is (RGB image input, scale and mean\n"
                "inside the model); Vision scales and crops it for you.")
    else:
        feed = ("The model takes a normalised MLMultiArray (1x3xHxW, (x/255 - mean)/std);\n"
                "prefer `--input image` so Vision can feed CVPixelBuffers directly.")
    return f'''{feed}

```swift
import CoreML
import Vision

// Add {model_file} to the Xcode target; Xcode generates the `{name}` class.
let config = MLModelConfiguration()
config.computeUnits = .all   // Neural Engine on A13 and later
let model = try VNCoreMLModel(for: {name}(configuration: config).model)

let request = VNCoreMLRequest(model: model) {{ request, _ in
    guard let best = (request.results as? [VNClassificationObservation])?.first else {{ return }}
    print(best.identifier, best.confidence)
}}
request.imageCropAndScaleOption = .centerCrop   // matches crop_pct in preprocessing.json
try VNImageRequestHandler(cvPixelBuffer: pixelBuffer, options: [:]).perform([request])
```
'''


def tflite_snippet(model_file: str, spec: ModelSpec) -> str:
    layout = spec.input_layout
    if spec.input_dtype in ("uint8", "int8"):
        fill = "RGB bytes 0..255 (normalisation is inside the model)"
    else:
        fill = f"float32 (x/255 - mean)/std with mean [{_floats(spec.mean)}], std [{_floats(spec.std)}]"
    return f'''Input: 1x{spec.img_size}x{spec.img_size}x3 ({layout}), {fill}.

```kotlin
// Android, LiteRT (com.google.ai.edge.litert). Put {model_file} and labels.txt in assets/.
val model = FileUtil.loadMappedFile(context, "{model_file}")
val interpreter = Interpreter(model, Interpreter.Options().apply {{ setNumThreads(4) }})
val labels = context.assets.open("labels.txt").bufferedReader().readLines()

// bitmap: resized (shorter side {int(spec.img_size / spec.crop_pct)}) and centre-cropped to {spec.img_size}x{spec.img_size}
val input = preprocess(bitmap)                     // see preprocessing.json
val output = Array(1) {{ FloatArray({spec.num_classes}) }}
interpreter.run(input, output)
val best = output[0].indices.maxByOrNull {{ output[0][it] }}!!
Log.i("evit", labels[best])
```
'''


SNIPPETS = {"onnx": onnx_snippet, "coreml": coreml_snippet, "tflite": tflite_snippet}
