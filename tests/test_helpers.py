"""The test helpers that share work between pytest-xdist processes."""

import pytest

from tests.helpers import once_per_run


def test_once_per_run_builds_once_and_hands_every_caller_the_same_record(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        return {"final_loss": 0.1 + 0.2}  # a float that must come back bit for bit

    assert once_per_run(tmp_path, build) == {"final_loss": 0.1 + 0.2}
    assert once_per_run(tmp_path, lambda folder: {"final_loss": 0.0}) == {"final_loss": 0.1 + 0.2}
    assert calls == [tmp_path]


def test_a_failed_build_is_not_run_again_and_later_callers_are_told_why(tmp_path):
    def boom(folder):
        raise RuntimeError("Ray did not start")

    with pytest.raises(RuntimeError, match="Ray did not start"):
        once_per_run(tmp_path, boom)
    with pytest.raises(AssertionError, match="failed in another test process: RuntimeError: Ray did not start"):
        once_per_run(tmp_path, lambda folder: {"ok": 1})
