"""Gloss-sequence metrics: exact match, positional accuracy and word error rate."""

import pytest

from t2s_ray.metrics.text_alignment import gloss_accuracy, gloss_wer, text_alignment


def test_one_inserted_gloss_is_one_error_for_wer_but_zeroes_positional_accuracy():
    target, read = [(1, 2, 3)], [(9, 1, 2, 3)]
    assert gloss_accuracy(read, target) == 0.0 and text_alignment(read, target) == 0.0
    assert gloss_wer(read, target) == pytest.approx(1 / 3)


def test_wer_counts_substitutions_deletions_and_pools_over_clips():
    assert gloss_wer([(1, 2, 3), (4,)], [(1, 2, 3), (4,)]) == 0.0
    assert gloss_wer([(1, 5), ()], [(1, 2, 3), (4,)]) == pytest.approx((2 + 1) / 4)
    with pytest.raises(ValueError):
        gloss_wer([(1,)], [])
