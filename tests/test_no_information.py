"""Metrics that carry no information (`catalog.no_information`): flagged and left out of the verdict families.

Known answers on synthetic trials: what must be flagged (identical everywhere, pinned at a bound), what must not
(an effect, a null with noise, arms that are constant but differ, NaN), and the simulated power and size of the
verdicts with flagged metrics beside the one that carries the signal, at the seed counts users run (3 and 6).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from t2s_ray import stats
from t2s_ray.analysis.catalog import no_information
from t2s_ray.analysis.render import comparison_markdown
from t2s_ray.analysis.tables import comparison_stats, summarize


def _trials(values: dict[str, dict[str, list[float]]]) -> pd.DataFrame:
    rows = []
    for metric, arms in values.items():
        for ablation, vals in arms.items():
            for seed, v in enumerate(vals):
                rows.append({"ablation": ablation, "seed": seed, "status": "finished", metric: v})
    return pd.DataFrame(rows).groupby(["ablation", "seed"], as_index=False, sort=False).first()


def test_identical_or_pinned_metrics_are_flagged_and_left_out_of_the_verdicts():
    """Temporal consistency 1.0000 ± 0.0000 for every variant (pinned at its bound), text alignment 0 in every
    trial, a BLEU-4 equal everywhere: no information, out of the verdict families, flagged in the table. A
    metric with a real effect (6 seeds, +0.1 every seed) is kept and called."""
    trials = _trials(
        {
            "eval/temporal_consistency": {"baseline": [1.0] * 6, "no_ema": [0.99999] * 3 + [1.0] * 3},
            "eval/text_alignment": {"baseline": [0.0] * 6, "no_ema": [0.0] * 6},
            "eval/bleu4": {"baseline": [12.5] * 6, "no_ema": [12.5] * 6},
            "eval/rouge_l": {"baseline": [40.0, 41, 39, 40.5, 39.5, 40], "no_ema": [50.0, 51, 49, 50.5, 49.5, 50]},
        }
    )
    flagged = no_information(trials)
    assert set(flagged) == {"eval/temporal_consistency", "eval/text_alignment", "eval/bleu4"}
    assert flagged["eval/temporal_consistency"] == (
        "Temporal cons. is at its bound 1 in all 12 finished trials (every arm and seed)"
    )
    assert flagged["eval/text_alignment"].startswith("Text align. is at its bound 0")
    assert flagged["eval/bleu4"] == "BLEU-4 is 12.5 in all 12 finished trials (every arm and seed)"
    stats_ = comparison_stats(trials)
    assert list(stats_["metric"]) == ["eval/rouge_l"] and stats_["verdict"].iloc[0].startswith("better")
    text = comparison_markdown(trials, summarize(trials), stats_)
    assert "Text align. ↑ (no information)" in text and "| no information |" in text
    assert "Left out of the verdicts, no information" in text and "- eval/bleu4: BLEU-4 is 12.5" in text


def test_no_information_needs_two_values_and_ignores_nan_and_unranked_metrics():
    one = _trials({"eval/bleu4": {"baseline": [10.0], "no_ema": [math.nan]}})
    assert no_information(one) == {}  # one finite value: nothing to compare yet
    unranked = _trials({"eval/num_videos": {"baseline": [8.0, 8.0], "no_ema": [8.0, 8.0]}})
    assert no_information(unranked) == {}  # a count, not a ranked metric
    near = _trials({"eval/text_alignment": {"baseline": [0.0, 0.0], "no_ema": [0.0, 0.01]}})
    assert no_information(near) == {}  # one trial moved off the bound: it carries information


def test_arms_constant_over_seeds_but_different_carry_information():
    """Ties within each arm are no reason to flag: baseline 0.5 in every seed, the arm 0.6 in every seed. The
    metric stays in the statistics, where identical non-zero differences get the exact sign-flip p, 2/2^n
    (0.25 at 3 seeds: no verdict; 0.031 at 6)."""
    for n, p in ((3, 0.25), (6, 2 / 2**6)):
        trials = _trials({"eval/text_alignment": {"baseline": [0.5] * n, "no_ema": [0.6] * n}})
        assert no_information(trials) == {}
        (row,) = comparison_stats(trials).to_dict("records")
        assert row["p"] == pytest.approx(p) and row["sd_diff"] == 0
        assert row["verdict"] == (stats.NO_DIFFERENCE if n == 3 else stats.BETTER + stats.EXPLORATORY)


def test_nan_values_are_left_out_before_the_rule():
    """NaN (a trial that could not compute the metric) is not a value: the finite ones decide. All NaN is not
    'no information' either (it is listed as not computed)."""
    with_nan = _trials({"eval/bleu4": {"baseline": [5.0, math.nan, 5.0], "no_ema": [5.0, 5.0, math.nan]}})
    assert list(no_information(with_nan)) == ["eval/bleu4"]
    varied = _trials({"eval/bleu4": {"baseline": [5.0, math.nan, 6.0], "no_ema": [5.0, 5.0, math.nan]}})
    assert no_information(varied) == {}
    all_nan = _trials({"eval/bleu4": {"baseline": [math.nan] * 3, "no_ema": [math.nan] * 3}})
    assert no_information(all_nan) == {} and comparison_stats(all_nan).empty


def _simulated(n: int, effect: float, reps: int, seed: int) -> tuple[float, int]:
    """(share of `reps` synthetic studies whose ROUGE-L verdict is 'better', trials flagged): n seeds, per-seed
    sd 1 of the paired difference, true effect `effect`; temporal consistency pinned at 1 and BLEU-4 and text
    alignment at 0 beside it in every study, as at smoke scale."""
    rng = np.random.default_rng(seed)
    better, flagged = 0, 0
    for _ in range(reps):
        base = 40 + rng.normal(0, 3, n)  # seed-to-seed spread: cancels in the paired difference
        arm = base + effect + rng.normal(0, 1, n)
        trials = _trials(
            {
                "eval/rouge_l": {"baseline": list(base), "no_ema": list(arm)},
                "eval/temporal_consistency": {"baseline": [1.0] * n, "no_ema": [1.0] * n},
                "eval/bleu4": {"baseline": [0.0] * n, "no_ema": [0.0] * n},
                "eval/text_alignment": {"baseline": [0.0] * n, "no_ema": [0.0] * n},
            }
        )
        flagged += len(no_information(trials))
        rows = comparison_stats(trials)
        assert list(rows["metric"]) == ["eval/rouge_l"]  # the flagged three never enter the family
        better += rows["verdict"].iloc[0].startswith(stats.BETTER)
    return better / reps, flagged


@pytest.mark.parametrize("n", [3, 6])
def test_simulated_power_and_size_with_uninformative_metrics_beside(n):
    """At the seed counts users run, with three uninformative metrics in every study: an effect of the MDE the
    statistics report for this n (80 % power at alpha 0.05, a family of one) is found in ~80 % of 400
    simulated studies, a null in <= ~5 %. Had the three stayed in the family (Holm over 4), the same effect
    would be found far less often: at alpha 0.05/4 its power is that of a larger MDE (computed beside)."""
    effect = stats._detectable(n, 1.0, stats.ALPHA, stats.POWER)
    power, flagged = _simulated(n, effect, 400, seed=n)
    size, _ = _simulated(n, 0.0, 400, seed=100 + n)
    assert flagged == 3 * 400
    assert 0.72 <= power <= 0.88, power
    assert size <= 0.045, size  # one-sided 'better' of a two-sided 5 % test: ~2.5 %
    assert stats._detectable(n, 1.0, stats.ALPHA / 4, stats.POWER) > 1.3 * effect  # what keeping them would cost
