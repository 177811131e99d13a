"""``verify-package``: is the model in this folder the one that was verified?

Three independent checks, all run so the report names every problem:
1. every file's size and sha256 against manifest.json, and no unlisted file except what
   the documented install and build steps create (``created_by_tools``): any other
   unlisted file FAILS the check, named, because an app project bundles what its folder
   holds (an extra file in web/ or android/ ships with the app);
2. the model's embedded spec against the manifest, labels.txt and preprocessing.json;
3. the packaged model re-run on sample.png against expected.json.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.import_order import quiet_runtime_logs
from evit_export.core.preprocess import image_to_pixels
from evit_export.packaging.manifest import MANIFEST, portable_spec, sha256_file
from evit_export.packaging.preprocessing import preprocessing_spec
from evit_export.packaging.sample import compare_with_expected, EXPECTED, SAMPLE
from evit_export.targets import open_artifact, RunnerOptions

# What the documented install and build steps create inside a package, recognised by the
# project file that makes a folder that tool's project: (project files, files, folders).
TOOL_OUTPUTS = (
    (("package.json",), {"package-lock.json"}, {"node_modules"}),  # npm install (web/)
    (("build.gradle.kts", "build.gradle", "settings.gradle.kts", "settings.gradle"),
     {"local.properties"}, {"build", ".gradle", ".kotlin"}),  # Gradle, Android Studio (android/)
    (("Package.swift",), {"Package.resolved"}, {".build", ".swiftpm"}),  # swift build/test, Xcode (ios/)
)


def created_by_tools(rel: str, listed: set[str]) -> bool:
    """Whether the unlisted file ``rel`` (POSIX, relative to the package) is one that npm,
    Gradle, SwiftPM or Python create when the package's INTEGRATION.md steps run: inside
    a folder whose project file the package lists, or __pycache__ beside listed .py files."""
    parts = rel.split("/")
    if len(parts) >= 2 and parts[-2] == "__pycache__" and parts[-1].endswith(".pyc"):
        folder = "/".join(parts[:-2])
        return any(p.endswith(".py") and p.rpartition("/")[0] == folder for p in listed)
    for i in range(len(parts)):
        folder, rest = "/".join(parts[:i]), parts[i:]
        for project_files, files, folders in TOOL_OUTPUTS:
            if not any(f"{folder}/{name}".lstrip("/") in listed for name in project_files):
                continue
            if (len(rest) == 1 and rest[0] in files) or (len(rest) > 1 and rest[0] in folders):
                return True
    return False


def listed_files(manifest: dict) -> set[str]:
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    return {e["path"] for e in entries or [] if isinstance(e, dict) and isinstance(e.get("path"), str)}


def foreign_files(root: Path, manifest: dict) -> list[str]:
    """Files in ``root`` that neither the package (manifest.json) nor the documented
    install/build steps wrote: a user's own, or a tampering."""
    listed = listed_files(manifest)
    found = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if (path.is_file() or path.is_symlink()) and rel != MANIFEST and rel not in listed \
                and not created_by_tools(rel, listed):
            found.append(rel)
    return found


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class VerifyResult:
    package: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def add(self, name: str, problem: str | None, passed: str) -> None:
        self.checks.append(Check(name, problem is None, problem or passed))

    def to_dict(self) -> dict:
        return {"package": self.package, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def _inside(root: Path, rel) -> Path | None:
    """``root / rel`` for a plain relative POSIX path that stays inside ``root``; else None
    (a manifest must not make the verifier read elsewhere)."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    path = root.joinpath(*parts)
    if not path.resolve().is_relative_to(root.resolve()):  # a symlink out of the package
        return None
    return path


def _file_problems(root: Path, manifest: dict) -> str | None:
    entries = manifest.get("files")
    if not isinstance(entries, list) or not entries:
        return "manifest.json lists no files"
    problems = []
    for entry in entries:
        path = _inside(root, entry.get("path")) if isinstance(entry, dict) else None
        if path is None or not isinstance(entry.get("bytes"), int) or not isinstance(entry.get("sha256"), str):
            problems.append(f"manifest.json has an invalid entry {str(entry)[:60]!r}")
            continue
        rel = entry["path"]
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{rel} changed (sha256 differs from manifest.json)")
    problems += [f"{rel} is not part of the package (remove it, or re-create the package)"
                 for rel in foreign_files(root, manifest)]
    return "; ".join(problems) or None


def _spec_problems(root: Path, manifest: dict) -> tuple[str | None, object]:
    model = _inside(root, manifest.get("model"))
    if model is None or "/" in manifest["model"]:
        return "manifest.json does not name the model file", None
    if not model.exists():
        return f"{manifest['model']} is missing", None
    try:
        path, target, spec = open_artifact(model)
    except UserError as e:
        return f"{manifest['model']}: {e}", None
    problems = []
    if portable_spec(spec.to_dict()) != manifest.get("spec"):
        problems.append("the model's embedded spec differs from manifest.json")
    labels_file = root / "labels.txt"
    if not labels_file.is_file() or labels_file.read_text(encoding="utf-8").splitlines() != list(spec.labels):
        problems.append("labels.txt differs from the labels embedded in the model")
    pre_file = root / "preprocessing.json"
    want = json.loads(json.dumps(preprocessing_spec(spec, target.input_quantization(path))))
    try:
        have = json.loads(pre_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if have != want:
        problems.append("preprocessing.json differs from the preprocessing the model's spec implies")
    return "; ".join(problems) or None, (path, target, spec)


def _sample_problem(root: Path, opened) -> str | None:
    from PIL import Image


    path, target, spec = opened
    try:
        expected = json.loads((root / EXPECTED).read_text(encoding="utf-8"))
        recorded = expected["artifact"]
        with Image.open(root / SAMPLE) as im:
            pixels = image_to_pixels(im, spec)[None]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"cannot read {SAMPLE} / {EXPECTED}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    with target.open(path, spec, RunnerOptions(threads=1)) as runner:
        outputs = runner.run(pixels)
    try:
        return compare_with_expected(recorded, outputs)
    except (KeyError, TypeError, ValueError):
        return f"{EXPECTED} does not record the model's outputs: re-create the package"


def verify_package(root: str | Path) -> VerifyResult:
    quiet_runtime_logs()  # TensorFlow/coremltools import chatter is not for the user
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise UserError(f"{root} has no {MANIFEST}: pass a folder written by evit-export package")
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (ValueError, OSError):
        manifest = None
    if not isinstance(manifest, dict):
        raise UserError(f"{root / MANIFEST} is not a package manifest: re-create the package")
    result = VerifyResult(str(root))
    result.add("files", _file_problems(root, manifest), "every file matches manifest.json")
    problem, opened = _spec_problems(root, manifest)
    result.add("spec", problem, "embedded spec, labels.txt and preprocessing.json agree with manifest.json")
    if opened is None:
        result.add("sample", "not run: the model could not be opened", "")
    else:
        result.add("sample", _sample_problem(root, opened), f"{SAMPLE} gives the outputs recorded in {EXPECTED}")
    return result
