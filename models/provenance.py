"""Where an artifact's weights came from, recorded without this machine's paths.

Every artifact carries ``spec.source`` so that it can be checked again later with no
flags. A checkpoint file is recorded by its file name and sha256 only (artifacts and
packages ship to other machines); where it lay is remembered in a small index in the
tool's cache on this machine (sha256 -> path), never in anything that ships. Finding
the weights again tries, in order: the index, the folders the caller names (beside
the artifact), the working folder, and any file in the cache with that sha256. A URL
(or the official pretrained weights) is recorded as the URL: the download cache
serves it offline.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.paths import cache_dir
from evit_export.core.atomic import write_text_atomic
from evit_export.models.checkpoint import _sha256, is_url

INDEX_NAME = "weights-index.json"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")


def _index_path() -> Path:
    return cache_dir() / INDEX_NAME


def _read_index() -> dict[str, str]:
    try:
        data = json.loads(_index_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) \
        else {}


def _remember(sha256: str, path: Path) -> None:
    """Best effort: an unwritable cache only costs the look-up later."""

    index = _read_index()
    if index.get(sha256) == str(path):
        return
    index[sha256] = str(path)
    try:
        _index_path().parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(_index_path(), json.dumps(index, indent=1, sort_keys=True))
    except (OSError, UserError):
        pass


def describe_source(checkpoint, url: str | None = None) -> dict:
    """``spec.source`` for weights read from ``checkpoint`` (a path or URL); ``url``: where
    a downloaded file came from (the official pretrained weights)."""

    if is_url(checkpoint):
        return {"checkpoint": str(checkpoint)}
    path = Path(checkpoint).resolve()
    sha = _sha256(path)
    _remember(sha, path)
    source = {"checkpoint": path.name, "sha256": sha}
    if url:
        source["url"] = url
    return source


def _matches(path: Path, sha256: str | None) -> bool:
    return path.is_file() and (sha256 is None or _sha256(path) == sha256.lower())


def _in_cache(sha256: str) -> Path | None:
    root = cache_dir()
    if not root.is_dir():
        return None
    for path in sorted(root.rglob("*")):
        if path.suffix in CHECKPOINT_SUFFIXES and _matches(path, sha256):
            return path
    return None


def find_checkpoint(source: dict, near: tuple[os.PathLike, ...] = ()) -> str | Path:
    """The checkpoint ``source`` (a ``spec.source`` with a "checkpoint") names, found on
    this machine by sha256; a URL comes back as is. UserError when it is nowhere."""

    location, sha = str(source["checkpoint"]), source.get("sha256")
    if is_url(location):
        return location
    name = Path(location).name
    candidates = [Path(p) for p in (_read_index().get(sha, ""),) if p and sha]
    if Path(location).is_absolute():  # artifacts exported before names replaced paths
        candidates.append(Path(location))
    candidates += [Path(folder) / name for folder in near] + [Path.cwd() / name]
    for path in candidates:
        if _matches(path, sha):
            return path
    found = _in_cache(sha) if sha else None
    if found is not None:
        return found
    if source.get("url"):
        return source["url"]
    hint = f" (sha256 {sha[:12]}…)" if sha else ""
    raise UserError(f"the reference weights {name}{hint} are not on this machine nor in the cache: pass "
                    "checkpoint=PATH")
