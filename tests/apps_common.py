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


def _parse(path: Path):
    import importlib

    from tree_sitter import Language, Parser

    grammar = importlib.import_module(GRAMMARS[path.suffix])
    source = path.read_bytes()
    return source, Parser(Language(grammar.language())).parse(source)


def _swift_literal(node, source: bytes):
    """The value of a Swift literal node (number, string with its escapes, array), as
    Swift reads it; None for anything else (an expression the test cannot evaluate)."""
    text = source[node.start_byte:node.end_byte].decode()
    if node.type == "integer_literal":
        return int(text)
    if node.type == "real_literal":
        return float(text)
    if node.type == "line_string_literal":
        parts = []
        for child in node.children:
            piece = source[child.start_byte:child.end_byte].decode()
            if child.type == "line_str_text":
                parts.append(piece)
            elif child.type == "str_escaped_char":
                parts.append({"\\n": "\n", "\\t": "\t", "\\0": "\0", "\\r": "\r"}.get(piece, piece[1:]))
            elif child.type not in ('"',):
                return None  # interpolation: not a constant
        return "".join(parts)
    if node.type == "array_literal":
        return [_swift_literal(c, source) for c in node.named_children]
    if node.type == "prefix_expression" and text.startswith("-"):
        value = _swift_literal(node.named_children[-1], source)
        return -value if isinstance(value, (int, float)) else None
    return None


def swift_constants(path: Path) -> dict[str, object]:
    """``let`` constants declared in a Swift file, name -> value as the compiler would
    read them (so a test checks the values the app runs with, not source text)."""
    source, tree = _parse(path)
    found, stack = {}, [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "property_declaration":
            names = [c for c in node.children if c.type == "pattern"]
            values = [c for c in node.named_children if c.type.endswith("literal") or c.type == "prefix_expression"]
            if names and values:
                found[source[names[0].start_byte:names[0].end_byte].decode()] = _swift_literal(values[-1], source)
        stack.extend(node.children)
    return found


def swift_call_arguments(path: Path, function: str) -> list[list[object]]:
    """The literal arguments of every call to ``function`` (None where an argument is not
    a literal), in source order."""
    source, tree = _parse(path)
    calls, stack = [], [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "call_expression" and node.children and \
                source[node.children[0].start_byte:node.children[0].end_byte].decode() == function:
            args = [a for a in node.children[1].named_children[0].named_children if a.type == "value_argument"]
            calls.append((node.start_byte, [_swift_literal(a.named_children[-1], source) for a in args]))
        stack.extend(node.children)
    return [args for _, args in sorted(calls, key=lambda c: c[0])]
