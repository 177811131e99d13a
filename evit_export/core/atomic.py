"""Atomic outputs: write next to the destination, then rename over it.

A failure, Ctrl-C, SIGKILL or full disk leaves no partial file under the final name and
never half-overwrites an existing artifact, because ``os.replace`` is atomic within one
filesystem (folders are swapped with ``renameat2(RENAME_EXCHANGE)`` where the kernel
has it). Temporary names carry the writer's pid, so the next write to the same
destination removes what a killed writer left behind.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from evit_export.core.errors import UserError
from evit_export.core.interrupt import protected, raise_if_cancelled

# Errors that mean "the disk (or the file-size limit) is full", whatever wrote.
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def check_writable(dest: Path, directory: bool = False) -> Path:
    """Fail early, with a one-line error, when ``dest`` cannot be written. Creates
    nothing: a missing parent folder is made when the output is written (``atomic_path``,
    ``staged_outputs``), so a command that fails first leaves no empty folder behind."""
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    if not directory and dest.is_dir():
        raise UserError(f"output path {dest} is an existing folder: give a file path, e.g. {dest}/model"
                        f"{dest.suffix or '.onnx'}, or remove the folder")
    if directory and dest.exists() and not dest.is_dir():
        raise UserError(f"output path {dest} is an existing file, not a folder: give a new folder path "
                        "(the file is left alone)")
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise UserError(f"cannot write {dest}: {above} is a file, not a folder; choose another out=")
            if not os.access(above, os.W_OK | os.X_OK):
                what = "output folder" if above == parent else "folder"
                raise UserError(f"{what} {above} is not writable: choose another out=")
            break
    return dest


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing folders above it; return those created, top first."""
    missing = []
    for above in (folder, *folder.parents):
        if above.exists():
            break
        missing.append(above)
    missing.reverse()
    try:
        for path in missing:
            path.mkdir(exist_ok=True)
    except OSError as e:
        _remove_made(missing)
        if e.errno in _FULL:
            raise _disk_full(e, folder) from None
        raise UserError(f"cannot create output folder {folder}: {e.strerror}; choose a writable out=") from None
    return missing


def _remove_made(folders: list[Path]) -> None:
    """Remove the folders ``_make_parents`` created, deepest first, where still empty."""
    for path in reversed(folders):
        with contextlib.suppress(OSError):
            path.rmdir()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temp_prefix(dest: Path) -> str:
    return f".{dest.name}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(dest: Path) -> list[Path]:
    """Remove ``.NAME.<pid>.*.tmp`` (and a swap's ``.NAME.old``) left beside ``dest`` by
    a writer that no longer runs (killed, or a crashed machine); return what went."""
    dest = Path(dest)
    parent = dest.parent if str(dest.parent) else Path(".")
    prefix = _temp_prefix(dest)
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        name = p.name
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        if rest == "old" or (rest.endswith(".tmp") and rest.split(".")[0].isdigit()
                             and not _pid_alive(int(rest.split(".")[0]))):
            if rest == "old" and not dest.exists():
                continue  # a killed swap left the only copy here: keep it (see _swap_dirs)
            _remove(p)
            removed.append(p)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False when the
    platform or filesystem cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _swap_dirs(tmp: Path, dest: Path) -> None:
    """Publish folder ``tmp`` as ``dest``, replacing an existing ``dest``."""
    if not dest.exists():
        os.replace(tmp, dest)
        return
    if _exchange(tmp, dest):  # one atomic step: dest is the new folder, tmp the old one
        _remove(tmp)  # a symlink that was there goes, never what it pointed to
        return
    # Two steps: a kill between them leaves the old folder at .NAME.old (kept by
    # remove_stale_temps while dest is missing).
    old = dest.parent / f"{_temp_prefix(dest)}old"
    if old.exists():
        shutil.rmtree(old)
    os.replace(dest, old)
    os.replace(tmp, dest)
    _remove(old)


# How writers that are not Python file objects (safetensors' Rust, C++ converters)
# report the same errnos: only their message carries it.
_FULL_TEXT = ("No space left on device", "File too large", "Disk quota exceeded", "os error 28", "os error 27",
              "os error 122")


def is_disk_full(e: BaseException) -> bool:
    """True for the errors a full disk (or RLIMIT_FSIZE) produces, whatever raised them."""
    if isinstance(e, OSError) and e.errno is not None:
        return e.errno in _FULL
    return isinstance(e, Exception) and any(t in str(e) for t in _FULL_TEXT)


def _disk_full(e: BaseException, dest: Path) -> UserError:
    reason = e.strerror if isinstance(e, OSError) and e.strerror else "disk full or file-size limit reached"
    return UserError(f"no space left while writing {dest} ({reason}): free some space or choose another "
                     "out=; nothing was written")


def _cannot_start(error: OSError, dest: Path, parent: Path, made: list) -> UserError:
    """The one-line error for a temporary output that could not be created, after
    removing the folders this write made for it."""
    _remove_made(made)
    if error.errno in _FULL:
        return _disk_full(error, dest)
    return UserError(f"cannot write in {parent}: {error.strerror}; choose a writable out=")


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.
    Folders above ``dest`` that this creates are removed again when the write fails."""
    dest = check_writable(Path(dest), directory=directory)
    parent = dest.parent if str(dest.parent) else Path(".")
    made = _make_parents(parent)
    remove_stale_temps(dest)
    prefix = f"{_temp_prefix(dest)}{os.getpid()}."
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=parent))
            os.rmdir(tmp)  # the writer creates it (some writers refuse an existing folder)
        else:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=parent)
            os.close(fd)
            tmp = Path(name)
    except OSError as e:
        raise _cannot_start(e, dest, parent, made) from None
    try:
        yield tmp
        # A Ctrl-C that the writer swallowed (a converter catching broad exceptions)
        # must not publish the output: core.interrupt keeps the flag.
        raise_if_cancelled()
        if not directory:
            # mkstemp's 0600, or that of a writer that replaced the file (safetensors
            # does): give the output the permissions of any file the user creates.
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, dest)
        else:
            _swap_dirs(tmp, dest)
    except BaseException as e:
        _remove(tmp)
        _remove_made(made)
        if is_disk_full(e):
            raise _disk_full(e, dest) from None
        raise


@contextlib.contextmanager
def staged_outputs(dest: str | os.PathLike) -> Iterator[Path]:
    """A private folder beside ``dest`` in which ``dest`` and the files written with it
    (sidecars, companion files) are written under their final names, and can be used
    (checked) before anyone sees them. When the block ends normally every entry is
    renamed into ``dest``'s folder, the one named like ``dest`` last, with Ctrl-C held
    until all are in place; on an error or Ctrl-C nothing is published and the folder
    goes (one a killed run left is removed by the next write to ``dest``)."""
    dest = Path(dest)
    check_writable(dest, directory=dest.is_dir())
    parent = dest.parent if str(dest.parent) else Path(".")
    made = _make_parents(parent)
    remove_stale_temps(dest)
    stage = parent / f"{_temp_prefix(dest)}{os.getpid()}.stage.tmp"
    try:
        _remove(stage)
        stage.mkdir()
    except OSError as e:
        raise _cannot_start(e, dest, parent, made) from None
    try:
        yield stage
        raise_if_cancelled()
        with protected():
            entries = sorted(stage.iterdir(), key=lambda p: (p.name == dest.name, p.name))
            for entry in entries:
                target = parent / entry.name
                if entry.is_dir() and not entry.is_symlink():
                    _swap_dirs(entry, target)
                else:
                    os.replace(entry, target)
    except BaseException as e:
        _remove(stage)
        _remove_made(made)
        if is_disk_full(e):
            raise _disk_full(e, dest) from None
        raise
    _remove(stage)


@contextlib.contextmanager
def scratch_dir(prefix: str = "evit-") -> Iterator[Path]:
    """``tempfile.TemporaryDirectory`` whose name carries this process's pid
    (``PREFIX<pid>-XXXX`` in the temp folder): entering it first removes the scratch
    folders of the same prefix whose writers are dead (SIGKILL, a crash), so killed
    runs do not pile up in /tmp."""
    root = Path(tempfile.gettempdir())
    with contextlib.suppress(OSError):
        for p in root.glob(f"{prefix}*"):
            pid = p.name[len(prefix):].split("-", 1)[0]
            if p.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(p, ignore_errors=True)
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))
    except OSError as e:
        if e.errno in _FULL:
            raise _disk_full(e, root) from None
        raise UserError(f"cannot create a scratch folder in {root}: {e.strerror}; set TMPDIR to a writable "
                        "folder") from None
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(dest, text.encode("utf-8"))
