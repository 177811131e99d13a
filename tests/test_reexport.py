"""Exporting again to the same path replaces the artifact atomically (a user re-running
a command, or the demo re-run over out/demo/): for the folder-shaped .mlpackage too."""
from __future__ import annotations

import importlib.util

import pytest

from cli_helpers import run_cli_process


# CoreML's case is opt-in (50 s): the default suite replaces an ONNX artifact the same way,
# through the same core.atomic code.
@pytest.mark.parametrize("fmt,name", [("onnx", "m0.onnx"),
                                      pytest.param("coreml", "m0.mlpackage", marks=pytest.mark.slow)])
def test_second_export_replaces_the_first(tmp_path, fmt, name):
    if fmt == "coreml" and importlib.util.find_spec("coremltools") is None:
        pytest.skip("needs the [coreml] extra")
    out = tmp_path / name
    for seed in ("0", "1"):
        r = run_cli_process(fmt, "--variant", "m0", "--img-size", "64", "--num-classes", "10", "--seed", seed,
                            "--out", out)
        assert r.returncode == 0, r.stderr
    r = run_cli_process("check", out, "--json")
    assert r.returncode == 0, r.stderr
    assert '"seed": 1' in (tmp_path / f"{name}.evit.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"{name}.evit.json"])
