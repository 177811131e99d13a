"""Android package (issue 12): a Gradle library module over LiteRT, from a real int8
.tflite with a uint8 input. The pure-Kotlin preprocessing is compiled with kotlinc and run
on the JVM; its input tensors must equal the tool's own (image_to_pixels + to_model_input)
for the sample and for non-square real photos of several sizes."""
from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from apps_common import require_tool, syntax_errors, write_real_pngs
from PIL import Image

from evit_export.core.preprocess import image_to_pixels, to_model_input

HARNESS = r'''
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import javax.imageio.ImageIO
import @@PACKAGE@@.InputSpec
import @@PACKAGE@@.Preprocessing

// One job per line: png, out, imgSize, cropPct, interpolation, range, layout, mean, std, mode, scale, zeroPoint
fun main(args: Array<String>) {
    for (line in File(args[0]).readLines()) {
        if (line.isBlank()) continue
        val f = line.split("\t")
        val image = ImageIO.read(File(f[0]))
        val w = image.width
        val h = image.height
        val argb = image.getRGB(0, 0, w, h, null, 0, w)
        val mean = f[7].split(",").map { it.toFloat() }.toFloatArray()
        val std = f[8].split(",").map { it.toFloat() }.toFloatArray()
        val spec = InputSpec(f[2].toInt(), f[3].toDouble(), f[4], mean, std, f[5], f[6] == "NHWC")
        val rgb = Preprocessing.resizeAndCrop(argb, w, h, spec.imgSize, spec.cropPct, spec.interpolation)
        val bytes = if (f[9] == "float") {
            val x = Preprocessing.floatInput(rgb, spec)
            val buffer = ByteBuffer.allocate(x.size * 4).order(ByteOrder.LITTLE_ENDIAN)
            buffer.asFloatBuffer().put(x)
            buffer.array()
        } else {
            Preprocessing.quantizedInput(rgb, spec, f[10].toFloat(), f[11].toInt(), f[9] == "int8")
        }
        File(f[1]).writeBytes(bytes)
    }
}
'''


@pytest.fixture(scope="module")
def android_package(tmp_path_factory):
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target

    from evit_export.packaging.package import build_package

    d = tmp_path_factory.mktemp("android")
    deployed, spec = deploy_for_export("m0", num_classes=10, img_size=64, seed=3, labels=[str(i) for i in range(10)])
    target = get_target("tflite")
    options = dataclasses.replace(target.options_type.for_precision("int8", calibration_size=32), input_type="uint8")
    artifact = target.export(deployed, spec, d / "m0_digits_u8.tflite", options).path
    return build_package(artifact, d / "pkg", measure=False)


@pytest.fixture(scope="module")
def kotlin_harness(android_package, tmp_path_factory):
    """Preprocessing.kt from the package + a JVM main, compiled once (kotlinc is slow)."""
    kotlinc = require_tool("kotlinc")
    require_tool("java")
    source = next(android_package.glob("android/src/main/kotlin/**/Preprocessing.kt"))
    package = source.read_text().splitlines()[0].split()[1]
    d = tmp_path_factory.mktemp("kotlin")
    (d / "Main.kt").write_text(HARNESS.replace("@@PACKAGE@@", package))
    jar = d / "harness.jar"
    proc = subprocess.run([kotlinc, str(source), str(d / "Main.kt"), "-include-runtime", "-d", str(jar)],
                          capture_output=True, check=False, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert jar.exists(), proc.stderr[-3000:]
    return jar


def run_harness(jar: Path, jobs: list[list[str]], work: Path) -> None:
    (work / "jobs.tsv").write_text("\n".join("\t".join(job) for job in jobs) + "\n")
    proc = subprocess.run(["java", "-cp", str(jar), "MainKt", str(work / "jobs.tsv")], capture_output=True, check=False,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_android_module_layout_and_syntax(android_package):
    android = android_package / "android"
    names = {p.relative_to(android).as_posix() for p in android.rglob("*") if p.is_file()}
    assert {"build.gradle.kts", "src/main/AndroidManifest.xml", "src/main/assets/m0_digits_u8.tflite",
            "src/main/assets/labels.txt", "src/androidTest/assets/sample.png",
            "src/main/kotlin/com/example/m0digitsu8/M0DigitsU8Classifier.kt",
            "src/main/kotlin/com/example/m0digitsu8/Preprocessing.kt",
            "src/androidTest/kotlin/com/example/m0digitsu8/M0DigitsU8ClassifierTest.kt"} <= names
    assert 'implementation("com.google.ai.edge.litert:litert:' in (android / "build.gradle.kts").read_text()
    sources = [p for p in android.rglob("*") if p.suffix in (".kt", ".kts")]
    assert len(sources) == 4
    for path in sources:
        assert syntax_errors(path) == [], path
        assert "@@" not in path.read_text(), f"unfilled placeholder in {path.name}"
    preprocessing = next(android.rglob("Preprocessing.kt")).read_text()
    assert "import android" not in preprocessing  # runs on any JVM
    expected = json.loads((android_package / "expected.json").read_text())
    test = next(android.rglob("*ClassifierTest.kt")).read_text()
    assert f'assertEquals("{expected["artifact"]["top5"][0]["label"]}", top[0].label)' in test


def test_syntax_checker_catches_a_broken_kotlin_file(tmp_path):
    broken = tmp_path / "Broken.kt"
    broken.write_text("class A { fun f( = 1 }\n")
    assert syntax_errors(broken)


def _jobs_and_expected(images, pre, work, modes):
    from evit_export.core.spec import ModelSpec

    jobs, expected = [], []
    for path in images:
        for interpolation in ("bicubic", "bilinear"):
            for mode, range_, layout, quant in modes:
                spec = ModelSpec("m0", num_classes=10, img_size=pre["img_size"], crop_pct=pre["crop_pct"],
                                 interpolation=interpolation, input_range=range_, input_layout=layout,
                                 input_dtype="float32")
                with Image.open(path) as im:
                    x = to_model_input(image_to_pixels(im, spec)[None], spec)
                if mode != "float":
                    scale, zp = quant
                    lo, hi = (0, 255) if mode == "uint8" else (-128, 127)
                    x = np.clip(np.rint(x / np.float32(scale)) + zp, lo, hi).astype(mode)
                out = work / f"{path.stem}_{interpolation}_{mode}_{range_}.bin"
                jobs.append([str(path), str(out), str(pre["img_size"]), repr(pre["crop_pct"]), interpolation,
                             range_, layout, ",".join(map(repr, pre["mean"])), ",".join(map(repr, pre["std"])),
                             mode, repr(quant[0]), str(quant[1])])
                expected.append((out, x.reshape(-1), mode))
    return jobs, expected


def test_kotlin_preprocessing_equals_the_tools_tensor(android_package, kotlin_harness, tmp_path):
    pre = json.loads((android_package / "preprocessing.json").read_text())
    assert pre["model_input"] == {**pre["model_input"], "dtype": "uint8", "range": "pixels", "layout": "NHWC"}
    scale, zp = pre["model_input"]["quantization"]
    images = [android_package / "sample.png"] + write_real_pngs(tmp_path / "photos")
    modes = [("float", "normalized", "NCHW", (1.0, 0)), ("float", "unit", "NHWC", (1.0, 0)),
             ("uint8", "pixels", "NHWC", (scale, zp)), ("int8", "normalized", "NHWC", (0.0186, -14))]
    jobs, expected = _jobs_and_expected(images, pre, tmp_path, modes)
    run_harness(kotlin_harness, jobs, tmp_path)
    for out, want, mode in expected:
        got = np.frombuffer(out.read_bytes(), dtype={"float": "<f4", "uint8": "u1", "int8": "i1"}[mode])
        assert got.shape == want.shape, out.name
        if mode == "float":
            assert float(np.abs(got - want).max()) <= 1e-5, out.name
        else:
            assert np.array_equal(got, want), out.name  # exact for quantised inputs


def test_tflite_predict_py_matches_litert(android_package, tmp_path):
    """predict.py with the model's own input quantisation and dequantised outputs gives
    what the tool's LiteRT runner gives on the tool's tensor."""
    import sys

    from evit_export.targets import RunnerOptions, open_artifact

    images = [android_package / "sample.png"] + write_real_pngs(tmp_path)[:3]
    proc = subprocess.run([sys.executable, "predict.py", "--json", *map(str, images)], cwd=android_package,
                          capture_output=True, check=False, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    path, target, spec = open_artifact(android_package / "m0_digits_u8.tflite")
    with target.open(path, spec, RunnerOptions(threads=1)) as runner:
        for image in images:
            with Image.open(image) as im:
                logits = runner.run(image_to_pixels(im, spec)[None])[0].astype(np.float64)
            probs = np.exp(logits - logits.max())
            probs /= probs.sum()
            got = results[str(image)]
            assert got[0]["label"] == spec.labels[int(np.argmax(probs))], image.name
            assert max(abs(hit["score"] - probs[spec.labels.index(hit["label"])]) for hit in got) < 1e-5
