"""Paired statistics over seeds: known answers."""

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from t2s_ray.stats import BETTER, NO_DIFFERENCE, TOO_FEW, WORSE, by_seed, paired, verdict, with_holm


def test_paired_detects_a_small_consistent_shift_that_unpaired_misses():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 1.0, 5)  # large seed-to-seed variance shared by both arms
    ref = seed_effect
    arm = seed_effect + 0.2 + rng.normal(0, 0.02, 5)  # small, consistent improvement
    r = paired(by_seed(range(5), arm), by_seed(range(5), ref))
    assert r.n == 5 and r.ci_low > 0 and r.p < 0.001 and verdict(r) == BETTER
    assert sps.ttest_ind(arm, ref, equal_var=False).pvalue > 0.3  # the unpaired view calls it noise
    assert abs(arm.mean() - ref.mean()) < max(arm.std(ddof=1), ref.std(ddof=1))  # and so does "gap <= std"


def test_interval_and_p_match_the_textbook_formulas():
    arm, ref = [3.0, 5.0, 4.5, 6.0], [2.0, 4.5, 4.0, 4.0]
    d = np.subtract(arm, ref)
    r = paired(by_seed(range(4), arm), by_seed(range(4), ref))
    half = sps.t.ppf(0.975, 3) * d.std(ddof=1) / math.sqrt(4)
    assert r.mean_diff == pytest.approx(d.mean())
    assert (r.ci_low, r.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r.p == pytest.approx(sps.ttest_rel(arm, ref).pvalue)


def test_no_difference_says_so_and_direction_follows_the_metric():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 6)
    same = paired(by_seed(range(6), ref + rng.normal(0, 0.5, 6)), by_seed(range(6), ref))
    assert verdict(same) == NO_DIFFERENCE
    lower = paired(by_seed(range(4), [1.0, 2.0, 3.0, 4.0]), by_seed(range(4), [2.0, 3.1, 3.9, 5.0]))
    assert verdict(lower, higher_is_better=True) == WORSE and verdict(lower, higher_is_better=False) == BETTER


def test_nan_and_unpaired_seeds_are_dropped_and_counted():
    r = paired({0: 1.0, 1: 2.0, 2: math.nan, 3: 4.0}, {0: 0.5, 1: 1.0, 3: 3.0, 4: 9.0})
    assert (r.n, r.dropped) == (3, 2)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_fewer_than_three_seeds_draw_no_inference(n):
    r = paired(by_seed(range(n), [1.0] * n), by_seed(range(n), [0.0] * n))
    assert r.n == n and verdict(r) == TOO_FEW
    if n < 2:
        assert math.isnan(r.ci_low) and math.isnan(r.p)


def test_paired_t_at_every_n_and_bootstrap_only_from_ten_pairs():
    rng = np.random.default_rng(2)
    ref = rng.normal(0, 1, 12)
    arm = ref + 0.5 + rng.normal(0, 0.05, 12)
    for n in (3, 6, 8, 12):  # no switch to a rank test, whose smallest p at n = 6 is 0.031
        r = paired(by_seed(range(n), arm[:n]), by_seed(range(n), ref[:n]))
        assert r.test == "paired t" and r.p == pytest.approx(sps.ttest_1samp(arm[:n] - ref[:n], 0).pvalue)
    b = paired(by_seed(range(12), arm), by_seed(range(12), ref), interval="bootstrap")
    assert b.ci_low < r.mean_diff < b.ci_high and b.ci_low > 0
    with pytest.raises(ValueError, match="a bootstrap interval needs >= 10 paired seeds.*--interval t"):
        paired(by_seed(range(8), arm[:8]), by_seed(range(8), ref[:8]), interval="bootstrap")


def test_known_answers_a_consistent_effect_at_6_seeds_and_a_tight_one_at_3_are_found():
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 0.05, 6)
    six = paired(by_seed(range(6), base + 0.03 + rng.normal(0, 0.002, 6)), by_seed(range(6), base))
    assert six.p < 1e-5 and verdict(six) == BETTER  # Wilcoxon's floor was 0.031 here
    three = paired(by_seed(range(3), base[:3] + np.array([0.09, 0.10, 0.11])), by_seed(range(3), base[:3]))
    assert three.p == pytest.approx(0.0033, abs=5e-4) and verdict(three) == BETTER


@pytest.mark.parametrize("n, p", [(3, 0.25), (4, 0.125), (5, 0.0625), (6, 0.03125)])
def test_identical_differences_get_the_exact_sign_flip_p_not_a_free_win(n, p):
    r = paired(by_seed(range(n), [1.0 + 1 / 64] * n), by_seed(range(n), [1.0] * n))
    base = 0.5 + 0.01 * np.arange(n)  # equal up to round-off (0.6 + 0.01 k - (0.5 + 0.01 k)) counts as equal
    assert paired(by_seed(range(n), base + 0.1), by_seed(range(n), base)).test == "sign-flip (equal differences)"
    assert r.test == "sign-flip (equal differences)" and r.p == p
    assert with_holm([r])[0].p_holm == p  # it stays in its family
    if p < 0.05:  # the sign-flip test rejects every shift but the common difference: that point is the interval
        assert verdict(r) == BETTER and r.ci_low == r.ci_high == pytest.approx(1 / 64)
    else:  # it cannot reject any: no interval, no verdict
        assert verdict(r) == NO_DIFFERENCE and math.isnan(r.ci_low) and math.isnan(r.ci_high)


def test_zero_differences_and_a_nan_p_are_never_significant():
    same = paired(by_seed(range(4), [2.0] * 4), by_seed(range(4), [2.0] * 4))
    assert same.p == 1.0 and verdict(same) == NO_DIFFERENCE
    nan_p = replace(same, mean_diff=0.5, ci_low=0.5, ci_high=0.5, p=math.nan)
    assert verdict(nan_p) == NO_DIFFERENCE


def test_simulated_power_and_size_of_the_paired_t_at_the_seeds_users_run():
    """Known answers by simulation: the false-positive rate under the null is ~alpha at every n, and an effect of
    2.5 sd of the differences is found >= 80 % of the time at 6 seeds (the rule the verdicts use)."""
    rng = np.random.default_rng(11)
    for n in (3, 6, 9):
        null = [
            paired(by_seed(range(n), d), by_seed(range(n), np.zeros(n))).p < 0.05 for d in rng.normal(0, 1, (2000, n))
        ]
        assert 0.035 < np.mean(null) < 0.065, n
    found = [
        verdict(paired(by_seed(range(6), d), by_seed(range(6), np.zeros(6)))) == BETTER
        for d in rng.normal(2.5, 1, (2000, 6))
    ]
    assert np.mean(found) > 0.8


def test_welch_only_when_nothing_pairs_and_it_says_so():
    r = paired({0: 1.0, 1: 1.2, 2: 0.9}, {3: 0.1, 4: 0.2, 5: 0.0})
    assert r.test == "welch (nothing pairs)" and r.n == 3 and r.dropped == 6
    assert r.p == pytest.approx(sps.ttest_ind([1.0, 1.2, 0.9], [0.1, 0.2, 0.0], equal_var=False).pvalue)
    assert verdict(r) == BETTER


def test_holm_known_answer_and_nan_left_out():
    from t2s_ray.stats import holm, with_holm

    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)
    cells = [paired(by_seed(range(3), [1.0, 2.0, 3.1]), by_seed(range(3), [0.0, 1.1, 2.0]))] * 3
    adjusted = with_holm(cells)
    assert all(c.p_holm == pytest.approx(min(1, 3 * cells[0].p)) for c in adjusted)


def test_holm_can_turn_a_raw_detection_into_no_difference():
    r = paired(by_seed(range(3), [1.0, 2.0, 3.3]), by_seed(range(3), [0.0, 1.1, 2.0]))
    assert 0.01 < r.p < 0.05 and verdict(r) == BETTER
    from dataclasses import replace

    assert verdict(replace(r, p_holm=min(1.0, 10 * r.p))) == NO_DIFFERENCE


def test_delta_pct_scales_the_interval():
    from t2s_ray.stats import delta_pct

    r = paired(by_seed(range(3), [2.0, 2.2, 2.1]), by_seed(range(3), [1.0, 1.1, 1.0]))
    d, lo, hi = delta_pct(r, -2.0)
    assert d == pytest.approx(50 * r.mean_diff) and (lo, hi) == pytest.approx((50 * r.ci_low, 50 * r.ci_high))
    assert all(math.isnan(v) for v in delta_pct(r, 0.0))


@pytest.mark.parametrize("n, alpha", [(3, 0.05), (4, 0.05), (4, 0.05 / 3), (6, 0.05 / 2), (10, 0.05)])
def test_the_mde_is_found_80_percent_of_the_time_by_simulation(n, alpha):
    """Known answer by simulation: a true mean difference equal to the reported MDE is found by the paired t at
    that n and (corrected) alpha 80 % of the time; at half the MDE far less often, and a null at ~alpha. (The
    shortcut (t_{1-a/2} + t_power) * sd / sqrt(n) reached only 75 % at n = 4, alpha = 0.05 / 3.)"""
    from t2s_ray.stats import mde

    rng = np.random.default_rng(5)
    d0 = rng.normal(0, 1, n)
    sd = float(np.std(d0, ddof=1))  # mde reads the sd of the observed differences: give it a known one
    effect = mde(paired(by_seed(range(n), d0), by_seed(range(n), np.zeros(n))), alpha=alpha)

    def found(mean: float) -> float:
        d = rng.normal(mean, sd, (20_000, n))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
        return float(np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1)))

    assert 0.785 < found(effect) < 0.815
    assert found(effect / 2) < 0.5
    assert abs(found(0.0) - alpha) < 0.01


def test_seeds_for_is_the_fewest_seeds_whose_mde_reaches_the_effect():
    from t2s_ray.stats import _detectable, seeds_for

    for effect, sd, alpha in ((0.0334, 0.0532, 0.05 / 3), (0.03, 0.0135, 0.05 / 3), (0.5, 0.1, 0.05)):
        k = seeds_for(effect, sd, alpha)
        assert _detectable(k, sd, alpha, 0.8) <= effect
        assert k == 3 or _detectable(k - 1, sd, alpha, 0.8) > effect
    assert seeds_for(0.001, 1.0) is None  # beyond 1000 seeds
    assert seeds_for(0.0, 1.0) is None and seeds_for(0.1, 0.0) is None and seeds_for(math.nan, 1.0) is None
