"""Nothing the tool ships (records, reports, manifests) carries a path of the machine
that made it: messages that name files are shortened before they are written."""
from __future__ import annotations

import os
import re
from pathlib import Path

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
