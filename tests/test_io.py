"""Atomic writes: a failed write leaves the old file or folder intact and no temp behind; modes follow the umask."""

import os
import stat

import pytest

from t2s_ray.io import atomic_dir, atomic_path, write_text_atomic


class Boom(Exception):
    pass


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_path_replaces_the_file_on_success(tmp_path, umask_022):
    final = tmp_path / "table.csv"
    final.write_text("old")
    with atomic_path(final, suffix=".csv") as tmp:
        assert tmp.parent == tmp_path and tmp != final and tmp.name.endswith(".csv")
        tmp.write_text("new")
        assert final.read_text() == "old"  # nothing visible until the block ends
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]
    assert mode(final) == 0o644


def test_atomic_path_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    final = tmp_path / "table.csv"
    final.write_text("old")
    with pytest.raises(Boom):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise Boom
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_atomic_path_failure_before_writing_creates_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_path(tmp_path / "new.json"):
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_temp_names_are_unique(tmp_path):
    with atomic_path(tmp_path / "a") as one, atomic_path(tmp_path / "a") as two:
        assert one != two
        one.write_text("1")
        two.write_text("2")
    assert (tmp_path / "a").read_text() == "1"  # the last write to finish (the outer block) wins
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_file_mode_follows_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        path = write_text_atomic(tmp_path / "report.txt", "héllo\r\nworld\n")
    finally:
        os.umask(old)
    assert mode(path) == expected
    assert path.read_bytes() == "héllo\r\nworld\n".encode()  # utf-8, newlines as given


def test_atomic_dir_renames_into_place_and_replaces_an_old_dir_whole(tmp_path, umask_022):
    final = tmp_path / "checkpoint_000010"
    final.mkdir()
    (final / "stale.pt").write_text("old")
    with atomic_dir(final) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "sub").mkdir()
        (tmp / "sub" / "state.pt").write_text("new")
        assert (final / "stale.pt").exists()  # the old folder stays until the block ends
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*")) == ["sub", "sub/state.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000010"]
    assert mode(final) == 0o755 and mode(final / "sub" / "state.pt") == 0o644


def test_atomic_dir_failure_keeps_the_old_dir_and_leaves_no_temp(tmp_path):
    final = tmp_path / "checkpoint_000010"
    final.mkdir()
    (final / "state.pt").write_text("old")
    with pytest.raises(Boom):
        with atomic_dir(final) as tmp:
            (tmp / "state.pt").write_text("half")
            raise Boom
    assert (final / "state.pt").read_text() == "old" and len(list(final.iterdir())) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000010"]


def test_atomic_dir_failure_without_an_old_dir_creates_nothing(tmp_path):
    with pytest.raises(Boom):
        with atomic_dir(tmp_path / "checkpoint_000001") as tmp:
            (tmp / "state.pt").write_text("half")
            raise Boom
    assert list(tmp_path.iterdir()) == []


def test_copy_files_whole_writes_each_file_beside_and_renames_it(tmp_path, monkeypatch):
    import shutil

    from t2s_ray.io import copy_files_whole

    src, dst = tmp_path / "staging", tmp_path / "storage"
    (src / "trial").mkdir(parents=True)
    (src / "experiment_state-1.json").write_text('{"trial_data": [1, 2]}')
    (src / "trial" / "result.json").write_text('{"step": 2}\n')
    (dst / "trial").mkdir(parents=True)
    (dst / "experiment_state-1.json").write_text('{"trial_data": [1]}')
    (dst / "trial" / "result.json").write_text('{"step": 1}\n')
    (dst / "trial" / "checkpoint_000000").mkdir()  # what the copy does not bring stays

    real = shutil.copyfile
    copied = []

    def killed_after_the_first(a, b):  # the second copy dies half-way through writing its file
        if copied:
            open(b, "w").write(open(a).read()[:5])
            raise KeyboardInterrupt
        copied.append(a)
        return real(a, b)

    monkeypatch.setattr(shutil, "copyfile", killed_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        copy_files_whole(src, dst)
    after = {p.relative_to(dst).as_posix(): p.read_text() for p in dst.rglob("*") if p.is_file()}
    # one file new, the other old: each whole, and no temp left
    assert sorted(after) == ["experiment_state-1.json", "trial/result.json"]
    assert {after["experiment_state-1.json"], after["trial/result.json"]} & {'{"trial_data": [1, 2]}', '{"step": 2}\n'}
    assert {after["experiment_state-1.json"], after["trial/result.json"]} & {'{"trial_data": [1]}', '{"step": 1}\n'}
    monkeypatch.setattr(shutil, "copyfile", real)
    assert copy_files_whole(src, dst) == 2
    assert (dst / "experiment_state-1.json").read_text() == '{"trial_data": [1, 2]}'
    assert (dst / "trial" / "checkpoint_000000").is_dir()
    assert copy_files_whole(src / "trial" / "result.json", dst / "one" / "result.json") == 1  # a single file
    assert (dst / "one" / "result.json").read_text() == '{"step": 2}\n'


def test_content_hash_ignores_key_order_and_keeps_the_report_config_hash():
    import hashlib
    import json
    from pathlib import PurePosixPath

    from t2s_ray.analysis.html import config_hash
    from t2s_ray.io import content_hash

    fields = {"b": [1, 2], "a": {"y": 1.5, "x": PurePosixPath("/data")}}
    assert content_hash(fields) == content_hash({"a": {"x": PurePosixPath("/data"), "y": 1.5}, "b": [1, 2]})
    assert len(content_hash(fields)) == 16 and content_hash(fields, digits=12) == content_hash(fields)[:12]
    assert content_hash(fields) != content_hash({**fields, "b": [2, 1]})
    # the report's config hash, written by hand before it used content_hash: the same 12 digits
    by_hand = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    assert config_hash(fields) == by_hand
    assert config_hash({"a": "no config: t2s_config.json missing"}).startswith("n/a (")
