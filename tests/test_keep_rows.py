"""A resumed trial keeps the rows it reported before its driver died (`t2s_ray.sweep.keep_rows`)."""

from types import SimpleNamespace

import pyarrow.fs

from t2s_ray.sweep.keep_rows import KeepReportedRows


def _trial(staging, stored):
    storage = SimpleNamespace(trial_fs_path=str(stored), storage_filesystem=pyarrow.fs.LocalFileSystem())
    return SimpleNamespace(local_path=str(staging), storage=storage)


def test_the_rows_in_storage_come_back_before_the_loggers_append(tmp_path):
    stored, staging = tmp_path / "storage" / "trial", tmp_path / "staging" / "trial"
    stored.mkdir(parents=True)
    (stored / "result.json").write_text('{"step": 1}\n{"step": 5}\n')
    (stored / "progress.csv").write_text("step\n1\n5\n")
    KeepReportedRows().on_trial_start(0, [], _trial(staging, stored))
    assert (staging / "result.json").read_text() == '{"step": 1}\n{"step": 5}\n'
    assert (staging / "progress.csv").read_text() == "step\n1\n5\n"


def test_what_the_driver_already_has_is_left_alone(tmp_path):
    stored, staging = tmp_path / "storage", tmp_path / "staging"
    stored.mkdir()
    staging.mkdir()
    (stored / "result.json").write_text('{"step": 1}\n')
    (staging / "result.json").write_text('{"step": 1}\n{"step": 5}\n')  # a retry within the run: the newer copy
    KeepReportedRows().on_trial_start(0, [], _trial(staging, stored))
    assert (staging / "result.json").read_text() == '{"step": 1}\n{"step": 5}\n'
    assert not (staging / "progress.csv").exists()  # nothing in storage: nothing made up


def test_a_fresh_trial_gets_nothing(tmp_path):
    staging = tmp_path / "staging"
    KeepReportedRows().on_trial_start(0, [], _trial(staging, tmp_path / "nowhere"))
    assert not staging.exists()
