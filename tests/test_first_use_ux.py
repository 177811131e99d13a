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


def _api_error(call) -> str:
    import evit_export

    with pytest.raises(evit_export.UserError) as info:
        call()
    return str(info.value)


def test_messages_speak_the_interface_in_use(capsys, tmp_path, monkeypatch):
    """19.10: the API's errors name Python parameters (``batch_size=``, ``data=``,
    ``out=``), the command line's the flags (``--batch-size``, ``--data``, ``--out``);
    neither leaks the other's wording."""
    import evit_export
    from evit_export.training import TrainConfig, train

    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("a file where a folder is wanted")
    cases = [
        (lambda: train(TrainConfig(batch_size=0, out=str(tmp_path / "r1"))),
         ("train", "--batch-size", "0", "--out", tmp_path / "r1"), "batch_size=0", "--batch-size 0"),
        (lambda: train(TrainConfig(data=str(tmp_path / "nodata"), out=str(tmp_path / "r2"))),
         ("train", "--data", tmp_path / "nodata", "--out", tmp_path / "r2"), "data=", "--data"),
        (lambda: train(TrainConfig(epochs=0, out=str(tmp_path / "r3"))),
         ("train", "--epochs", "0", "--out", tmp_path / "r3"), "epochs=0", "--epochs 0"),
        (lambda: evit_export.export(evit_export.load_model("m0", img_size=32, num_classes=2, seed=0), "onnx",
                                    out=blocker / "m0.onnx"),
         ("onnx", "--variant", "m0", "--out", blocker / "m0.onnx"), "out=", "--out"),
    ]
    for api_call, cli_args, api_word, cli_word in cases:
        message = _api_error(api_call)
        assert api_word in message, message
        assert "--" not in message, message
        code, _, err = run_cli(capsys, *cli_args)
        line = assert_one_line_error(code, err)
        assert cli_word in line, line
        assert api_word not in line, line
