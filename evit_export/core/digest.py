"""sha256 of a file, read in blocks (checkpoints and models can be hundreds of MB).
hashlib.file_digest does this from Python 3.11; the project supports 3.10."""
from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
