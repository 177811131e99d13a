"""The Python floor in pyproject.toml is what the code needs, checked by a tool (vermin,
which knows which syntax and which standard-library names each version added), not by
memory: the code needs nothing newer than the floor, and a floor one minor version lower
would be false (so the check can fail, and the declared floor is the true one)."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["evit_export", "models", "targets", "validation"]


def declared_floor() -> tuple[int, int]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    match = re.fullmatch(r">=\s*3\.(\d+)", project["project"]["requires-python"].strip())
    assert match, "requires-python must read '>=3.N'"
    return 3, int(match.group(1))


def vermin(target: tuple[int, int]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("vermin")
    if not exe.exists():
        pytest.skip("vermin is not installed: pip install -e '.[dev]'")
    return subprocess.run([str(exe), f"-t={target[0]}.{target[1]}-", "--violations", "--no-tips",
                           "--eval-annotations", "--no-parse-comments", *SOURCES],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_code_needs_nothing_newer_than_the_floor():
    floor = declared_floor()
    done = vermin(floor)
    assert done.returncode == 0, f"code needs more than Python {floor[0]}.{floor[1]}:\n{done.stdout}"


def test_a_lower_floor_would_be_false():
    floor = declared_floor()
    done = vermin((floor[0], floor[1] - 1))
    assert done.returncode != 0, "the code runs on an older Python too: lower requires-python"
    assert f"requires !2, {floor[0]}.{floor[1]}" in done.stdout, done.stdout  # names what needs the floor


def test_ruff_targets_the_floor():
    floor = declared_floor()
    ruff = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["ruff"]
    assert ruff["target-version"] == f"py{floor[0]}{floor[1]}"
