"""sha256 of a file, read in blocks (checkpoints and models can be hundreds of MB), by
hashlib's own file_digest (Python 3.11+)."""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
