"""Accuracy parity over Runners: a trained digits model, its ONNX export, real images."""
import json

import pytest

from cli_helpers import assert_one_line_error, run_cli
from evit_export.models import EfficientViT
from evit_export.models.checkpoint import save_project_checkpoint
from evit_export.models.reference import deploy_for_export
from evit_export.targets import get_target
from evit_export.targets.onnx import OnnxOptions
from evit_export.training import TrainConfig, train


@pytest.fixture(scope="module")
def trained_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("parity")
    result = train(TrainConfig(out=str(d / "run"), img_size=32, epochs=5, batch_size=32, limit_train=480,
                               limit_val=100, progress=False, threads=1))
    deployed, spec = deploy_for_export(None, result.checkpoint)
    assert spec.crop_pct == 1.0
    assert spec.labels[3] == "3"
    get_target("onnx").export(deployed, spec, d / "m0.onnx", OnnxOptions(batch=None))
    return d, result


def test_parity_on_onnx_export_passes(trained_onnx, capsys):
    d, result = trained_onnx
    code, out, err = run_cli(capsys, "parity", d / "m0.onnx", "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["passed"]
    assert rep["images"] == 355
    row = rep["artifacts"][0]
    assert row["agreement"] >= 99.5
    assert abs(row["delta_top1"]) <= 0.2
    assert row["runtime"] == "onnxruntime"
    assert row["tolerance"] == 0.2
    assert rep["reference"]["top1"] > 50  # a trained model, not a constant predictor


def test_parity_on_image_folder_with_unreadable_files(trained_onnx, tmp_path, capsys):
    from evit_export.data import write_digits_imagefolder

    d, result = trained_onnx
    root = write_digits_imagefolder(tmp_path / "digits", splits=("val",))
    (root / "val" / "7" / "broken.png").write_bytes(b"\x89PNG\r\n not really")
    code, out, err = run_cli(capsys, "parity", d / "m0.onnx", "--data", root, "--verbose")
    assert code == 0, out + err
    assert "1 unreadable files skipped" in out
    assert "PASS" in out
    assert "per-class" in out
    code, out, err = run_cli(capsys, "parity", d / "m0.onnx", "--data", root, "--json", "--verbose")
    rep = json.loads(out)
    assert rep["skipped"] == 1
    assert rep["images"] == 355
    assert set(rep["artifacts"][0]["per_class_delta"]) == {str(i) for i in range(10)}


def test_parity_fails_against_other_weights(trained_onnx, tmp_path, capsys):
    """The artifact checked against an untrained reference: a real accuracy gap, exit 1."""
    d, result = trained_onnx
    from evit_export import load_model

    spec = load_model(checkpoint=result.checkpoint).spec
    untrained = EfficientViT("m0", num_classes=10, img_size=32).eval()
    save_project_checkpoint(untrained, spec, tmp_path / "untrained.safetensors")
    code, out, err = run_cli(capsys, "parity", d / "m0.onnx", "--checkpoint", tmp_path / "untrained.safetensors",
                             "--json")
    assert code == 1, err
    rep = json.loads(out)
    assert not rep["passed"]
    assert abs(rep["artifacts"][0]["delta_top1"]) > 0.2


def test_parity_bad_input(trained_onnx, tmp_path, capsys):
    d, _ = trained_onnx
    code, _, err = run_cli(capsys, "parity", tmp_path / "nope.onnx")
    assert "does not exist" in assert_one_line_error(code, err)
    code, _, err = run_cli(capsys, "parity", d / "m0.onnx", "--data", tmp_path / "missing")
    assert "does not exist" in assert_one_line_error(code, err)
    (tmp_path / "other" / "zebra").mkdir(parents=True)
    (tmp_path / "other" / "zebra" / "a.txt").write_text("x")
    code, _, err = run_cli(capsys, "parity", d / "m0.onnx", "--data", tmp_path / "other")
    assert "not labels of the model" in assert_one_line_error(code, err)
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run_cli(capsys, "parity", tmp_path / "notes.txt")
    assert_one_line_error(code, err)
