"""Issue 19, what a new user ships: the package's sample is one of the user's own images
(or a generated pattern that says so; the digit scan only for the digits model),
``package --out`` never deletes a user's file nor replaces the working directory, the web
page says what is missing without its runtime, ``verify-package`` accepts what the
documented install/build steps create and fails on anything else, and building the
project prints no setuptools warning."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from apps_common import CHROMIUM, CHROMIUM_ARGS, require_tool, write_real_pngs
from cli_helpers import assert_one_line_error, run_cli
from PIL import Image

from evit_export.core.preprocess import image_to_pixels, list_images

REPO = Path(__file__).resolve().parents[1]
PHOTO_LABELS = ["cat", "dog", "bird", "fish"]


@pytest.fixture(scope="module")
def photo_artifact(tmp_path_factory):
    """A 4-class photo model (not the digits model), exported to ONNX."""
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target

    d = tmp_path_factory.mktemp("photo")
    deployed, spec = deploy_for_export("m0", num_classes=4, img_size=64, seed=11, labels=PHOTO_LABELS)
    return get_target("onnx").export(deployed, spec, d / "pets.onnx").path


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Real photo crops in ImageFolder layout (root/<class>/*.png)."""
    root = tmp_path_factory.mktemp("images") / "pets"
    for i, photo in enumerate(write_real_pngs(root / "_all")):
        (root / PHOTO_LABELS[i % 4]).mkdir(parents=True, exist_ok=True)
        photo.rename(root / PHOTO_LABELS[i % 4] / photo.name)
    (root / "_all").rmdir()
    return root


def _spec(package: Path):
    from evit_export.targets import open_artifact

    return open_artifact(next(p for p in package.iterdir() if p.suffix == ".onnx"))[2]


def _pixels(path: Path, spec) -> np.ndarray:
    with Image.open(path) as im:
        return image_to_pixels(im, spec)


# ----------------------------------------------------------------------------- 1. the sample

def test_sample_is_the_first_of_the_users_images(capsys, photo_artifact, photo_folder, tmp_path):
    out = tmp_path / "pkg"
    code, stdout, err = run_cli(capsys, "package", photo_artifact, "--out", out, "--images", photo_folder,
                                "--no-latency", "--app", "web")
    assert code == 0, err
    first = list_images(photo_folder)[0][0]
    spec = _spec(out)
    # The model sees exactly the pixels it sees on the user's original file.
    assert np.array_equal(_pixels(out / "sample.png", spec), _pixels(first, spec))
    assert np.array_equal(_pixels(out / "web" / "sample.png", spec), _pixels(first, spec))
    manifest = json.loads((out / "manifest.json").read_text())
    rel = first.relative_to(photo_folder).as_posix()
    assert manifest["sample"]["source"] == "images"
    assert manifest["sample"]["file"] == rel
    expected = json.loads((out / "expected.json").read_text())
    assert rel in expected["description"]
    assert "digit" not in expected["description"]
    assert str(photo_folder) not in json.dumps(manifest) + json.dumps(expected)  # no machine path
    assert rel in (out / "REPORT.md").read_text()
    assert rel in (out / "web" / "index.html").read_text()  # the page says what its sample is
    assert "sample.png: " in stdout
    assert rel in stdout


def test_sample_option_and_generated_sample(capsys, photo_artifact, photo_folder, tmp_path):
    chosen = max(photo_folder.rglob("*.png"))
    out = tmp_path / "chosen"
    code, _, err = run_cli(capsys, "package", photo_artifact, "--out", out, "--sample", chosen,
                           "--no-latency", "--app", "python")
    assert code == 0, err
    spec = _spec(out)
    assert np.array_equal(_pixels(out / "sample.png", spec), _pixels(chosen, spec))
    record = json.loads((out / "manifest.json").read_text())["sample"]
    assert {k: record[k] for k in ("image", "source", "file", "top1", "top1_agrees")} == {
        "image": "sample.png", "source": "sample", "file": chosen.name,
        "top1": json.loads((out / "expected.json").read_text())["pytorch"]["top5"][0]["label"],
        "top1_agrees": True}
    assert chosen.name in record["description"]
    assert str(chosen.parent) not in record["description"]
    # No images: never a refusal; a generated pattern that says it is generated, not a digit.
    out = tmp_path / "generated"
    code, stdout, err = run_cli(capsys, "package", photo_artifact, "--out", out, "--no-latency", "--app", "web")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sample"]["source"] == "generated"
    for text in ((out / "expected.json").read_text(), (out / "REPORT.md").read_text(),
                 (out / "web" / "index.html").read_text(), stdout):
        assert "generated" in text
        assert "--sample" in text
    with Image.open(out / "sample.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(np.float64)
    assert rgb.std() > 20 and np.abs(rgb[..., 0] - rgb[..., 1]).mean() > 5  # a colour pattern, not a grey scan
    code, _, err = run_cli(capsys, "package", photo_artifact, "--out", tmp_path / "bad", "--sample",
                           tmp_path / "missing.png", "--no-latency")
    assert "missing.png" in assert_one_line_error(code, err)
    assert not (tmp_path / "bad").exists()


def test_digits_model_keeps_the_digit_scan(tmp_path):
    from evit_export.models.reference import deploy_for_export
    from evit_export.targets import get_target

    from evit_export.data import DIGITS_LABELS
    from evit_export.packaging.package import build_package

    deployed, spec = deploy_for_export("m0", num_classes=10, img_size=32, seed=1, labels=DIGITS_LABELS)
    artifact = get_target("onnx").export(deployed, spec, tmp_path / "m0_digits.onnx").path
    pkg = build_package(artifact, tmp_path / "pkg", measure=False, app="python")
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["sample"]["source"] == "digits"
    assert "handwritten" in json.loads((pkg / "expected.json").read_text())["description"]


# ----------------------------------------------------------------------------- 2. --out

def test_out_never_deletes_a_users_file(capsys, photo_artifact, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "package", photo_artifact, "--out", mine, "--no-latency", "--app", "python")
    assert "not an evit-export package" in assert_one_line_error(code, err)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # An earlier package is replaced, even after `npm install` / `python predict.py` ran in it...
    pkg = tmp_path / "pkg"
    assert run_cli(capsys, "package", photo_artifact, "--out", pkg, "--no-latency", "--app", "web")[0] == 0
    (pkg / "web" / "package-lock.json").write_text("{}")
    (pkg / "web" / "node_modules" / "x").mkdir(parents=True)
    assert run_cli(capsys, "package", photo_artifact, "--out", pkg, "--no-latency", "--app", "web")[0] == 0
    # ...but not once a user's own file is in it.
    (pkg / "web" / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, "package", photo_artifact, "--out", pkg, "--no-latency", "--app", "web")
    assert "web/notes.txt" in assert_one_line_error(code, err)
    assert (pkg / "web" / "notes.txt").read_text() == "keep me"
    # Never the working directory, nor a folder holding it (even an earlier package).
    empty = tmp_path / "here"
    empty.mkdir()
    for cwd, out in ((empty, "."), (pkg / "web", ".."), (pkg, str(pkg))):
        monkeypatch.chdir(cwd)
        code, _, err = run_cli(capsys, "package", photo_artifact, "--out", out, "--no-latency", "--app", "web")
        assert "working directory" in assert_one_line_error(code, err), (cwd, out)
    assert list(empty.iterdir()) == []
    assert (pkg / "web" / "notes.txt").exists()
    # An empty folder is fine.
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "package", photo_artifact, "--out", "here", "--no-latency", "--app", "python")[0] == 0
    assert (empty / "manifest.json").is_file()


# ----------------------------------------------------------------------------- 3. web page without its runtime

@pytest.fixture(scope="module")
def unvendored_web(photo_artifact, tmp_path_factory):
    """A web package as `package` writes it by default: the runtime comes from `npm install`,
    which has not run."""
    from evit_export.packaging.package import build_package

    pkg = build_package(photo_artifact, tmp_path_factory.mktemp("web") / "pkg", measure=False, app="web")
    assert not (pkg / "web" / "node_modules").exists()
    return pkg


def _serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_web_page_says_its_runtime_is_missing(unvendored_web, tmp_path):
    require_tool("chromium", CHROMIUM)
    from playwright.sync_api import sync_playwright

    server = _serve(unvendored_web / "web")
    shots = Path(os.environ.get("EVIT_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 600})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            for url in (f"http://127.0.0.1:{server.server_address[1]}/", (unvendored_web / "web" / "index.html").as_uri()):
                page.goto(url)
                page.wait_for_function("document.getElementById('status').textContent.length > 0", timeout=20000)
                status = page.inner_text("#status")
                assert "onnxruntime-web" in status
                assert "npm install" in status
                assert "--vendor-runtime" in status
                assert page.locator("#status").is_visible()
                if url.startswith("file:"):  # opened from disk: also say to serve it
                    assert "http.server" in status
                page.screenshot(path=str(shots / f"web-no-runtime-{url.split(':')[0]}.png"))
            browser.close()
    finally:
        server.shutdown()
    assert errors == []  # no "ReferenceError: ort is not defined"


# ----------------------------------------------------------------------------- 4. verify-package after the documented steps

def _verify(capsys, folder):
    code, out, err = run_cli(capsys, "verify-package", folder, "--json")
    return code, json.loads(out) if out.strip() else None, err


def test_verify_package_after_npm_install_and_predict(capsys, unvendored_web, photo_artifact, tmp_path):
    from evit_export.packaging.package import build_package

    pkg = build_package(photo_artifact, tmp_path / "pkg", measure=False)  # web + python
    npm = shutil.which("npm")
    if npm:  # the documented step itself, from npm's cache when the registry is unreachable
        proc = subprocess.run([npm, "install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"],
                              cwd=pkg / "web", capture_output=True, text=True, timeout=600, check=False)
        installed = proc.returncode == 0
    else:
        installed = False
    if not installed:  # what npm install leaves, by hand
        (pkg / "web" / "node_modules" / "onnxruntime-web").mkdir(parents=True)
        (pkg / "web" / "node_modules" / "onnxruntime-web" / "package.json").write_text("{}")
        (pkg / "web" / "package-lock.json").write_text("{}")
    assert (pkg / "web" / "package-lock.json").is_file()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    proc = subprocess.run([sys.executable, "predict.py", "sample.png"], cwd=pkg, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert (pkg / "__pycache__").is_dir()
    code, result, err = _verify(capsys, pkg)
    assert code == 0, (err, result)
    assert result["ok"], (err, result)
    # Anything else unlisted fails, named, with the fix.
    (pkg / "web" / "notes.txt").write_text("mine")
    (pkg / "node_modules").mkdir()  # npm's folder, but no package.json beside it: not npm's
    (pkg / "node_modules" / "evil.js").write_text("")
    code, result, _ = _verify(capsys, pkg)
    detail = result["checks"][0]["detail"]
    assert code == 1
    assert "web/notes.txt" in detail
    assert "node_modules/evil.js" in detail
    assert "remove" in detail
    assert "package-lock.json" not in detail


def test_build_tool_outputs_are_recognised_by_their_project_file():
    """Gradle and SwiftPM outputs count as tool files only inside the project whose build
    file the package ships (android/build.gradle.kts, ios/Package.swift)."""
    from evit_export.packaging.verify import created_by_tools

    listed = {"android/build.gradle.kts", "android/src/main/kotlin/x/Classifier.kt", "ios/Package.swift",
              "ios/Sources/X/Classifier.swift", "web/package.json", "web/app.js", "predict.py"}
    tool_made = ["android/build/outputs/aar/x.aar", "android/.gradle/8.9/checksums.lock", "android/local.properties",
                 "android/.kotlin/errors/x.log", "ios/.build/debug/x.o", "ios/.swiftpm/config", "ios/Package.resolved",
                 "web/node_modules/onnxruntime-web/dist/ort.min.js", "web/package-lock.json",
                 "__pycache__/evit_preprocess.cpython-311.pyc"]
    not_tool_made = ["build/x.js", "ios/build/x", "android/.build/x", "web/build/x", "node_modules/x.js",
                     "android/src/main/kotlin/x/build/y.kt", "package-lock.json", "web/Package.resolved",
                     "__pycache__/x.txt", "notes.txt"]
    assert [p for p in tool_made if not created_by_tools(p, listed)] == []
    assert [p for p in not_tool_made if created_by_tools(p, listed)] == []


# ----------------------------------------------------------------------------- 17. a clean build

def test_build_prints_no_setuptools_warning(tmp_path):
    """`pip wheel -v --no-deps .` (what `pip install .` runs) and setuptools' build_editable
    (what `pip install -e .` runs) print no setuptools warning, and the wheel holds the
    app templates."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy(REPO / name, src)
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", ".*")
    for name in ("evit_export", "models", "targets", "validation"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=skip)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # its notice is not ours
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", ".",
                            "-w", str(tmp_path / "wheels")], cwd=src, env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert wheel.returncode == 0, wheel.stderr[-3000:]
    build_editable = f"from setuptools import build_meta as b; b.build_editable({str(tmp_path / 'editable')!r})"
    editable = subprocess.run([sys.executable, "-c", build_editable], cwd=src, env=env,
                              capture_output=True, text=True, timeout=600, check=False)
    assert editable.returncode == 0, editable.stderr[-3000:]
    for name, proc in (("pip wheel", wheel), ("build_editable", editable)):
        text = proc.stdout + proc.stderr
        noisy = [line.strip() for line in text.splitlines()
                 if "Warning" in line or "would be ignored" in line or "deprecated" in line.lower()]
        assert noisy == [], (name, noisy[:8])
    import zipfile

    names = zipfile.ZipFile(next((tmp_path / "wheels").glob("*.whl"))).namelist()
    assert "evit_export/targets/onnx/templates/web/app.js" in names
    assert "evit_export/targets/templates/python/predict.py" in names
