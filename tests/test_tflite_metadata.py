"""Issue 15: every .tflite carries the standard TFLite model metadata (image input with
normalisation, labels packed into the model), read back by an independent reader:
MediaPipe's ImageClassifier, in its own virtual environment (it pins its own numpy
and protobuf), classifying a real image."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evit_export.core.preprocess import image_to_pixels
from evit_export.data import digits_pixels
from evit_export.models.reference import deploy_for_export
from evit_export.targets import get_target
from evit_export.targets.tflite.metadata import LABELS_FILE, normalization_for, read_associated_files

CACHE = Path.home() / ".cache" / "evit-export" / "venvs" / "mediapipe"

CLASSIFY = r"""
import json, sys
import mediapipe as mp
from mediapipe.tasks import python as mpt
from mediapipe.tasks.python import vision
model, image = sys.argv[1], sys.argv[2]
options = vision.ImageClassifierOptions(base_options=mpt.BaseOptions(model_asset_path=model), max_results=5)
try:
    with vision.ImageClassifier.create_from_options(options) as classifier:
        result = classifier.classify(mp.Image.create_from_file(image))
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
cats = result.classifications[0].categories
print(json.dumps({"top": [[c.index, c.category_name, c.score] for c in cats]}))
"""


@pytest.fixture(scope="module")
def mediapipe_python():
    python = CACHE / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(CACHE)], check=True)
        r = subprocess.run([str(python), "-m", "pip", "install", "-q", "mediapipe"], capture_output=True, text=True,
                           timeout=900)
        if r.returncode != 0:
            pytest.skip(f"mediapipe could not be installed (package registry?): {r.stderr.strip()[-200:]}")
    return python


def _classify(python, model: Path, image: Path) -> dict:
    r = subprocess.run([str(python), "-c", CLASSIFY, str(model), str(image)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digit_image(tmp_path_factory):
    """A real handwritten digit, already at the model's size (resize is the identity)."""
    pixels, _ = digits_pixels("val", 64)
    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(pixels[3].transpose(1, 2, 0).astype(np.uint8)).save(path)
    return path


def _ours(target, model: Path, spec, image: Path) -> np.ndarray:
    pixels = image_to_pixels(Image.open(image).convert("RGB"), spec)[None].astype(np.float32)
    with target.open(model) as runner:
        return runner.run(pixels)[0]


@pytest.mark.parametrize("kind", ["float", "int8-uint8-input"])
def test_mediapipe_reads_metadata_and_labels(tmp_path, mediapipe_python, digit_image, kind):
    target = get_target("tflite")
    deployed, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    # MediaPipe normalises with one mean/std for all channels; ImageNet's per-channel
    # values are written too (Android Studio reads them), see the test below.
    spec = spec.replace(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), labels=[f"digit {i}" for i in range(10)])
    options = None
    if kind != "float":
        options = target.options_type(quantize="int8", input_type="uint8", calibration_data="random")
    art = target.export(deployed, spec, tmp_path / "m0.tflite", options)
    packed = read_associated_files(art.path.read_bytes())
    assert packed[LABELS_FILE].decode().splitlines() == spec.labels
    got = _classify(mediapipe_python, art.path, digit_image)
    assert "error" not in got, got
    ours = _ours(target, art.path, art.spec, digit_image)
    order = np.argsort(-ours)[:5]
    assert [c[0] for c in got["top"]][:3] == order[:3].tolist()
    assert [c[1] for c in got["top"]][0] == spec.labels[order[0]]
    tol = 1e-3 if kind == "float" else 0.05 * float(np.abs(ours).max())
    assert np.allclose([c[2] for c in got["top"]], ours[order[:len(got["top"])]], atol=tol)


def test_per_channel_normalisation_is_written_and_parsed(tmp_path, mediapipe_python, digit_image):
    """ImageNet mean/std differ per channel: the metadata says so (three values), and
    MediaPipe parses it and names exactly that limitation of its own."""
    target = get_target("tflite")
    deployed, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    mean, std = normalization_for(spec)
    assert len(mean) == 3
    assert abs(mean[0] - 255 * spec.mean[0]) < 1e-9
    art = target.export(deployed, spec, tmp_path / "m0.tflite")
    got = _classify(mediapipe_python, art.path, digit_image)
    assert "error" in got, got
    assert "Per-channel image normalization" in got["error"], got
