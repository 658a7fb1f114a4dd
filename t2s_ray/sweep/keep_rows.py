"""A resumed trial keeps the rows it reported before the driver died.

Tune's loggers write a trial's `result.json` and `progress.csv` in the driver's staging folder and copy that
folder over the trial's folder in storage. A new driver (`t2s-ray resume`) starts with an empty staging folder
and brings the two files back from storage only when its experiment state knew of a checkpoint of the trial;
a driver killed after a checkpoint landed but before its experiment state was saved leaves a state without it,
and the resumed run's first copy then replaced the earlier rows with its own. The trial itself resumes from
the newest valid checkpoint in storage either way (`persist.restore_newest`), so its earlier rows are part of
its history: `KeepReportedRows` brings them back first. Imports Ray: loaded when the sweep builds its Tuner.
"""

from __future__ import annotations

import logging
import posixpath
from pathlib import Path

import pyarrow.fs
from ray.tune import Callback
from ray.tune.result import EXPR_PROGRESS_FILE, EXPR_RESULT_FILE

log = logging.getLogger(__name__)


class KeepReportedRows(Callback):
    """Before Tune's loggers open a starting trial's `result.json` and `progress.csv` for appending, copy each from
    the trial's folder in storage into the driver's staging folder if storage has it and the staging folder does
    not (a fresh trial has neither; a trial restarted within a run has both)."""

    def on_trial_start(self, iteration, trials, trial, **info):
        for name in (EXPR_RESULT_FILE, EXPR_PROGRESS_FILE):
            local = Path(trial.local_path, name)
            if local.exists():
                continue
            remote = posixpath.join(trial.storage.trial_fs_path, name)
            fs = trial.storage.storage_filesystem
            try:
                if fs.get_file_info(remote).type != pyarrow.fs.FileType.File:
                    continue
                local.parent.mkdir(parents=True, exist_ok=True)
                pyarrow.fs.copy_files(remote, str(local), source_filesystem=fs)
            except OSError as e:  # the trial runs on: only the rows before the resume are at stake
                log.warning("%s of %s not brought back from storage (%s): its earlier rows are lost", name, trial, e)
