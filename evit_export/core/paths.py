"""Where the tool keeps its cache, and what it ships never carries: nothing it writes
for others (records, reports, manifests) holds a path of the machine that made it, so
messages that name files are shortened before they are written."""
from __future__ import annotations

import os
import re
from pathlib import Path

CACHE_ENV = "EVIT_EXPORT_CACHE"


def cache_dir() -> Path:
    """The one cache folder (weights, device profiles, graph features, npm packages):
    ``$EVIT_EXPORT_CACHE``, else ``$XDG_CACHE_HOME/evit-export``, else ``~/.cache/evit-export``."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "evit-export")
    return Path(root)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.+@~-]+/)+([\w.+@~-]+)")


def strip_paths(text: str | None, base: Path | None = None) -> str | None:
    """``text`` with paths of this machine shortened: under ``base`` (the sweep folder)
    to their relative name, anything else absolute to its last component."""
    if not text:
        return text
    if base is not None:
        root = str(Path(base).resolve())
        text = text.replace(root + os.sep, "").replace(root, ".")
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1), text)
