"""Shared by the app-package tests: real test images of awkward sizes, and where the
external tools these tests drive (Chromium, kotlinc, npm) are."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
# Non-square crops of real photos (width, height) that need resizing, odd and even,
# portrait and landscape, one smaller than the model input (upscaling).
PHOTO_CROPS = [(97, 61), (61, 97), (250, 33), (201, 200), (640, 427), (45, 52)]


def sklearn_photos() -> list[Path]:
    """The two real photographs scikit-learn ships (china.jpg, flower.jpg)."""
    spec = importlib.util.find_spec("sklearn")
    folder = Path(spec.origin).parent / "datasets" / "images"
    photos = sorted(folder.glob("*.jpg"))
    if not photos:
        pytest.skip("scikit-learn's sample photos are not installed")
    return photos


def write_real_pngs(folder: Path) -> list[Path]:
    """PNG crops of real photos at PHOTO_CROPS sizes (decoded once by Pillow, so every
    reader sees the same pixels; PNG has no decoder latitude, unlike JPEG)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    photos = sklearn_photos()
    for i, (w, h) in enumerate(PHOTO_CROPS):
        with Image.open(photos[i % len(photos)]) as im:
            rgb = np.asarray(im.convert("RGB"))
        top, left = (17 * i) % max(1, rgb.shape[0] - h), (29 * i) % max(1, rgb.shape[1] - w)
        crop = rgb[top:top + h, left:left + w]
        path = folder / f"photo_{w}x{h}.png"
        Image.fromarray(np.ascontiguousarray(crop)).save(path)
        out.append(path)
    return out


def require_tool(name: str, path: str | None = None) -> str:
    found = path if path and Path(path).exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: this test needs it (CI installs it; see .ci/run)")
    return found


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GRAMMARS = {".kt": "tree_sitter_kotlin", ".kts": "tree_sitter_kotlin", ".swift": "tree_sitter_swift",
            ".js": "tree_sitter_javascript", ".mjs": "tree_sitter_javascript"}


def syntax_errors(path: Path) -> list[str]:
    """Syntax errors tree-sitter finds in ``path`` (by its suffix's grammar), as
    'line:col text' strings; empty when the file parses cleanly."""
    import importlib

    from tree_sitter import Language, Parser

    grammar = importlib.import_module(GRAMMARS[path.suffix])
    parser = Parser(Language(grammar.language()))
    source = path.read_bytes()
    tree = parser.parse(source)
    errors, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            row, col = node.start_point
            snippet = source[node.start_byte:node.end_byte][:40].decode(errors="replace")
            errors.append(f"{path.name}:{row + 1}:{col + 1} {'missing' if node.is_missing else 'error'} {snippet!r}")
        elif node.has_error:
            stack.extend(node.children)
    return errors
