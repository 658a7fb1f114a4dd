"""A trial's checkpoints in Ray's storage: they land whole, and a restart takes the newest valid one.

Ray copies a reported checkpoint folder into `<trial>/checkpoint_NNNNNN` file by file (pyarrow
`copy_files`), straight under its final name, so a kill during the copy leaves a folder that holds part of
the files, or part of one. Here `meta.json`, which carries the checksum and without which no folder counts
as a checkpoint (`checkpoint.list_checkpoints`), is kept out of what Ray copies and committed only once
Ray's copy has returned, in one atomic step (a rename on a filesystem, one object PUT on an object store),
before the report reaches the driver. So Tune never registers, and a restart never takes, a checkpoint
whose copy was cut short.

A restart scans the trial's folder in storage (and the checkpoint Tune offers, which may live in an older
trial folder) newest step first; damaged or uncommitted folders are moved aside as
`checkpoint_NNNNNN.corrupt`, never deleted, and named in one WARNING. When nothing valid is left the trial
starts over from step 0: training is deterministic, so it ends as an uninterrupted run would.
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
from ray import tune

from t2s_ray.checkpoint import META_FILE, CheckpointDamaged, is_checkpoint_name, parse_meta
from t2s_ray.io import write_text_atomic

log = logging.getLogger(__name__)

DAMAGED_SUFFIX = ".corrupt"


def _is_local(fs: pyarrow.fs.FileSystem) -> bool:
    return isinstance(fs, pyarrow.fs.LocalFileSystem)


def _write_text(fs: pyarrow.fs.FileSystem, path: str, text: str) -> None:
    """Write one small file so that it appears whole or not at all."""
    if _is_local(fs):
        write_text_atomic(path, text)
        return
    with fs.open_output_stream(path) as out:  # an object store makes the object visible only once complete
        out.write(text.encode())


def _exists(fs: pyarrow.fs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound


@contextlib.contextmanager
def _meta_committed_after_copy(storage, meta_text: str) -> Iterator[None]:
    """Inside the block, Ray's copy of the reported checkpoint is followed by the commit of its `meta.json`,
    before the report goes to the driver.

    Wraps this trial's `StorageContext.persist_current_checkpoint` (Ray 2.60: `ray.train._internal.storage`,
    called by `tune.report` in the trial's process between the copy and the report) on this one instance.
    """
    copy = storage.persist_current_checkpoint

    def copy_then_commit(checkpoint):
        persisted = copy(checkpoint)
        _write_text(persisted.filesystem, posixpath.join(persisted.path, META_FILE), meta_text)
        return persisted

    storage.persist_current_checkpoint = copy_then_commit
    try:
        yield
    finally:
        del storage.persist_current_checkpoint  # back to the class's method


def report_with_checkpoint(metrics: dict[str, Any], folder: Path) -> None:
    """`tune.report(metrics)` with the checkpoint folder `folder` (holding its `meta.json`), landed whole.

    `meta.json` leaves `folder` before Ray copies it and is written into the persisted folder after the copy.
    A folder already at the destination (Ray numbers checkpoints from what the driver last recorded, which a
    driver kill can roll back) holds an older step than the state being saved, which was restored from the
    newest valid checkpoint: it is removed first, so that nothing is copied over a complete checkpoint.
    """
    meta_path = folder / META_FILE
    meta_text = meta_path.read_text()
    meta_path.unlink()
    storage = tune.get_context().get_storage()
    fs = storage.storage_filesystem
    destination = posixpath.join(storage.trial_fs_path,
                                 storage._make_checkpoint_dir_name(storage.current_checkpoint_index + 1))
    if _exists(fs, destination):
        log.info("replacing %s, a superseded checkpoint of an earlier attempt", destination)
        fs.delete_dir(destination)
    with _meta_committed_after_copy(storage, meta_text):
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))


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
    return [_inspect(fs, i.path) for i in infos
            if i.type == pyarrow.fs.FileType.Directory and is_checkpoint_name(posixpath.basename(i.path))
            and fs.get_file_info(pyarrow.fs.FileSelector(i.path))]  # an empty folder holds nothing to set aside


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


def restore_newest(load: Callable[[Path], None], offered: tune.Checkpoint | None, what: str) -> str | None:
    """Load (`load(folder)`) the newest valid checkpoint of this trial; return its path, or None to start over.
    See `restore_newest_in`; the trial's folder comes from Tune's storage context."""
    storage = tune.get_context().get_storage()
    return restore_newest_in(storage.storage_filesystem, storage.trial_fs_path, load, offered, what)


def restore_newest_in(fs: pyarrow.fs.FileSystem, root: str, load: Callable[[Path], None],
                      offered: tune.Checkpoint | None, what: str) -> str | None:
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
        then = (f"resuming from {loaded.path} (step {loaded.step})" if loaded
                else "no valid checkpoint is left: starting over from step 0 (training is deterministic, so it "
                     "ends as an uninterrupted run would)")
        log.warning("%s: %d damaged checkpoint(s) moved aside, %s: %s", what, len(damaged), then, "; ".join(moved))
    return loaded.path if loaded else None
