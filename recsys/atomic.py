"""Atomic file and folder writes: a reader (or a crash) sees the old content or the new, never
a torn or mixed one.

A folder is built beside its target, then swapped into place in one step: on Linux one
`renameat2(RENAME_EXCHANGE)` call; elsewhere the old folder is renamed aside and the new one
renamed in, a window in which the path is briefly absent (but never mixed).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from recsys.errors import RecsysError

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write (e.g. by a Parquet writer); when the block
    ends without an error it is flushed to disk and renamed over `path`. On an error (or an
    interrupt) it is removed and `path` is left as it was; a process killed midway leaves at
    most a hidden `.NAME.*.tmp` file beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path`."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))



def check_folder_target(path: str | Path, marker: str) -> None:
    """Refuse, before any work, a target that is a file or a folder this writer did not make.

    A folder is replaced only when it is empty or holds `marker` (e.g. a model's config.json),
    so a mistyped `--out` never deletes someone's files.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise RecsysError(f"{path}: exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).exists():
        raise RecsysError(f"{path}: exists and is not empty, and has no {marker}: refusing to "
                          "replace it")


@contextlib.contextmanager
def atomic_dir(path: str | Path, marker: str | None = None) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block ends without an error, it
    replaces `path` as a whole, in one step. On an error the temporary folder is removed and
    `path` is left as it was. With `marker`, only a folder holding that file (or an empty one)
    may be replaced (see `check_folder_target`)."""
    path = Path(path).absolute()
    if marker is not None:
        check_folder_target(path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        _sync_tree(tmp)
        _swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap, it holds the old folder
    _fsync(path.parent)


def _swap_in(new: Path, path: Path) -> None:
    """Put folder `new` at `path`; afterwards `new` holds the old folder (if there was one)."""
    try:
        os.rename(new, path)  # no folder there yet (or an empty one)
        return
    except OSError:
        if not path.exists():
            raise
    if _exchange(new, path):
        return
    aside = _sibling(path, "old")
    os.rename(path, aside / "old")
    os.rename(new, path)
    os.rename(aside, new)


def _sibling(path: Path, label: str) -> Path:
    """A new empty folder beside `path` (created with the usual permissions, unlike mkdtemp)."""
    while True:
        candidate = path.with_name(f".{path.name}.{label}-{secrets.token_hex(4)}")
        with contextlib.suppress(FileExistsError):
            candidate.mkdir()
            return candidate


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2); False where that is not available."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _sync_tree(root: Path) -> None:
    """Flush every file and folder under `root` to disk before it is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync(Path(folder))


def _fsync(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
