"""The README's Python API example runs as written, on a checkpoint and a folder of
labelled images this test makes under the names the example uses."""
from __future__ import annotations

import os
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_python_api_example_runs_as_written(tmp_path, monkeypatch):
    from conftest import write_digits_folder
    from evit_export.data import DIGITS_LABELS
    from evit_export.models.checkpoint import save_project_checkpoint
    from evit_export.models.reference import prepare_model

    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    model = prepare_model("m0", None, 10, 64, seed=0, labels=list(DIGITS_LABELS))
    save_project_checkpoint(model, model.spec, tmp_path / "m0_digits.safetensors")
    write_digits_folder(tmp_path / "val_images", 40, size=64)
    (blocks,) = [python_blocks("Python API")]
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert namespace["report"].passed
    assert namespace["parity"].passed
    assert namespace["latency"].median_ms > 0
    assert (tmp_path / "m0_package" / "manifest.json").is_file()
    assert os.path.exists(tmp_path / "m0_fp16.onnx")
