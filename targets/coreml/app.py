"""App template for CoreML artifacts: a Swift package (Vision + CoreML) with an XCTest.
The target's ``app_writers`` returns ``APPS``."""
from __future__ import annotations

from evit_export.targets.apps import AppContext, write_template
from evit_export.core.preprocess import resize_short_side

TEMPLATES = "evit_export.targets.coreml"
SWIFT_CONCURRENCY_IOS = 15  # async/await in the classifier's API


def swift_string(text: str) -> str:
    """``text`` for the inside of a Swift string literal (backslash also stops interpolation)."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def write_ios_app(ctx: AppContext) -> str:
    spec = ctx.spec
    ios_major = max(SWIFT_CONCURRENCY_IOS, int(ctx.export_info.get("min_ios") or 0))
    name = ctx.class_prefix
    top = ctx.expected["artifact"]["top5"][0]
    values = {"NAME": name, "MODEL_FILE": ctx.model_file, "MODEL_STEM": ctx.model_file.rsplit(".", 1)[0],
              "VARIANT": spec.variant.upper(), "NUM_CLASSES": spec.num_classes, "IMG_SIZE": spec.img_size,
              "CROP_PCT": repr(float(spec.crop_pct)), "RESIZE_TO": resize_short_side(spec),
              "INTERPOLATION": spec.interpolation, "IOS_MAJOR": ios_major, "MACOS_MAJOR": ios_major - 3,
              "MEAN": ", ".join(repr(float(v)) for v in spec.mean), "STD": ", ".join(repr(float(v)) for v in spec.std),
              "EXPECTED_LABEL": swift_string(top["label"])}
    root = ctx.root / "ios"
    write_template(TEMPLATES, "templates/ios/Package.swift", root / "Package.swift", values)
    sources = root / "Sources" / name
    write_template(TEMPLATES, "templates/ios/Classifier.swift", sources / f"{name}Classifier.swift", values)
    write_template(TEMPLATES, "templates/ios/Preprocessing.swift", sources / "Preprocessing.swift", values)
    ctx.copy_model(sources / "Resources")
    ctx.copy_root_file("labels.txt", sources / "Resources")
    tests = root / "Tests" / f"{name}Tests"
    write_template(TEMPLATES, "templates/ios/ClassifierTests.swift", tests / f"{name}ClassifierTests.swift", values)
    ctx.copy_root_file("sample.png", tests / "Resources")
    return (f"```swift\n// Xcode: File > Add Package Dependencies > Add Local… > ios/   (or .package(path: \"ios\"))\n"
            f"import {name}\n\nlet classifier = try {name}Classifier()            // resizeMode: .exact (default) "
            f"or .vision\nlet top5 = try await classifier.classify(cgImage)   // [Prediction(label, confidence)]\n"
            f"```\n`.exact` feeds the model the pixels the checks used (Preprocessing.swift restates the tool's "
            f"resize and crop); `.vision` lets Vision scale the same centre region (crop_pct {spec.crop_pct}) with "
            f"its own filter: faster on camera frames, pixels differ slightly (a model exported with `--input tensor` "
            f"always takes the exact path, as a normalised MLMultiArray). `swift test` (macOS) classifies "
            f"`sample.png` and expects `{top['label']}`.\n")


APPS = {"ios": write_ios_app}
