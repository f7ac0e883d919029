"""Atomic output writing: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["OutputError", "atomic_path", "atomic_write_text", "atomic_write_json", "check_writable", "file_sha256",
           "read_yaml_file"]


class OutputError(OSError):
    """An output path cannot be written; the message names the path and the cause."""


def _temp_file_beside(path: Path, suffix: str | None = None) -> Path:
    """An empty temporary file in ``path``'s folder (created if needed); :class:`OutputError` when impossible."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    return Path(tmp)


@cache
def _new_file_mode() -> int:
    """The permissions ``open()`` gives a new file here: ``0o666`` less the process umask (read once: reading it
    means setting it, which is not thread-safe)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _final_mode(path: Path) -> int:
    """The permissions the written file gets: those of the file it replaces, else those of a new file."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return _new_file_mode()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDWR)  # writable: Windows cannot flush a read-only handle
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None):
    """Yield a temporary path in the destination folder; rename it onto ``path`` only if the block succeeds.

    The temporary file lives beside the target so the final ``os.replace`` is atomic on POSIX and Windows; it is
    flushed to disk (``fsync``) before the rename, so after a power cut the name holds the old or the new content,
    never a file whose blocks were not yet written. It gets the permissions of the file it replaces, or of any new
    file (umask), not ``mkstemp``'s private ``0o600``: a report must be as readable by the team as a file written
    directly.
    """
    path = Path(path)
    tmp = _temp_file_beside(path, suffix)
    try:
        yield tmp
        _fsync(tmp)  # the data is on disk before the name points at it (a crash must not leave a hollow file)
        os.chmod(tmp, _final_mode(path))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path) -> Path:
    """Fail fast, before a long run, when ``path`` could not be written (its folder cannot be created or written).

    Raises:
        OutputError: naming ``path`` and the cause.
    """
    path = Path(path)
    _temp_file_beside(path).unlink()  # path itself is not touched
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=indent) + "\n")  # dumps: the C encoder (3x faster for indent=None)
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_yaml_file(path: str | Path, what: str, error: type[Exception] = ValueError) -> Any:
    """Parsed YAML of a user file; ``error`` naming the file (``what``) and the cause when unreadable or invalid."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from None
