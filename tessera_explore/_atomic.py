"""Atomic file writes: a temporary file beside the target, then one rename.

A reader (or a crash) sees the old file or the new one, never half of one.  The
temporary file is hidden (``.name.XXXX.tmp``) and removed when writing fails.
:func:`sha256_file` is the checksum that downloads (tiles, weights) are verified with.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["atomic_target", "write_bytes", "write_json", "sha256_file"]


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[str]:
    """Yield a temporary path in ``path``'s folder; when the block ends without an
    error it replaces ``path`` (after an fsync when asked), else it is removed."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        _chmod_like_new(tmp, path)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _chmod_like_new(tmp: str, path: str) -> None:
    """Give the new file the mode an ordinary ``open(path, "w")`` would (mkstemp makes 0600)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        mode = 0o666 & ~mask
    os.chmod(tmp, mode)


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = True) -> str:
    """Write ``data`` to ``path`` atomically; returns the absolute path."""
    with atomic_target(path, fsync=fsync) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return os.path.abspath(os.fspath(path))


def write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 1, fsync: bool = True) -> str:
    """Write ``obj`` as JSON (UTF-8) to ``path`` atomically; returns the absolute path."""
    return write_bytes(path, json.dumps(obj, indent=indent).encode("utf-8"), fsync=fsync)


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of a file, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
