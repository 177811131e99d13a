"""What every target's app templates are written with: the package being written
(``AppContext``), template rendering, the shared Python app, and the lookup of a
target's own app writers (``Target.app_writers`` and ``Target.auto_apps``; a target
without any gets none: packaging writes a generic note instead).
Packaging (above) decides which apps a package gets and writes the rest of it.
"""
from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from evit_export.core.spec import ModelSpec
from evit_export.targets import get_target


@dataclass
class AppContext:
    root: Path  # the package folder being written
    model_file: str  # the artifact's name at the package root
    spec: ModelSpec
    preprocessing: dict
    expected: dict
    vendor_runtime: bool = False
    export_info: dict = field(default_factory=dict)  # the exporter's record (sidecar "info")
    log: Callable[[str], None] = field(default=lambda msg: None)

    @property
    def class_prefix(self) -> str:
        """``m0_digits.tflite`` -> ``M0Digits``: a type-name stem for Swift and Kotlin."""
        stem = self.model_file.split(".")[0]
        words = [w for w in re.split(r"[^0-9A-Za-z]+", stem) if w]
        name = "".join(w[:1].upper() + w[1:] for w in words) or "Model"
        return name if name[0].isalpha() else "Model" + name

    @property
    def package_id(self) -> str:
        """Lower-case identifier for a Java/Kotlin package segment."""
        return re.sub(r"[^0-9a-z]", "", self.class_prefix.lower()) or "model"

    def copy_model(self, dest_dir: Path) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        src = self.root / self.model_file
        dest = dest_dir / self.model_file
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            shutil.copy2(src, dest)
        return dest

    def copy_root_file(self, name: str, dest_dir: Path, new_name: str | None = None) -> Path:
        dest_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy2(self.root / name, dest_dir / (new_name or name)))


def app_writers(target_name: str) -> dict[str, Callable[[AppContext], str]]:
    """App kind -> writer for ``target_name``'s artifacts (``Target.app_writers``)."""

    return get_target(target_name).app_writers()


def auto_apps(target_name: str) -> tuple[str, ...]:
    return tuple(get_target(target_name).auto_apps)


# --------------------------------------------------------------------------- templates

def template_text(package: str, relative: str) -> str:
    """A template file shipped beside ``package`` (e.g. ``evit_export.targets.onnx``)."""
    return resources.files(package).joinpath(relative).read_text(encoding="utf-8")


def render(text: str, values: dict[str, object]) -> str:
    """Fill ``@@KEY@@`` placeholders (a marker no Kotlin/Swift/JS syntax uses)."""
    def fill(match):
        key = match.group(1)
        if key not in values:
            raise KeyError(f"template placeholder @@{key}@@ has no value")
        return str(values[key])

    return re.sub(r"@@([A-Z0-9_]+)@@", fill, text)


def write_template(package: str, relative: str, dest: Path, values: dict[str, object] | None = None) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    text = template_text(package, relative)
    dest.write_text(render(text, values or {}), encoding="utf-8")
    return dest


# --------------------------------------------------------------------------- python (shared)

def write_python_app(ctx: AppContext, target_package: str, requirement: str) -> str:
    """predict.py + evit_preprocess.py at the package root, beside the model, and the
    format's ``model_runtime.py`` (from ``target_package``'s templates) that opens it."""
    pkg = "evit_export.targets"
    write_template(pkg, "templates/python/predict.py", ctx.root / "predict.py",
                   {"MODEL_FILE": ctx.model_file}).chmod(0o755)
    write_template(pkg, "templates/python/evit_preprocess.py", ctx.root / "evit_preprocess.py")
    write_template(target_package, "templates/python/model_runtime.py", ctx.root / "model_runtime.py")
    (ctx.root / "requirements.txt").write_text(f"numpy\npillow\n{requirement}\n", encoding="utf-8")
    return ("```bash\npip install -r requirements.txt\npython predict.py sample.png        # top-5 per image; "
            "--json for machine-readable output\n```\n`evit_preprocess.py` restates the tool's preprocessing "
            "exactly (same pixels), with numpy and Pillow only.\n")
