"""Atomic outputs: write next to the destination, then rename over it.

A failure (or Ctrl-C) leaves no partial file and never half-overwrites an existing
artifact, because ``os.replace`` is atomic within one filesystem.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from evit_export.core.errors import UserError


def check_writable(dest: Path, directory: bool = False) -> Path:
    """Fail early, with a one-line error, when ``dest`` cannot be written."""
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not directory and dest.is_dir() and not dest.suffix:
        raise UserError(f"output path {dest} is a directory: give a file name, e.g. {dest}/model.onnx")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {parent}: {e.strerror}; choose a writable --out") from None
    if not os.access(parent, os.W_OK):
        raise UserError(f"output directory {parent} is not writable: choose another --out")
    return dest


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``."""
    dest = check_writable(Path(dest), directory=directory)
    parent = dest.parent
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent))
        shutil.rmtree(tmp)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(name)
        os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        if directory:
            if dest.exists():
                # Swap: old one aside, new one in, old one removed.
                old = parent / f".{dest.name}.old"
                if old.exists():
                    shutil.rmtree(old)
                os.replace(dest, old)
                os.replace(tmp, dest)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, dest)
        else:
            os.replace(tmp, dest)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(dest, text.encode("utf-8"))
