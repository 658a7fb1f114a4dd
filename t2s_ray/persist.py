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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune

from t2s_ray.checkpoint import META_FILE
from t2s_ray.checkpoint_store import _exists, _is_local, restore_newest_in
from t2s_ray.io import write_text_atomic

log = logging.getLogger(__name__)


def _write_text(fs: pyarrow.fs.FileSystem, path: str, text: str) -> None:
    """Write one small file so that it appears whole or not at all."""
    if _is_local(fs):
        write_text_atomic(path, text)
        return
    with fs.open_output_stream(path) as out:  # an object store makes the object visible only once complete
        out.write(text.encode())


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
    destination = posixpath.join(
        storage.trial_fs_path, storage._make_checkpoint_dir_name(storage.current_checkpoint_index + 1)
    )
    if _exists(fs, destination):
        log.info("replacing %s, a superseded checkpoint of an earlier attempt", destination)
        fs.delete_dir(destination)
    with _meta_committed_after_copy(storage, meta_text):
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(folder)))


def restore_newest(load: Callable[[Path], None], offered: tune.Checkpoint | None, what: str) -> str | None:
    """Load (`load(folder)`) the newest valid checkpoint of this trial; return its path, or None to start over.
    See `restore_newest_in`; the trial's folder comes from Tune's storage context."""
    storage = tune.get_context().get_storage()
    return restore_newest_in(storage.storage_filesystem, storage.trial_fs_path, load, offered, what)


def trial_storage_dir() -> Path | None:
    """This trial's persistent folder when storage is a local/shared filesystem, else None."""
    storage = tune.get_context().get_storage()
    if not isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return None
    return Path(storage.trial_fs_path)


def artifact_dir() -> Path:
    """Where the trial writes its own files (samples, memory CSV) so that they reach the experiment's storage.

    Local storage: the trial's staging folder, which the driver copies into the experiment folder. A URI: the
    trial's working directory on its node, which Ray uploads into the trial's folder at each checkpoint and at
    the end (`SyncConfig(sync_artifacts=True)`, see `sweep.build_tuner`) from any node; the driver's copy
    would only carry files written on the driver's node.
    """
    storage = tune.get_context().get_storage()
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem):
        return Path(tune.get_context().get_trial_dir())
    return Path(storage.trial_working_directory)
