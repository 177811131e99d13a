"""``compare`` (issue 22.3): the paper's protocol on this machine, EfficientViT vs a timm baseline."""
from __future__ import annotations

import pytest
from evit_export.validation.compare import PAPER_RATIOS, paper_ratio

from evit_export.core.jsonio import dumps_strict, loads_strict
from tests.cli_helpers import assert_one_line_error, run_cli


def test_paper_ratios_are_looked_up_by_pair_only():
    assert paper_ratio("M5", "mobilenetv3_large_100") == {"cpu": 1.452, "onnx": 0.885}
    assert paper_ratio("m2", "mobilevit_xxs")["onnx"] == 7.4
    assert paper_ratio("m2", "mobilenetv3_large_100") == {}  # the paper published no such pair
    assert all(v["onnx"] > 0 for v in PAPER_RATIOS.values())


@pytest.mark.integration
def test_compare_measures_ours_and_a_baseline_the_same_way(capsys, tmp_path):
    pytest.importorskip("timm")
    pytest.importorskip("onnxsim")
    code, out, err = run_cli(capsys, "compare", "--variants", "m0", "--baselines", "mobilenetv3_small_050",
                             "--batch", "2", "--iterations", "3", "--out", tmp_path / "cmp", "--json")
    assert code == 0, err
    result = loads_strict(out)
    ours, theirs = result["rows"]
    assert (ours["model"], ours["role"], theirs["role"]) == ("m0", "efficientvit", "baseline")
    for row in (ours, theirs):  # both measured by the same harness, in their own processes
        assert row["images_per_s"] > 0
        assert row["p50_ms"] > 0
        assert row["peak_rss_bytes"] > 0
        assert row["runtime"].startswith("onnxruntime")
    (ratio,) = result["ratios"]
    assert ratio["measured"] == pytest.approx(ours["images_per_s"] / theirs["images_per_s"], rel=2e-3)
    assert ratio["paper_onnx"] is None
    assert result["batch"] == 2
    assert result["threads"] == 1
    assert result["cpu_flags"] == sorted(result["cpu_flags"])
    assert loads_strict((tmp_path / "cmp" / "compare.json").read_text()) == loads_strict(dumps_strict(result))
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_refuses_an_empty_list(capsys):
    code, _, err = run_cli(capsys, "compare", "--variants", " , ")
    assert "--variants names nothing" in assert_one_line_error(code, err)
