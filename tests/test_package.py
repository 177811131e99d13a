"""App-integration packages and measured latency, over a real ONNX artifact."""
import hashlib
import json

import pytest

from cli_helpers import assert_one_line_error, run_cli
from evit_export.models.reference import deploy_for_export
from evit_export.targets.onnx.exporter import export_onnx


@pytest.fixture(scope="module")
def onnx_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    deployed, spec = deploy_for_export("m0", num_classes=10, img_size=96, seed=5,
                                       labels=[f"digit {i}" for i in range(10)])
    return export_onnx(deployed, spec, d / "m0.onnx").path


def test_package_contents_and_checksums(capsys, onnx_artifact, tmp_path):
    out = tmp_path / "pkg"
    code, stdout, err = run_cli(capsys, "package", onnx_artifact, "--out", out)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["INTEGRATION.md", "REPORT.md", "labels.txt", "m0.onnx", "manifest.json", "preprocessing.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["files"]:
        data = (out / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    assert manifest["equivalence"]["passed"]
    assert manifest["latency"][0]["kind"] == "measured" and manifest["latency"][0]["median_ms"] > 0
    assert (out / "labels.txt").read_text().splitlines()[3] == "digit 3"
    pre = json.loads((out / "preprocessing.json").read_text())
    assert pre["center_crop"] == [96, 96] and pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    report = (out / "REPORT.md").read_text()
    assert "PASS" in report
    assert "## Notes" in report and "random weights (seed 5)" in report  # never only in the JSON
    assert manifest["export"]["precision"] == "fp32" and manifest["export"]["opset"] == 17
    assert "onnxruntime" in (out / "INTEGRATION.md").read_text()


def test_package_replaces_atomically_and_bad_input(capsys, onnx_artifact, tmp_path):
    out = tmp_path / "pkg"
    assert run_cli(capsys, "package", onnx_artifact, "--out", out, "--no-latency")[0] == 0
    first = json.loads((out / "manifest.json").read_text())["created"]
    code, _, err = run_cli(capsys, "package", tmp_path / "missing.onnx", "--out", out)
    assert "does not exist" in assert_one_line_error(code, err)
    assert json.loads((out / "manifest.json").read_text())["created"] == first  # untouched


def test_bench_json(capsys, onnx_artifact):
    code, out, err = run_cli(capsys, "bench", onnx_artifact, "--iterations", "5", "--json")
    assert code == 0, err
    row = json.loads(out)[0]
    assert row["runtime"] == "onnxruntime" and row["threads"] == 1 and row["median_ms"] > 0
