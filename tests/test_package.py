"""App-integration packages over a real ONNX artifact: contents, checksums, no machine
paths, sample + expected outputs, verify-package catching one changed byte, --app
choices, reference weights by --checkpoint or by sha256 in the cache."""
import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from apps_common import write_real_pngs
from cli_helpers import assert_one_line_error, run_cli
from evit_export.models.reference import deploy_for_export
from evit_export.targets.onnx.exporter import export_onnx
from PIL import Image


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    deployed, spec = deploy_for_export("m0", num_classes=10, img_size=96, seed=5,
                                       labels=[f"digit {i}" for i in range(10)])
    return export_onnx(deployed, spec, d / "m0.onnx").path


@pytest.fixture(scope="module")
def package(onnx_artifact, tmp_path_factory):
    from evit_export.packaging.package import build_package

    return build_package(onnx_artifact, tmp_path_factory.mktemp("built") / "pkg", measure=True)


def test_package_contents_and_checksums(package):
    names = sorted(p.name for p in package.iterdir())
    assert names == ["INTEGRATION.md", "REPORT.md", "evit_preprocess.py", "expected.json", "labels.txt", "m0.onnx",
                     "manifest.json", "model_runtime.py", "predict.py", "preprocessing.json", "requirements.txt",
                     "sample.png", "web"]
    manifest = json.loads((package / "manifest.json").read_text())
    listed = {e["path"] for e in manifest["files"]}
    assert listed == {p.relative_to(package).as_posix() for p in package.rglob("*")
                      if p.is_file() and p.name != "manifest.json"}
    for entry in manifest["files"]:
        data = (package / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        assert len(data) == entry["bytes"]
    assert manifest["apps"] == ["web", "python"]
    assert manifest["equivalence"]["passed"]
    assert manifest["latency"][0]["kind"] == "measured"
    assert manifest["latency"][0]["median_ms"] > 0
    assert (package / "labels.txt").read_text().splitlines()[3] == "digit 3"
    pre = json.loads((package / "preprocessing.json").read_text())
    assert pre["center_crop"] == [96, 96]
    assert pre["resize"]["shorter_side"] == 109
    assert pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert "half to even" in pre["crop_rules"]
    report = (package / "REPORT.md").read_text()
    assert "PASS" in report
    assert "sample.png" in report
    assert "## Notes" in report and "random weights (seed 5)" in report  # never only in the JSON
    assert manifest["export"]["precision"] == "fp32"
    assert manifest["export"]["opset"] == 17
    assert manifest["weights"]["seed"] == 5
    integration = (package / "INTEGRATION.md").read_text()
    assert "evitClassify" in integration
    assert "predict.py" in integration


def test_sample_is_a_real_image_sized_so_resize_is_identity(package):
    from evit_export.targets import open_artifact

    from evit_export.core.preprocess import image_to_pixels

    _, _, spec = open_artifact(package / "m0.onnx")
    with Image.open(package / "sample.png") as im:
        assert im.size == (109, 109) and im.mode == "RGB"  # floor(96 / 0.875)
        rgb = np.asarray(im)
        pixels = image_to_pixels(im, spec)
    assert rgb.std() > 20  # labels "digit i" are not the digits model: a generated pattern, not a flat picture
    assert json.loads((package / "manifest.json").read_text())["sample"]["source"] == "generated"
    top = (109 - 96 + 1) // 2 - 1  # int(round(6.5)) = 6: half to even
    assert np.array_equal(pixels.transpose(1, 2, 0).astype(np.uint8), rgb[top:top + 96, top:top + 96])
    expected = json.loads((package / "expected.json").read_text())
    assert len(expected["pytorch"]["logits"]) == 10
    assert len(expected["pytorch"]["top5"]) == 5
    assert expected["top1_agrees"]
    assert expected["artifact"]["runtime"] == "onnxruntime"
    assert abs(sum(np.exp(expected["pytorch"]["logits"]) / np.exp(expected["pytorch"]["logits"]).sum()) - 1) < 1e-9


@pytest.fixture(scope="module")
def checkpoint_artifact(tmp_path_factory):
    """An ONNX exported from a project checkpoint at an absolute path."""
    from evit_export.models.checkpoint import save_project_checkpoint
    from evit_export.models.reference import prepare_model

    d = tmp_path_factory.mktemp("ck")
    model = prepare_model("m0", None, 10, 64, seed=2, labels=[f"c{i}" for i in range(10)])
    ck = save_project_checkpoint(model, model.spec, d / "weights" / "mine.safetensors")
    deployed, spec = deploy_for_export("m0", ck)
    return export_onnx(deployed, spec, d / "mine.onnx").path, ck, spec


def test_nothing_shipped_carries_a_machine_path(checkpoint_artifact, tmp_path):
    """Manifest, report and every text file name the weights by file name and sha256,
    never where they were."""
    from evit_export.packaging.package import build_package

    artifact, ck, _ = checkpoint_artifact
    pkg = build_package(artifact, tmp_path / "out" / "pkg", measure=False, app="python")
    manifest = json.loads((pkg / "manifest.json").read_text())
    assert manifest["weights"] == {"file": "mine.safetensors",
                                   "sha256": hashlib.sha256(ck.read_bytes()).hexdigest()}
    assert manifest["spec"]["source"]["checkpoint"] == "mine.safetensors"
    for path in pkg.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".py", ".js", ".html", ".txt"):
            text = path.read_text()
            assert str(ck.parent.parent) not in text, path.name
            assert "/weights/" not in text, path.name


def test_reference_weights_by_checkpoint_or_sha256_in_cache(checkpoint_artifact, tmp_path, monkeypatch, capsys):
    from evit_export.core.errors import UserError
    from evit_export.packaging.weights import resolve_checkpoint

    artifact, ck, spec = checkpoint_artifact
    moved = tmp_path / "elsewhere" / "mine.safetensors"
    moved.parent.mkdir()
    shutil.move(ck, moved)
    shutil.move(ck.with_suffix(".json"), moved.with_suffix(".json"))
    try:
        code, _, err = run_cli(capsys, "package", artifact, "--out", tmp_path / "p1", "--no-latency")
        assert "pass --checkpoint" in assert_one_line_error(code, err)
        assert not (tmp_path / "p1").exists()
        code, _, err = run_cli(capsys, "package", artifact, "--out", tmp_path / "p2", "--no-latency",
                               "--app", "python", "--checkpoint", moved)
        assert code == 0, err
        # A spec that records the sha256 finds the weights in the tool's cache.
        monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "elsewhere"))
        sha = hashlib.sha256(moved.read_bytes()).hexdigest()
        assert resolve_checkpoint(spec.replace(source={"checkpoint": str(ck), "sha256": sha})) == moved
        with pytest.raises(UserError, match="pass checkpoint="):
            resolve_checkpoint(spec.replace(source={"checkpoint": str(ck), "sha256": "0" * 64}))
        # A spec naming only the file (no machine path) finds it beside the artifact, by sha256.
        beside = artifact.parent / "mine.safetensors"
        shutil.copy(moved, beside)
        try:
            named = spec.replace(source={"checkpoint": "mine.safetensors", "sha256": sha})
            assert resolve_checkpoint(named, artifact=artifact) == beside
            with pytest.raises(UserError, match="pass checkpoint="):
                resolve_checkpoint(named.replace(source={"checkpoint": "mine.safetensors", "sha256": "1" * 64}),
                                   artifact=artifact)
        finally:
            beside.unlink()
    finally:
        shutil.move(moved, ck)
        shutil.move(moved.with_suffix(".json"), ck.with_suffix(".json"))


def _verify(capsys, folder):
    code, out, err = run_cli(capsys, "verify-package", folder, "--json")
    return code, json.loads(out) if out.strip() else None, err


def test_verify_package_passes_fresh_and_catches_one_changed_byte(capsys, package, tmp_path):
    code, result, err = _verify(capsys, package)
    assert code == 0, err
    assert result["ok"], err
    assert [c["name"] for c in result["checks"]] == ["files", "spec", "sample"]

    def tampered(name, change):
        copy = tmp_path / name
        shutil.copytree(package, copy)
        change(copy)
        return _verify(capsys, copy)

    def flip_model_byte(root):
        data = bytearray((root / "m0.onnx").read_bytes())
        data[len(data) // 2] ^= 0x01
        (root / "m0.onnx").write_bytes(bytes(data))

    code, result, _ = tampered("model", flip_model_byte)
    assert code == 1
    assert "m0.onnx changed" in result["checks"][0]["detail"]
    code, result, _ = tampered("label", lambda r: (r / "labels.txt").write_text(
        (r / "labels.txt").read_text().replace("digit 3", "digit 8")))
    assert code == 1
    assert "labels.txt changed" in result["checks"][0]["detail"]
    assert "labels.txt differs" in result["checks"][1]["detail"]
    code, result, _ = tampered("pre", lambda r: (r / "preprocessing.json").write_text(
        (r / "preprocessing.json").read_text().replace('"crop_pct": 0.875', '"crop_pct": 0.9')))
    assert code == 1
    assert "preprocessing.json changed" in result["checks"][0]["detail"]
    assert "preprocessing.json differs" in result["checks"][1]["detail"]


def test_verify_package_reruns_the_sample_and_reads_as_text(capsys, package, tmp_path):
    """A sample.png change that keeps the manifest consistent is still caught by the re-run."""
    from evit_export.packaging.manifest import file_entries

    copy = tmp_path / "pkg"
    shutil.copytree(package, copy)
    with Image.open(copy / "sample.png") as im:
        Image.fromarray(255 - np.asarray(im)).save(copy / "sample.png")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"] = file_entries(copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, _ = run_cli(capsys, "verify-package", copy)
    assert code == 1
    assert "sample: " in out
    assert "expected.json" in out
    assert "does NOT match" in out
    code, _, err = run_cli(capsys, "verify-package", tmp_path / "nothing")
    assert "no manifest.json" in assert_one_line_error(code, err)


def test_app_choice(capsys, onnx_artifact, tmp_path):
    code, _, err = run_cli(capsys, "package", onnx_artifact, "--out", tmp_path / "ios", "--app", "ios")
    assert "--app ios needs a CoreML (.mlpackage" in assert_one_line_error(code, err)
    assert not (tmp_path / "ios").exists()


def test_package_replaces_atomically_and_bad_input(capsys, onnx_artifact, tmp_path):
    out = tmp_path / "pkg"
    assert run_cli(capsys, "package", onnx_artifact, "--out", out, "--no-latency", "--app", "python")[0] == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    code, _, err = run_cli(capsys, "package", tmp_path / "missing.onnx", "--out", out)
    assert "does not exist" in assert_one_line_error(code, err)
    assert json.loads((out / "manifest.json").read_text())["created"] == first  # untouched


def test_target_without_templates_gets_a_note_not_a_key_error():
    """INTEGRATION.md of a target without app templates (a plug-in target: see
    test_target_plugin.py for one end to end) is the generic note."""
    from evit_export.packaging.apps import generic_note
    from evit_export.packaging.package import render_integration

    text = render_integration("x.bin", "no_such_target", {})
    assert generic_note("no_such_target", "x.bin") in text


def test_bench_json(capsys, onnx_artifact):
    code, out, err = run_cli(capsys, "bench", onnx_artifact, "--iterations", "5", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["runtime"] == "onnxruntime"
    assert row["threads"] == 1
    assert row["median_ms"] > 0


def test_predict_py_matches_onnxruntime_on_the_tools_tensor(package, tmp_path):
    import onnxruntime as ort
    from evit_export.targets import open_artifact

    from evit_export.core.preprocess import image_to_pixels, to_model_input

    images = [package / "sample.png"] + write_real_pngs(tmp_path)
    proc = subprocess.run([sys.executable, "predict.py", "--json", *map(str, images)], cwd=package,
                          capture_output=True, check=False, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    path, _, spec = open_artifact(package / "m0.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for image in images:
        with Image.open(image) as im:
            x = to_model_input(image_to_pixels(im, spec)[None], spec)
        logits = session.run(None, {session.get_inputs()[0].name: x})[0][0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        got = results[str(image)]
        assert [hit["label"] for hit in got] == [spec.labels[i] for i in np.argsort(-probs, kind="stable")[:5]]
        assert max(abs(hit["score"] - probs[spec.labels.index(hit["label"])]) for hit in got) < 1e-6
    expected = json.loads((package / "expected.json").read_text())
    assert results[str(images[0])][0]["label"] == expected["artifact"]["top5"][0]["label"]


def test_predict_py_missing_image_is_one_line(package):
    proc = subprocess.run([sys.executable, "predict.py", "nope.png"], cwd=package, capture_output=True, check=False,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: nope.png does not exist"
