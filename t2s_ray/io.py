"""Atomic writes: a reader sees the old file (or folder) or the new one, never half of one.

`atomic_path` is for files: write to the temp path it yields, in the same folder as the final one
(so `os.replace` is atomic); on success the temp replaces the final path, on any exception it is
removed and the old file is left intact. The temp is a plain new file, so it gets the process
umask's mode (0o644 under umask 022), unlike `tempfile.mkstemp`'s 0o600.

`atomic_dir` is the same for a folder (checkpoints): its files are fsynced before it is renamed
into place, and an existing folder of that name is replaced whole.

`content_hash` names what a cache holds: files built from the same fields get the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "atomic_path", "content_hash", "copy_files_whole", "write_text_atomic"]


def _sibling(final: Path, suffix: str) -> Path:
    """A hidden, unique name next to `final` (same folder, so a rename is atomic)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}{suffix}")


@contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A unique temp path next to `final` that replaces it on success and is removed on failure.

    `suffix` ends the temp name, for writers that pick a format by extension (e.g. ".png").
    """
    final = Path(final)
    tmp = _sibling(final, suffix)
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (newlines written as given); return the path."""
    return write_bytes_atomic(path, text.encode(encoding))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; return the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def copy_files_whole(source: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Copy `source` (a file, or every file under a folder) to `dest` (the same layout under it), each file
    written beside its destination and renamed over it: a reader, or a copy killed part-way, finds every file old
    or new, never cut. Returns the number of files copied."""
    source, dest = Path(source), Path(dest)
    pairs = (
        [(source, dest)]
        if source.is_file()
        else [(Path(d) / f, dest / Path(d).relative_to(source) / f) for d, _, files in os.walk(source) for f in files]
    )
    for src, dst in pairs:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst) as tmp:
            shutil.copyfile(src, tmp)
    return len(pairs)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(folder, name), "rb") as f:
                os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # make the rename itself durable
    finally:
        os.close(fd)


@contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A new empty temp folder next to `final`, fsynced and renamed to `final` on success, removed on failure.

    An existing `final` is replaced whole (moved aside, then deleted), never merged into.
    """
    final = Path(final)
    tmp = _sibling(final, ".tmp")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            old = _sibling(final, ".old")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there after a failure


def content_hash(fields: dict, digits: int = 16) -> str:
    """`digits` hex digits of a sha256 over `fields` as JSON with sorted keys (values JSON cannot hold as their
    str): the same for equal fields in any order."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:digits]
