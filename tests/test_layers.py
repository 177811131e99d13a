"""The floor plan, enforced: imports only go downward.

    core, data            0  (data may import core; core imports nothing else of the project)
    models                1
    targets               2
    validation            3
    training, packaging   4  (packaging may use validation; the two never import each other)
    sweep                 5  (runs exports, checks and packages' report for a whole matrix)
    the API               6  (evit_export/__init__.py, api.py, demo.py)
    cli                   7  (evit_export/cli/, __main__.py)

Every module's imports are read with ``ast`` (module level and inside functions, where
this project puts its heavy imports), so a lazy import cannot hide an upward edge.
Imports made from strings (the target registry's class paths, the CLI's
COMMAND_MODULES) are not seen here; both point within their own layer.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Repository folder -> the package name it installs as (pyproject's package-dir).
FOLDERS = {"evit_export": "evit_export", "models": "evit_export.models", "targets": "evit_export.targets",
           "validation": "evit_export.validation"}

RANKS = {"core": 0, "data": 0, "models": 1, "targets": 2, "validation": 3, "training": 4, "packaging": 4,
         "sweep": 5, "api": 6, "cli": 7}
# Same-rank layers may not import each other, except these (importer, imported) pairs.
SIDEWAYS = {("data", "core")}
# Modules directly under evit_export/ that are not sub-packages, and their layer.
TOP_LEVEL = {"evit_export": "api", "evit_export.api": "api", "evit_export.demo": "api",
             "evit_export.__main__": "cli"}


def layer_of(module: str) -> str | None:
    """The floor-plan layer of a dotted ``evit_export`` module name; None for other packages."""
    parts = module.split(".")
    if parts[0] != "evit_export":
        return None
    if len(parts) > 1 and parts[1] in RANKS and parts[1] != "api":
        return parts[1]
    return TOP_LEVEL.get(".".join(parts[:2]), "unplaced")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(module: str, source: str, is_package: bool = False) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``source``, relative imports resolved;
    ``from pkg import name`` counts as ``pkg.name`` when that could be a submodule."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """Violations of the floor plan in one module's source, one readable line each."""
    importer = layer_of(module)
    problems = []
    for line, name in imported_modules(module, source, is_package):
        imported = layer_of(name)
        if imported is None or imported == importer:
            continue
        if "unplaced" in (importer, imported):
            continue  # reported once per module by test_every_module_has_a_layer
        if RANKS[imported] < RANKS[importer] or (importer, imported) in SIDEWAYS:
            continue
        # ``from evit_export.x import y`` yields both ``evit_export.x`` and ``evit_export.x.y``;
        # ``from evit_export import UserError`` is the API package (rank 5) only when
        # ``UserError`` is not itself a submodule, so report each line once, by its deepest name.
        problems.append((line, name, importer, imported))
    seen = {}
    for line, name, importer, imported in problems:
        if line not in seen or len(name) > len(seen[line][0]):
            seen[line] = (name, importer, imported)
    return [f"{module}:{line}: {importer} (rank {RANKS[importer]}) imports {name} "
            f"({imported}, rank {RANKS[imported]})" for line, (name, importer, imported) in sorted(seen.items())]


def project_modules() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_module_has_a_layer():
    unplaced = [module_name(p) for p in project_modules() if layer_of(module_name(p)) == "unplaced"]
    assert not unplaced, f"modules outside the floor plan (give them a layer in tests/test_layers.py): {unplaced}"


def test_imports_only_go_downward():
    modules = project_modules()
    assert len(modules) > 40  # the walk found the project, not an empty folder
    violations = []
    for path in modules:
        violations += upward_imports(module_name(path), path.read_text(encoding="utf-8"),
                                     is_package=path.name == "__init__.py")
    assert not violations, "upward imports:\n" + "\n".join(violations)


@pytest.mark.parametrize("module, source, expected", [
    # module-level upward import
    ("evit_export.validation.check", "from evit_export.cli import app\n", "validation (rank 3) imports evit_export.cli"),
    # hidden inside a function
    ("evit_export.targets.calibration", "def f():\n    from evit_export.demo import run_demo\n",
     "targets (rank 2) imports evit_export.demo.run_demo"),
    # core may not import data, although data may import core
    ("evit_export.core.spec", "import evit_export.data.images\n", "core (rank 0) imports evit_export.data"),
    # the two rank-4 layers never import each other
    ("evit_export.training.train", "from evit_export.packaging import package\n",
     "training (rank 4) imports evit_export.packaging"),
    # a relative import resolved against its package
    ("evit_export.models.load", "from ..targets import get_target\n", "models (rank 1) imports evit_export.targets"),
    # the API package itself
    ("evit_export.packaging.package", "from evit_export import check\n", "packaging (rank 4) imports evit_export"),
])
def test_upward_import_is_caught(module, source, expected):
    found = upward_imports(module, source)
    assert len(found) == 1, found
    assert expected in found[0], found


@pytest.mark.parametrize("module, source", [
    ("evit_export.data.images", "from evit_export.core.spec import ModelSpec\n"),
    ("evit_export.packaging.package", "def f():\n    from evit_export.validation.check import check_artifact\n"),
    ("evit_export.cli.check", "from evit_export import api\nfrom evit_export.api import check\n"),
    ("evit_export.api", "from evit_export.targets import get_target\nimport numpy\n"),
    ("evit_export.targets.onnx", "from .options import OnnxOptions\n"),
])
def test_downward_import_is_allowed(module, source):
    assert upward_imports(module, textwrap.dedent(source), is_package=module.endswith("onnx")) == []
