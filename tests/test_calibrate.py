"""`t2s-ray calibrate`: the verdict from per-seed numbers, and the wiring end to end (reduced)."""

import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from t2s_ray.cli import app
from t2s_ray.t2s.calibrate import judge, render
from tests.helpers import tiny_overrides

runner = CliRunner()


def _trials(arm, control, chance=0.2):
    rows = [
        {
            "ablation": name,
            "seed": s,
            "status": "finished",
            "eval/text_alignment": v,
            "eval/text_alignment_chance": chance,
        }
        for name, values in (("baseline", arm), ("no_text", control))
        for s, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_a_clear_effect_passes_and_the_table_shows_its_numbers():
    cal = judge(_trials([0.55, 0.62, 0.50], [0.14, 0.11, 0.16]))
    assert cal.passed and cal.result.n == 3 and cal.result.ci_low > 0
    text = render(cal)
    assert "| 1 | 0.620 | 0.110 | 0.510 |" in text and "PASS" in text and "chance level 0.200" in text


@pytest.mark.parametrize(
    "arm,control",
    [
        ([0.2, 0.1, 0.15], [0.14, 0.11, 0.16]),  # no effect
        ([0.55, 0.62], [0.14, 0.11]),
    ],
)  # two seeds: no inference
def test_no_effect_or_too_few_seeds_fail(arm, control):
    cal = judge(_trials(arm, control))
    assert not cal.passed and "FAIL" in render(cal)


def _with_graded(trials, values):
    rows = [
        {
            "ablation": "few_sampling_steps",
            "seed": s,
            "status": "finished",
            "eval/text_alignment": v,
            "eval/text_alignment_chance": 0.2,
        }
        for s, v in enumerate(values)
    ]
    return pd.concat([trials, pd.DataFrame(rows)], ignore_index=True)


def test_the_graded_control_is_reported_detected_or_not_with_its_mde():

    arm, control = [0.55, 0.62, 0.50], [0.14, 0.11, 0.16]
    small = judge(_with_graded(_trials(arm, control), [0.52, 0.585, 0.47]))  # -0.03 +- 0.005 on every seed
    assert small.passed and small.graded_detected and small.graded_result.n == 3
    sd = small.graded_result.sd_diff
    assert _t_power(3, 0.05, small.graded_mde, sd) == pytest.approx(0.8, abs=1e-4)  # the MDE: 80 % power
    assert "graded control (few_sampling_steps" in render(small) and "(detected)" in render(small)
    body = small.to_dict()["graded"]
    assert body["detected"] is True and body["control"] == "few_sampling_steps"
    noisy = judge(_with_graded(_trials(arm, control), [0.60, 0.55, 0.52]))  # within seed noise
    assert noisy.passed and not noisy.graded_detected and "(not detected" in render(noisy)
    assert judge(_trials(arm, control)).graded_result is None  # not run: not reported


def test_an_errored_seed_is_dropped_from_the_pairs():
    trials = _trials([0.55, 0.62, 0.50, 0.6], [0.14, 0.11, 0.16, 0.1])
    trials.loc[3, "status"] = "errored"
    cal = judge(trials)
    assert cal.result.n == 3 and cal.result.dropped == 1


@pytest.mark.slow
def test_reduced_calibration_runs_the_whole_chain(fake_gpu_ray, tmp_path, data_cache):
    """Two seeds, a few steps: checks the wiring (sweep, evaluation, verdict, files), not the effect."""
    tiny = tiny_overrides(
        "data.eval_clips=8",
        "eval.num_videos=4",
        f"data.cache_dir={data_cache}",
        drop=("training.steps",),  # --steps sets it
    )
    args = [
        "calibrate",
        "--gpus",
        "0",
        "--cpus-per-trial",
        "0.5",
        "--seeds",
        "2",
        "--steps",
        "4",
        "--quiet",
        "--storage",
        str(tmp_path / "results"),
        "--name",
        "cal",
    ]
    for item in tiny:
        args += ["--set", item]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output  # two seeds allow no inference: the check cannot pass
    assert "| seed | baseline | no_text | difference |" in r.output and "n < 3: no inference" in r.output
    body = json.loads((tmp_path / "results" / "cal" / "calibration.json").read_text())
    assert set(body["per_seed"]) == {"baseline", "no_text"}
    # --set eval.sampling_steps=2 gives the baseline the graded control's sampling: it is left out, saying so
    assert "graded control few_sampling_steps is left out" in r.output and "graded" not in body
    for values in body["per_seed"].values():
        assert sorted(values) == ["0", "1"] and all(0 <= v <= 1 for v in values.values())
    assert 0 < body["chance"] <= 1 and body["passed"] is False and body["n"] == 2
    assert not math.isnan(body["mean_diff"])


def _t_power(n: int, alpha: float, effect: float, sd: float) -> float:
    """The two-sided paired t-test's power at a true mean difference `effect` (noncentral t, computed here)."""
    from scipy.stats import nct, t

    crit, nc = t.ppf(1 - alpha / 2, n - 1), effect / (sd / math.sqrt(n))
    return float(nct.sf(crit, n - 1, nc) + nct.cdf(-crit, n - 1, nc))
