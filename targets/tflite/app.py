"""App templates for TFLite artifacts: an Android library module (LiteRT) and a Python
script (ai-edge-litert). The target's ``app_writers`` returns ``APPS``."""
from __future__ import annotations

from pathlib import Path

from evit_export.targets.apps import AppContext, write_python_app, write_template
from evit_export.targets import get_target

TEMPLATES = "evit_export.targets.tflite"
# com.google.ai.edge.litert is LiteRT's Maven group (the former org.tensorflow:tensorflow-lite).
LITERT_ANDROID_VERSION = "1.4.0"


def input_quantization(path) -> tuple[float, int] | None:
    """(scale, zero point) of the model's input, as LiteRT reads it; None for float inputs."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default delegate: reading tensor details needs no XNNPACK (and its log line).
    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    return (float(scale), int(zero_point)) if scale else None


def kotlin_string(text: str) -> str:
    """``text`` for the inside of a Kotlin string literal."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")


def _floats(values) -> str:
    return ", ".join(f"{float(v)!r}f" for v in values)


def write_android_app(ctx: AppContext) -> str:
    spec, pre = ctx.spec, ctx.preprocessing
    root = ctx.root / "android"
    package = f"com.example.{ctx.package_id}"
    source_dir = Path(*package.split("."))
    top = ctx.expected["artifact"]["top5"][0]
    values = {
        "PACKAGE": package, "NAME": ctx.class_prefix, "MODEL_FILE": ctx.model_file, "MODULE": ctx.package_id,
        "VARIANT": spec.variant.upper(), "NUM_CLASSES": spec.num_classes, "IMG_SIZE": spec.img_size,
        "CROP_PCT": repr(float(spec.crop_pct)), "INTERPOLATION": spec.interpolation,
        "MEAN": _floats(spec.mean), "STD": _floats(spec.std), "RANGE": pre["model_input"]["range"],
        "CHANNELS_LAST": str(pre["model_input"]["layout"] == "NHWC").lower(),
        "EXPECTED_LABEL": kotlin_string(top["label"]), "EXPECTED_SCORE": f"{top['score']:.6f}",
        "LITERT_VERSION": LITERT_ANDROID_VERSION,
    }
    write_template(TEMPLATES, "templates/android/build.gradle.kts", root / "build.gradle.kts", values)
    write_template(TEMPLATES, "templates/android/AndroidManifest.xml", root / "src/main/AndroidManifest.xml", values)
    kotlin = root / "src/main/kotlin" / source_dir
    write_template(TEMPLATES, "templates/android/Preprocessing.kt", kotlin / "Preprocessing.kt", values)
    write_template(TEMPLATES, "templates/android/Classifier.kt", kotlin / f"{ctx.class_prefix}Classifier.kt", values)
    tests = root / "src/androidTest/kotlin" / source_dir
    write_template(TEMPLATES, "templates/android/ClassifierTest.kt", tests / f"{ctx.class_prefix}ClassifierTest.kt",
                   values)
    ctx.copy_model(root / "src/main/assets")
    ctx.copy_root_file("labels.txt", root / "src/main/assets")
    ctx.copy_root_file("sample.png", root / "src/androidTest/assets")
    return (f"Copy `android/` into your project as `{ctx.package_id}/`, then\n```kotlin\n"
            f"// settings.gradle.kts: include(\":{ctx.package_id}\")   app/build.gradle.kts: "
            f"implementation(project(\":{ctx.package_id}\"))\n"
            f"{ctx.class_prefix}Classifier(context).use {{ classifier ->\n"
            f"    val top5 = classifier.classify(bitmap)   // ARGB_8888 Bitmap -> [Prediction(index, label, score)]\n"
            f"}}\n```\n`Preprocessing.kt` (no Android imports) resizes and crops exactly as the checks did; "
            f"`./gradlew :{ctx.package_id}:connectedAndroidTest` classifies `sample.png` on a device and expects "
            f"`{top['label']}`. LiteRT: `com.google.ai.edge.litert:litert:{LITERT_ANDROID_VERSION}`.\n")


def write_python(ctx: AppContext) -> str:
    return write_python_app(ctx, TEMPLATES, get_target("tflite").python_requirement)


APPS = {"android": write_android_app, "python": write_python}
