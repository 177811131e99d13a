"""The README's examples run as written, in a fresh clone, in order: the Python API
example reads only what the Quick start's `make demo` leaves, and every make target and
benchmark script the README names exists."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def _first_python_block_strings(block: str) -> list[str]:
    return re.findall(r"[\"']([^\"']+)[\"']", block)


def test_python_api_example_runs_in_a_fresh_clone_after_the_quick_start(tmp_path, monkeypatch):
    """Issue 19.18: every README example runs in a fresh clone, in order. The Python
    example comes after the Quick start, whose `make demo` leaves `runs/default/` (a
    trained digits model): that is all the example may read. Here a short training run
    writes the same folder (the demo's takes minutes); nothing else is provided."""
    from evit_export.training import TrainConfig, train

    monkeypatch.setenv("EVIT_EXPORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    train(TrainConfig(out="runs/default", img_size=32, epochs=1, limit_train=200, limit_val=60, progress=False,
                      threads=1))
    (block,) = python_blocks("Python API")
    before = {p for p in tmp_path.rglob("*")}
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    made = {p for p in tmp_path.rglob("*")} - before
    assert any(p.name == "manifest.json" for p in made), sorted(map(str, made))
    for name in _first_python_block_strings(block):
        if "/" in name or name.endswith((".safetensors", ".onnx", ".pth")):
            assert (tmp_path / name).exists(), f"the example names {name}, which neither it nor make demo made"


def test_every_make_target_and_benchmark_the_readme_names_exists():
    text = README.read_text(encoding="utf-8")
    makefile = (README.parent / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    for name in re.findall(r"\bmake ([a-z][a-z-]*)", text):
        assert name in targets, f"README runs `make {name}`, which the Makefile does not have"
    for script in re.findall(r"(benchmarks/[\w/]+\.py)", text):
        assert (README.parent / script).is_file(), script
