"""A trial's checkpoint folder in storage, read back after a crash: the newest valid checkpoint, damaged ones
set aside. No Ray here (`persist.py` wires it to Tune; `AblationRunner` uses it on a plain folder).

Damaged or uncommitted folders (no `meta.json`, an unreadable one, a missing `state.pt`, a checksum mismatch)
are moved aside as `checkpoint_NNNNNN.corrupt`, never deleted, and named in one WARNING. When nothing valid
is left the caller starts over from step 0.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.fs

from t2s_ray.checkpoint import META_FILE, CheckpointDamaged, is_checkpoint_name, parse_meta

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".corrupt"


def _is_local(fs: pyarrow.fs.FileSystem) -> bool:
    return isinstance(fs, pyarrow.fs.LocalFileSystem)


def _exists(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


@dataclass
class _Found:
    fs: pyarrow.fs.FileSystem
    path: str
    step: int | None  # None: damaged or uncommitted
    problem: str = ""
    registered: bool = False  # the checkpoint Tune offered: the driver may delete its path later


def _inspect(fs: pyarrow.fs.FileSystem, path: str) -> _Found:
    try:
        with fs.open_input_stream(posixpath.join(path, META_FILE)) as f:
            text = f.read().decode()
    except (FileNotFoundError, OSError):
        return _Found(fs, path, None, f"no {META_FILE}: its copy never finished")
    try:
        return _Found(fs, path, int(parse_meta(text, path).get("step", -1)))
    except (CheckpointDamaged, ValueError, TypeError) as e:
        return _Found(fs, path, None, str(e))


def _found_in(fs: pyarrow.fs.FileSystem, root: str) -> list[_Found]:
    if not _exists(fs, root):
        return []
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return [
        _inspect(fs, i.path)
        for i in infos
        if i.type == pyarrow.fs.FileType.Directory
        and is_checkpoint_name(posixpath.basename(i.path))
        and fs.get_file_info(pyarrow.fs.FileSelector(i.path))
    ]  # an empty folder holds nothing to set aside


@contextlib.contextmanager
def _local_copy(found: _Found) -> Iterator[Path]:
    if _is_local(found.fs):
        yield Path(found.path)
        return
    with tempfile.TemporaryDirectory(prefix="t2s-restore-") as tmp:
        pyarrow.fs.copy_files(found.path, tmp, source_filesystem=found.fs)
        yield Path(tmp)


def _set_aside(found: _Found, root: str) -> str:
    """Move a damaged checkpoint of this trial's folder to `<name>.corrupt` (numbered if taken); return where."""
    if posixpath.dirname(found.path.rstrip("/")) != root.rstrip("/"):
        return found.path + " (another trial folder's, left in place)"
    target, n = found.path + DAMAGED_SUFFIX, 1
    while _exists(found.fs, target):
        n += 1
        target = f"{found.path}{DAMAGED_SUFFIX}{n}"
    if _is_local(found.fs):
        found.fs.move(found.path, target)  # a rename
    else:  # object stores have no folder rename: copy, then delete
        pyarrow.fs.copy_files(found.path, target, source_filesystem=found.fs, destination_filesystem=found.fs)
        found.fs.delete_dir(found.path)
    if found.registered:  # Ray deletes the paths it recorded when they rotate out, and fails on a missing one
        found.fs.create_dir(found.path)
    return target


def restore_newest_in(
    fs: pyarrow.fs.FileSystem, root: str, load: Callable[[Path], None], offered: Any, what: str
) -> str | None:
    """Load the newest valid checkpoint of the trial folder `root` on `fs`; return its path, or None.

    Candidates: every `checkpoint_<n>` in `root` and the checkpoint Tune offers (`offered`).
    A candidate is damaged when its `meta.json` is missing or unreadable or `load` raises `CheckpointDamaged`
    (a missing file, a checksum mismatch); damaged ones are moved aside and named in one WARNING. Any other
    error of `load` (another config, another format) propagates: that is not damage. `what` names the trial.
    """
    found = _found_in(fs, root)
    if offered is not None:
        mine = [f for f in found if f.path.rstrip("/") == offered.path.rstrip("/")]
        if not mine:
            mine = [_inspect(offered.filesystem, offered.path)]
            found += mine
        mine[0].registered = True
    damaged = [f for f in found if f.step is None]
    loaded = None
    for f in sorted((f for f in found if f.step is not None), key=lambda f: f.step, reverse=True):
        try:
            with _local_copy(f) as folder:
                load(folder)
            loaded = f
            break
        except CheckpointDamaged as e:
            f.problem = str(e)
            damaged.append(f)
    if damaged:
        moved = [f"{f.path}: {f.problem} -> {_set_aside(f, root)}" for f in damaged]
        then = (
            f"resuming from {loaded.path} (step {loaded.step})"
            if loaded
            else "no valid checkpoint is left: starting over from step 0 (training is deterministic, so it "
            "ends as an uninterrupted run would)"
        )
        log.warning("%s: %d damaged checkpoint(s) moved aside, %s: %s", what, len(damaged), then, "; ".join(moved))
    return loaded.path if loaded else None
