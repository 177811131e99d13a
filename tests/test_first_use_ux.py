"""Issue 19, what a new user trips over: failed commands leave no folders behind (19.11)
and messages speak the interface in use (19.10)."""
from __future__ import annotations

import pytest

from cli_helpers import assert_one_line_error, run_cli


@pytest.mark.parametrize("args", [
    ["fold", "--variant", "m0", "--checkpoint", "missing.safetensors", "--out", "mist/deep/m0.safetensors"],
    ["onnx", "--variant", "m9", "--out", "mist/deep/m0.onnx"],
    ["onnx", "--variant", "m0", "--checkpoint", "missing.pth", "--out", "mist/deep/m0.onnx"],
    ["package", "missing.onnx", "--out", "mist/deep/pkg"],
    ["devices", "fit", "missing.csv", "--device", "x", "--out", "mist/deep/x.json"],
])
def test_a_failed_command_creates_no_out_folder(args, capsys, tmp_path, monkeypatch):
    """19.11: `mist/` and `out/` appeared after commands that wrote nothing."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err)
    assert not (tmp_path / "mist").exists(), sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def test_a_failed_write_removes_the_folders_it_made(tmp_path):
    """core.atomic makes missing folders when the output is written, and removes them
    again when the writer fails."""
    from evit_export.core.atomic import atomic_path, staged_outputs

    dest = tmp_path / "a" / "b" / "model.bin"
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("converter failed")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with staged_outputs(dest) as stage:
            (stage / "model.bin").write_bytes(b"half")
            raise RuntimeError("converter failed")
    assert list(tmp_path.iterdir()) == []
    with staged_outputs(dest) as stage:
        (stage / "model.bin").write_bytes(b"whole")
        (stage / "model.bin.evit.json").write_text("{}")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model.bin", "model.bin.evit.json"]
