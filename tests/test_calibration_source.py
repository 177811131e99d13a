"""Issue 14: int8 is never calibrated or judged on the wrong data without a word."""
from __future__ import annotations

import json

import pytest

from cli_helpers import assert_one_line_error, run_cli_process
from evit_export.core.errors import UserError
from evit_export.data import DIGITS_LABELS
from evit_export.models.reference import deploy_for_export
from evit_export.targets.calibration import calibration_record


def test_non_digits_model_needs_a_calibration_source():
    _, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    with pytest.raises(UserError, match="calibration_data=DIR"):
        calibration_record(spec, None, 8)


def test_digits_model_defaults_to_its_own_training_images():
    _, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    spec = spec.replace(labels=list(DIGITS_LABELS))
    pixels, record = calibration_record(spec, None, 8)
    assert len(pixels) == 8 and not record["random"] and "digits" in record["source"]


def test_random_is_explicit_and_carried_as_a_warning():
    _, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    _, record = calibration_record(spec, "random", 4)
    assert record["random"] and "RANDOM" in record["warning"] and record["warning"] in spec.notes


def test_folder_source_records_no_machine_path(tmp_path):
    from conftest import write_digits_folder

    folder = write_digits_folder(tmp_path / "calib", 12)
    _, spec = deploy_for_export("m0", img_size=64, num_classes=10, seed=0)
    _, record = calibration_record(spec, folder, 12)
    assert str(tmp_path) not in json.dumps(record) and "calib/" in record["source"]


def test_cli_int8_without_source_is_one_line(tmp_path):
    out = tmp_path / "m0_int8.onnx"
    r = run_cli_process("onnx", "--variant", "m0", "--img-size", "64", "--num-classes", "10", "--precision", "int8",
                        "--out", out)
    line = assert_one_line_error(r.returncode, r.stderr)
    assert "--calibration-data" in line and not out.exists()
