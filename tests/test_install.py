"""Issue 14, installs: the base install (the ONNX stack) works without TensorFlow,
coremltools, LiteRT or scikit-learn, a missing runtime is a one-line hint naming the
extra, and the extras resolve for the platforms the users are on."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from cli_helpers import assert_one_line_error

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("tensorflow", "coremltools", "ai_edge_litert", "executorch", "sklearn", "timm", "scipy", "paramiko")

# Installed into a child interpreter through PYTHONPATH: the path finder stops seeing
# the optional runtimes, so `import x` and `importlib.util.find_spec(x)` behave exactly
# as on a base install where they were never installed (the files stay on disk here).
BLOCKER = f"""
import importlib.machinery
BLOCKED = {OPTIONAL!r}
_find_spec = importlib.machinery.PathFinder.find_spec.__func__

def _find_spec_without_optional(cls, fullname, path=None, target=None):
    if fullname.split(".")[0] in BLOCKED:
        return None
    return _find_spec(cls, fullname, path, target)

importlib.machinery.PathFinder.find_spec = classmethod(_find_spec_without_optional)
"""


@pytest.fixture(scope="module")
def base_env(tmp_path_factory):
    site = tmp_path_factory.mktemp("base_site")
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(site))
    return env


def _cli(env, *args, cwd=None):
    return subprocess.run([sys.executable, "-m", "evit_export", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


def test_blocker_really_blocks(base_env):
    probe = subprocess.run([sys.executable, "-c", "import coremltools"], env=base_env, capture_output=True,
                           text=True)
    assert probe.returncode != 0
    assert "No module named 'coremltools'" in probe.stderr


def test_base_install_runs_models_fold_onnx_check(base_env, tmp_path):
    r = _cli(base_env, "models", "--json")
    assert r.returncode == 0, r.stderr
    ck = tmp_path / "m0.safetensors"
    r = _cli(base_env, "fold", "--variant", "m0", "--img-size", "64", "--num-classes", "10", "--seed", "0",
             "--out", ck)
    assert r.returncode == 0, r.stderr
    onnx_path = tmp_path / "m0.onnx"
    r = _cli(base_env, "onnx", "--checkpoint", ck, "--out", onnx_path)
    assert r.returncode == 0, r.stderr + r.stdout
    r = _cli(base_env, "check", onnx_path, "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    for name in OPTIONAL:
        assert f"'{name}'" not in r.stderr


@pytest.mark.parametrize("command,extra", [("coreml", "coreml"), ("tflite", "tflite")])
def test_missing_runtime_names_the_extra(base_env, tmp_path, command, extra):
    out = tmp_path / ("m0.mlpackage" if command == "coreml" else "m0.tflite")
    r = _cli(base_env, command, "--variant", "m0", "--img-size", "64", "--num-classes", "10", "--out", out)
    line = assert_one_line_error(r.returncode, r.stderr)
    assert f"evit-export[{extra}]" in line
    assert not out.exists()


def _uv() -> str | None:
    found = shutil.which("uv") or str(Path(sys.executable).with_name("uv"))
    return found if Path(found).exists() else None


# pip's resolver evaluates environment markers for the interpreter running it, not for
# --platform (pip documents --platform as a wheel-tag filter only): torch's metadata
# carries `platform_system == "Linux"` CUDA requirements that pip would then demand
# for a Mac. uv's resolver evaluates markers for the target platform, so it is the one
# that can prove cross-platform resolution from this Linux machine.
@pytest.mark.parametrize("extra,platform,expect", [
    ("coreml", "aarch64-apple-darwin", {"coremltools", "onnxruntime", "torch"}),
    ("tflite", "aarch64-manylinux_2_28", {"ai-edge-litert", "tensorflow", "onnxruntime", "torch"}),
    ("all", "aarch64-apple-darwin", {"ai-edge-litert", "tensorflow", "coremltools", "scikit-learn", "timm", "scipy",
                                     "paramiko", "executorch", "ray"}),
])
def test_extras_resolve_for_user_platforms(extra, platform, expect):
    uv = _uv()
    if uv is None:
        pytest.skip("uv is not installed (pip install uv): it resolves for other platforms")
    # executorch 1.5.1 publishes macOS wheels for macOS 14 and later only
    env = dict(os.environ, PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", MACOSX_DEPLOYMENT_TARGET="14.0")
    r = subprocess.run([uv, "pip", "compile", str(ROOT / "pyproject.toml"), "--extra", extra,
                        "--python-platform", platform, "--python-version", "3.11", "--only-binary", ":all:",
                        "--no-header", "-q"], capture_output=True, text=True, env=env, timeout=300)
    if r.returncode != 0 and ("dns error" in r.stderr.lower() or "failed to fetch" in r.stderr.lower()):
        pytest.skip(f"package registry unreachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    pinned = {line.split("==")[0] for line in r.stdout.splitlines() if "==" in line and not line.startswith(" ")}
    assert expect <= pinned, expect - pinned
    assert "tensorflow-cpu" not in pinned  # no wheels for macOS or Linux aarch64


def test_extras_cover_every_optional_module():
    from evit_export.core.optional import EXTRAS
    from evit_export.targets import target_names

    target_names()  # defining the targets declares their runtimes' extras

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for module, (extra, _) in EXTRAS.items():
        assert extra in extras, (module, extra)
    assert set(OPTIONAL) == set(EXTRAS)
