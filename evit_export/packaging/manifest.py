"""What a package records about itself: file checksums and a spec with no machine paths."""
from __future__ import annotations

import copy
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from evit_export.core.digest import sha256_file

MANIFEST = "manifest.json"


def file_entries(root: Path) -> list[dict]:
    """Every file under ``root`` but the manifest, as POSIX relative path, size, sha256."""
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.relative_to(root).as_posix() != MANIFEST:
            out.append({"path": p.relative_to(root).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_file(p)})
    return out


def _is_url(text: str) -> bool:
    return "://" in text


def file_name(location: str) -> str:
    """The file name of a local path written on any OS (the exporting machine may differ)."""
    return PureWindowsPath(location).name if "\\" in location else PurePosixPath(location).name


def portable_spec(spec_dict: dict) -> dict:
    """The spec as the artifact embeds it, with a local checkpoint path cut to its file
    name: a package must not carry the exporting machine's paths."""
    out = scrub_paths(copy.deepcopy(spec_dict))
    source = dict(out.get("source") or {})
    location = source.get("checkpoint")
    if isinstance(location, str) and not _is_url(location):
        source["checkpoint"] = file_name(location)
    out["source"] = source
    return out


def weights_record(spec_dict: dict, checkpoint: Path | str | None) -> dict:
    """How the package names its weights: file name + sha256, a URL, or a seed."""
    source = spec_dict.get("source") or {}
    if "seed" in source and checkpoint is None:
        return {"seed": source["seed"], "note": "random weights (structure, speed and equivalence checks only)"}
    record = {}
    location = str(checkpoint) if checkpoint is not None else source.get("checkpoint")
    if location:
        record["file"] = location if _is_url(location) else file_name(location)
    if checkpoint is not None and not _is_url(str(checkpoint)) and Path(checkpoint).is_file():
        record["sha256"] = sha256_file(Path(checkpoint))
    elif source.get("sha256"):
        record["sha256"] = source["sha256"]
    return record


# An absolute POSIX path inside a string (not the path part of a URL): "/a/b/c.png".
_ABS_PATH = re.compile(r"(?<![\w:/.~-])/(?:[^\s/'\"]+/)+([^\s/'\"]*)")


def scrub_paths(obj):
    """``obj`` with every absolute path inside its strings cut to the last component:
    recorded export details (a calibration folder, a checkpoint) name files, not where
    they were on the exporting machine."""
    if isinstance(obj, str):
        return _ABS_PATH.sub(lambda m: m.group(1) or "/", obj)
    if isinstance(obj, dict):
        return {k: scrub_paths(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub_paths(v) for v in obj]
    return obj
