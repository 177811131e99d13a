"""Every restatement of the preprocessing gives the tool's own pixels (issue 15): the
package's evit_preprocess.py (numpy) and preprocess.js (run by node), on non-square
images of many sizes, both interpolations and several crop_pct. (predict.py itself is
tested in test_package.py, the Kotlin restatement in test_apps_android.py.)"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from apps_common import load_module, require_tool
from PIL import Image

from evit_export.core.preprocess import image_to_pixels
from evit_export.core.spec import ModelSpec

TEMPLATES = Path(__file__).resolve().parents[1]
PY_PREPROCESS = TEMPLATES / "targets/templates/python/evit_preprocess.py"
JS_PREPROCESS = TEMPLATES / "targets/onnx/templates/web/preprocess.js"
# (width, height) of random-content images: odd, even, tall, wide, smaller and larger than the input.
SIZES = [(1, 1), (7, 300), (300, 7), (63, 64), (64, 63), (73, 73), (74, 75), (129, 97), (333, 250), (1001, 18)]
SETTINGS = [(64, 0.875, "bicubic"), (64, 0.875, "bilinear"), (96, 0.9, "bicubic"), (224, 0.95, "bicubic"),
            (56, 1.0, "bilinear"), (32, 0.8, "bicubic")]


def random_images():
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate(SIZES):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        if i % 2:  # smooth content too, where rounding ties are likelier than on noise
            img = np.cumsum(img, axis=1, dtype=np.uint32).astype(np.uint8)
        out.append(img)
    return out


def tool_pixels(rgb: np.ndarray, size: int, crop_pct: float, interpolation: str) -> np.ndarray:
    spec = ModelSpec("m0", num_classes=2, img_size=size, crop_pct=crop_pct, interpolation=interpolation)
    return image_to_pixels(Image.fromarray(rgb), spec).transpose(1, 2, 0).astype(np.uint8)


def test_numpy_restatement_is_exact():
    ep = load_module(PY_PREPROCESS, "evit_preprocess_under_test")
    for rgb in random_images():
        for size, crop_pct, interpolation in SETTINGS:
            want = tool_pixels(rgb, size, crop_pct, interpolation)
            got = ep.preprocess_pixels(rgb, size, crop_pct, interpolation)
            assert np.array_equal(got, want), (rgb.shape, size, crop_pct, interpolation)


def test_javascript_restatement_is_exact(tmp_path):
    node = require_tool("node")
    jobs = []
    for i, rgb in enumerate(random_images()):
        (tmp_path / f"{i}.rgb").write_bytes(rgb.tobytes())
        for j, (size, crop_pct, interpolation) in enumerate(SETTINGS):
            jobs.append({"src": f"{i}.rgb", "dst": f"{i}_{j}.out", "w": rgb.shape[1], "h": rgb.shape[0],
                         "size": size, "crop": crop_pct, "interp": interpolation})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    script = f"""
const fs = require('fs'); const P = require({json.dumps(str(JS_PREPROCESS))});
for (const j of JSON.parse(fs.readFileSync('jobs.json'))) {{
  const rgb = new Uint8Array(fs.readFileSync(j.src));
  fs.writeFileSync(j.dst, P.preprocessPixels(rgb, j.w, j.h, j.size, j.crop, j.interp));
}}"""
    proc = subprocess.run([node, "-e", script], cwd=tmp_path, capture_output=True, check=False, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    images = random_images()
    for job in jobs:
        rgb = images[int(job["src"].split(".")[0])]
        want = tool_pixels(rgb, job["size"], job["crop"], job["interp"])
        got = np.frombuffer((tmp_path / job["dst"]).read_bytes(), np.uint8).reshape(want.shape)
        assert np.array_equal(got, want), job
