"""Atomic output writing: a reader never sees a half-written file, a crash never leaves one."""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import stat
import tempfile
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import yaml

__all__ = ["OutputError", "atomic_path", "atomic_write_text", "atomic_write_json", "check_writable", "file_sha256",
           "hash_file", "read_yaml_file", "remove_temporaries", "read_text_file", "parse_yaml_text", "utf8_problem"]


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


def remove_temporaries(folder: str | Path, name_pattern: str) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left in ``folder`` for targets matching ``name_pattern`` (a
    glob such as ``"checkpoint_epoch=*.pt"``) -- the litter of a writer that was killed (SIGKILL, preemption)
    before it could rename or remove them. Returns the files removed."""
    removed = []
    for stale in Path(folder).glob(f".{name_pattern}.*.tmp"):
        stale.unlink(missing_ok=True)
        removed.append(stale)
    return removed


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


def hash_file(path: str | Path, digest: Any) -> Any:
    """Feed a file's bytes to a ``hashlib`` object in 1 MiB blocks; returns ``digest``."""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    return hash_file(path, hashlib.sha256()).hexdigest()


def _utf8_problem_in(blocks: Any) -> str | None:
    """Where a byte stream (an iterable of blocks) stops being UTF-8: ``"byte 0xff at offset N, line L"``."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    for block in blocks:
        try:
            decoder.decode(block)
        except UnicodeDecodeError as e:
            carried = len(e.object) - len(block)  # bytes of a character split across blocks, decoded with this one
            line = lines + e.object[:e.start].count(b"\n")
            return f"byte 0x{e.object[e.start]:02x} at offset {offset - carried + e.start}, line {line}"
        offset += len(block)
        lines += block.count(b"\n")
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return f"a truncated character at the end (offset {offset})"
    return None


def utf8_problem(path: str | Path) -> str | None:
    """Why ``path`` is not UTF-8 text (``"byte 0xff at offset 1234, line 5"``, offsets from 0 in the file), or
    ``None`` when it is. Reads the file in 1 MiB blocks; an :class:`OSError` propagates.

    Use it to explain a :class:`UnicodeDecodeError` of a text-mode reader, whose ``start`` counts from the reader's
    current chunk, not from the start of the file.
    """
    with open(path, "rb") as f:
        return _utf8_problem_in(iter(lambda: f.read(1 << 20), b""))


def read_text_file(path: str | Path, what: str, error: type[Exception] = ValueError) -> str:
    """The UTF-8 text of a user file (a leading byte-order mark dropped).

    Raises:
        error: ``"cannot read <what> <path>: <cause>"``, or ``"<path>: <what> is not UTF-8 text (byte 0xff at offset N,
            line L); save it as UTF-8"``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise error(f"{path}: {what} is not UTF-8 text ({_utf8_problem_in([data])}); save it as UTF-8") from None


def _yaml_problem(e: Exception) -> str:
    """One line: what the YAML parser objects to and where (``line L, column C``)."""
    mark = getattr(e, "problem_mark", None)
    problem = " ".join(str(getattr(e, "problem", None) or e).replace('in "<unicode string>", ', "").split())
    context = " ".join(str(getattr(e, "context", None) or "").split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{context + ': ' if context else ''}{problem}{where}"


def _check_duplicate_keys(node: Any, source: str, error: type[Exception], trail: tuple[str, ...] = ()) -> None:
    """Walk a composed YAML node tree; a key given twice in one mapping is an ``error`` (YAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        first: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            child = (*trail, "?")
            if isinstance(key_node, yaml.ScalarNode):
                key, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if key in first:
                    under = " > ".join(trail) or "the top level"
                    raise error(f"{source}: key {key_node.value!r} appears twice under {under} (lines {first[key]} "
                                f"and {line}); YAML would silently keep only the last -- merge the two entries")
                first[key] = line
                child = (*trail, key_node.value)
            _check_duplicate_keys(value_node, source, error, child)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, source, error, (*trail, f"[{i}]"))


def parse_yaml_text(text: str, source: str, error: type[Exception] = ValueError) -> Any:
    """Safe-load one YAML document; ``error`` naming ``source`` when it is not valid YAML (one line: the problem,
    its line and column) or gives a key twice in one mapping (which YAML would resolve silently to the last)."""
    try:
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_duplicate_keys(node, source, error)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise error(f"{source}: not valid YAML ({_yaml_problem(e)})") from None


def read_yaml_file(path: str | Path, what: str, error: type[Exception] = ValueError) -> Any:
    """Parsed YAML of a user file; ``error`` naming the file (``what``) and the cause when it is unreadable, not UTF-8
    text, not valid YAML, or gives a key twice in one mapping (see :func:`parse_yaml_text`)."""
    path = Path(path)
    return parse_yaml_text(read_text_file(path, what, error), str(path), error)
