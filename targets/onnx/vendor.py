"""onnxruntime-web for a self-contained web page: installed once with npm into the
tool's cache, then its WebAssembly build copied into the package."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.paths import cache_dir

ORT_WEB_VERSION = "1.30.0"
# The WebAssembly-only build: the script, its module loader and the SIMD binary
# (threaded build, run with one thread). Nothing else of the 136 MB dist is needed.
ORT_WEB_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


def npm_cache() -> Path:
    return Path(os.environ.get("EVIT_EXPORT_NPM_CACHE") or cache_dir() / "npm")


def ort_web_dist(version: str = ORT_WEB_VERSION) -> Path:
    """The dist folder of onnxruntime-web ``version``, installed with npm if not cached."""
    prefix = npm_cache() / f"onnxruntime-web-{version}"
    dist = prefix / "node_modules" / "onnxruntime-web" / "dist"
    if all((dist / name).is_file() for name in ORT_WEB_FILES):
        return dist
    npm = shutil.which("npm")
    if npm is None:
        raise UserError("--vendor-runtime needs npm (Node.js) to fetch onnxruntime-web: install Node.js, "
                        "or leave --vendor-runtime out and run `npm install` in the web folder")
    prefix.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix", str(prefix),
                               f"onnxruntime-web@{version}"], capture_output=True, check=False, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        proc = None
    if proc is None or proc.returncode != 0 or not all((dist / n).is_file() for n in ORT_WEB_FILES):
        detail = (proc.stderr.strip().splitlines() or ["timed out"])[-1] if proc else "timed out after 600 s"
        raise UserError(f"npm could not install onnxruntime-web@{version} ({detail}): check the network or the "
                        "npm registry, or leave --vendor-runtime out")
    return dist


def vendor_ort_web(dest: Path, version: str = ORT_WEB_VERSION) -> list[Path]:
    dist = ort_web_dist(version)
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(dist / name, dest / name)) for name in ORT_WEB_FILES]
