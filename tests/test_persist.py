"""A trial's checkpoints in storage: `meta.json` lands after Ray's copy, and a restart takes the newest valid one,
sets damaged ones aside and starts over when none is left (no Ray started: Tune's storage is passed in)."""

import logging
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs
import pytest
import torch

from t2s_ray import checkpoint_store, persist
from t2s_ray.checkpoint import META_FILE, STATE_FILE, CheckpointError, list_checkpoints, write_checkpoint


def _write(root: Path, index: int, step: int) -> Path:
    return write_checkpoint(root / f"checkpoint_{index:06d}", {"w": torch.full((4,), float(step))}, {"step": step})


def _loader(loaded: list):
    def load(folder: Path) -> None:
        from t2s_ray.checkpoint import read_checkpoint

        state, meta = read_checkpoint(folder)
        loaded.append(meta["step"])

    return load


def _restore(root: Path, offered=None):
    loaded: list[int] = []
    path = checkpoint_store.restore_newest_in(
        pyarrow.fs.LocalFileSystem(), str(root), _loader(loaded), offered, "baseline s0"
    )
    return path, loaded


def test_the_newest_valid_checkpoint_is_loaded_and_nothing_is_said(tmp_path, caplog):
    for i in range(3):
        _write(tmp_path, i, 5 * (i + 1))
    with caplog.at_level(logging.WARNING):
        path, loaded = _restore(tmp_path)
    assert path == str(tmp_path / "checkpoint_000002") and loaded == [15]
    assert caplog.records == []


def test_a_cut_copy_is_set_aside_and_the_one_before_it_is_loaded(tmp_path, caplog):
    _write(tmp_path, 0, 5)
    _write(tmp_path, 1, 10)
    cut = _write(tmp_path, 2, 15)
    data = (cut / STATE_FILE).read_bytes()
    (cut / STATE_FILE).write_bytes(data[: len(data) // 2])  # the copy of state.pt cut short, meta.json whole
    uncommitted = tmp_path / "checkpoint_000003"
    uncommitted.mkdir()
    (uncommitted / STATE_FILE).write_bytes(data[:100])  # Ray's copy cut before meta.json was committed
    with caplog.at_level(logging.WARNING):
        path, loaded = _restore(tmp_path)
    assert path == str(tmp_path / "checkpoint_000001") and loaded == [10]
    assert (tmp_path / "checkpoint_000002.corrupt" / STATE_FILE).read_bytes() == data[: len(data) // 2]
    assert (tmp_path / "checkpoint_000003.corrupt" / STATE_FILE).exists()
    assert not cut.exists() and not uncommitted.exists()
    assert [d.name for d in list_checkpoints(tmp_path)] == ["checkpoint_000000", "checkpoint_000001"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "baseline s0: 2 damaged checkpoint(s) moved aside, resuming from" in warning
    assert "checksum" in warning and "no meta.json: its copy never finished" in warning


def test_nothing_valid_left_means_start_over_with_one_warning_naming_each(tmp_path, caplog):
    only = tmp_path / "checkpoint_000000"
    only.mkdir()
    (only / STATE_FILE).write_bytes(b"77.6 MB of 367")  # the case: the only checkpoint, cut mid-copy
    (only / META_FILE).write_text('{"step": 5, "format_vers')  # a meta.json cut short too
    with caplog.at_level(logging.WARNING):
        path, loaded = _restore(tmp_path)
    assert path is None and loaded == []
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "starting over from step 0" in warning and str(only) in warning and "checkpoint_000000.corrupt" in warning
    assert (tmp_path / "checkpoint_000000.corrupt" / STATE_FILE).read_bytes() == b"77.6 MB of 367"
    _restore_again, _ = _restore(tmp_path)  # a second restart finds nothing more to set aside
    assert _restore_again is None and (tmp_path / "checkpoint_000000.corrupt").exists()
    assert not (tmp_path / "checkpoint_000000.corrupt2").exists()


def test_a_name_already_set_aside_is_numbered_and_an_empty_folder_is_no_candidate(tmp_path):
    (tmp_path / "checkpoint_000000.corrupt").mkdir()
    (tmp_path / "checkpoint_000000").mkdir()
    (tmp_path / "checkpoint_000000" / STATE_FILE).write_bytes(b"x")
    (tmp_path / "checkpoint_000001").mkdir()  # Ray created the folder, then the kill: nothing in it
    path, _ = _restore(tmp_path)
    assert path is None
    assert (tmp_path / "checkpoint_000000.corrupt2" / STATE_FILE).exists()
    assert (tmp_path / "checkpoint_000001").is_dir()


def test_tunes_offered_checkpoint_counts_and_if_damaged_its_path_stays_for_ray_to_delete(tmp_path):
    _write(tmp_path, 0, 5)
    offered = _write(tmp_path, 1, 10)
    (offered / STATE_FILE).write_bytes(b"bit rot")
    ckpt = SimpleNamespace(path=str(offered), filesystem=pyarrow.fs.LocalFileSystem())
    path, loaded = _restore(tmp_path, offered=ckpt)
    assert loaded == [5] and path.endswith("checkpoint_000000")
    assert (tmp_path / "checkpoint_000001.corrupt" / STATE_FILE).read_bytes() == b"bit rot"
    assert offered.is_dir() and not any(offered.iterdir())  # Ray's num_to_keep deletes it later by this path


def test_an_offered_checkpoint_in_another_trial_folder_is_loaded_when_newest(tmp_path):
    _write(tmp_path / "new_trial", 0, 5)
    older_folder = _write(tmp_path / "old_trial", 3, 20)  # restart_errored: Ray starts a new trial folder
    ckpt = SimpleNamespace(path=str(older_folder), filesystem=pyarrow.fs.LocalFileSystem())
    path, loaded = _restore(tmp_path / "new_trial", offered=ckpt)
    assert loaded == [20] and path == str(older_folder)


def test_a_checkpoint_of_another_config_is_an_error_not_damage(tmp_path):
    _write(tmp_path, 0, 5)

    def load(folder):
        raise CheckpointError("checkpoint was written with a different config")

    with pytest.raises(CheckpointError, match="different config"):
        checkpoint_store.restore_newest_in(pyarrow.fs.LocalFileSystem(), str(tmp_path), load, None, "baseline s0")
    assert (tmp_path / "checkpoint_000000").is_dir() and not (tmp_path / "checkpoint_000000.corrupt").exists()


def test_meta_json_is_committed_only_after_rays_copy_returns(tmp_path):
    """What Ray copies holds no meta.json; it is written into the persisted folder once the copy is done,
    before the report goes on (Ray's `persist_current_checkpoint` is wrapped for the one call)."""
    src = _write(tmp_path / "staging", 0, 5)
    meta_text = (src / META_FILE).read_text()
    (src / META_FILE).unlink()
    dest = tmp_path / "trial" / "checkpoint_000000"
    seen = {}

    class Storage:  # the part of Ray's StorageContext used here
        def persist_current_checkpoint(self, checkpoint):
            seen["meta copied"] = (Path(checkpoint.path) / META_FILE).exists()
            dest.mkdir(parents=True)
            (dest / STATE_FILE).write_bytes((Path(checkpoint.path) / STATE_FILE).read_bytes())
            seen["meta at the destination during the copy"] = (dest / META_FILE).exists()
            return SimpleNamespace(path=str(dest), filesystem=pyarrow.fs.LocalFileSystem())

    storage = Storage()
    with persist._meta_committed_after_copy(storage, meta_text):
        storage.persist_current_checkpoint(SimpleNamespace(path=str(src)))
    assert seen == {"meta copied": False, "meta at the destination during the copy": False}
    assert (dest / META_FILE).read_text() == meta_text
    assert [d.name for d in list_checkpoints(dest.parent)] == ["checkpoint_000000"]
    assert "persist_current_checkpoint" not in vars(storage)  # the class's method is back
