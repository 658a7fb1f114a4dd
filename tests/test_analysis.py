"""analysis: pure tables on hand-made frames, then a fake experiment dir end to end."""

import base64
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from t2s_ray import analysis as an
from tests.helpers import final_row, make_trial, train_row

NAN = float("nan")


def frame(rows):
    """Trials frame from (ablation, seed, {metric: value}) tuples."""
    return pd.DataFrame([{"ablation": a, "seed": s, **m} for a, s, m in rows])


# --------------------------------------------------------------------------- the package's exports


def test_exports_load_on_first_use_and_unknown_names_fail():
    assert sorted(an.__all__) == sorted(an._SOURCES)  # each export has a module, and no module entry is unlisted
    for name in an.__all__:
        assert getattr(an, name) is not None, name
    assert an.summarize.__module__ == "t2s_ray.analysis.tables"
    assert an.stats.__name__ == "t2s_ray.stats"
    assert set(an.__all__) <= set(dir(an))
    with pytest.raises(AttributeError, match="no attribute 'summarise'"):
        an.summarise  # noqa: B018


def test_the_cli_imports_no_scipy_or_torch():
    """`t2s-ray sweep` imports the reading layer (to resume) before Ray starts; the rest of the package, scipy's
    statistics (~0.5 s) and torch load only when a command uses them."""
    code = "import sys, t2s_ray.cli\nprint(sorted(m for m in ('scipy', 'torch', 'matplotlib') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


# --------------------------------------------------------------------------- summarize


def test_summarize_mean_std_and_delta_exact():
    trials = frame(
        [
            ("baseline", 0, {"eval/fvd": 10.0, "params/total_m": 5.0}),
            ("baseline", 1, {"eval/fvd": 12.0, "params/total_m": 5.0}),
            ("baseline", 2, {"eval/fvd": 14.0, "params/total_m": 5.0}),
            ("no_ema", 0, {"eval/fvd": 15.0, "params/total_m": 5.0}),
            ("no_ema", 1, {"eval/fvd": 18.0, "params/total_m": 5.0}),
        ]
    )
    s = an.summarize(trials).set_index("ablation")
    assert s.loc["baseline", "eval/fvd_mean"] == 12.0
    assert s.loc["baseline", "eval/fvd_std"] == 2.0
    assert s.loc["no_ema", "eval/fvd_mean"] == 16.5
    assert s.loc["no_ema", "eval/fvd_std"] == pytest.approx(math.sqrt(4.5))
    assert s.loc["no_ema", "eval/fvd_delta_pct"] == pytest.approx(100 * 4.5 / 12)
    assert s.loc["baseline", "eval/fvd_delta_pct"] == 0.0
    assert list(s["n_seeds"]) == [3, 2]
    assert "params/total_m_delta_pct" not in s  # not a quality/cost metric


def test_summarize_single_seed_std_is_nan():
    s = an.summarize(frame([("baseline", 0, {"eval/lpips": 0.3})]))
    assert s["eval/lpips_mean"][0] == 0.3
    assert math.isnan(s["eval/lpips_std"][0])


def test_summarize_nan_excluded_and_counted():
    trials = frame(
        [
            ("baseline", 0, {"eval/fvd": 10.0, "eval/lpips": 0.2}),
            ("baseline", 1, {"eval/fvd": NAN, "eval/lpips": 0.4}),
            ("baseline", 2, {"eval/fvd": 20.0, "eval/lpips": NAN}),
        ]
    )
    s = an.summarize(trials)
    assert s["eval/fvd_mean"][0] == 15.0 and s["eval/fvd_n"][0] == 2
    assert s["eval/lpips_mean"][0] == pytest.approx(0.3) and s["eval/lpips_n"][0] == 2
    assert s["n_seeds"][0] == 3
    assert "(n=2/3)" in an.to_markdown(s)


def test_summarize_all_nan_metric_has_zero_count():
    trials = frame([("baseline", 0, {"eval/fvd": NAN}), ("baseline", 1, {"eval/fvd": NAN})])
    s = an.summarize(trials)
    assert s["eval/fvd_n"][0] == 0 and math.isnan(s["eval/fvd_mean"][0])
    assert "| n/a |" in an.to_markdown(s)


def test_summarize_baseline_missing_zero_or_negative():
    trials = frame([("a", 0, {"eval/fvd": 10.0}), ("b", 0, {"eval/fvd": 20.0})])
    s = an.summarize(trials)
    assert list(s["ablation"]) == ["a", "b"]
    assert s["eval/fvd_delta_pct"].isna().all()
    s = an.summarize(trials, baseline="a")
    assert list(s["eval/fvd_delta_pct"]) == [0.0, 100.0]
    zero = an.summarize(frame([("baseline", 0, {"eval/x": 0.0}), ("b", 0, {"eval/x": 1.0})]))
    assert zero["eval/x_delta_pct"].isna().all()
    neg = an.summarize(frame([("baseline", 0, {"eval/x": -2.0}), ("b", 0, {"eval/x": -1.0})]))
    assert neg["eval/x_delta_pct"][1] == 50.0  # divides by |baseline|


def test_summarize_baseline_first_then_first_appearance():
    trials = frame(
        [
            ("z", 0, {"val_loss": 1.0}),
            ("baseline", 0, {"val_loss": 1.0}),
            ("a", 0, {"val_loss": 1.0}),
            ("z", 1, {"val_loss": 1.0}),
        ]
    )
    assert list(an.summarize(trials)["ablation"]) == ["baseline", "z", "a"]


def test_summarize_metric_list_is_data_driven_and_ordered():
    trials = frame(
        [
            (
                "baseline",
                0,
                {"zzz_custom": 1.0, "eval/new_metric": 2.0, "params/total_m": 3.0, "eval/fvd": 4.0, "eval/lpips": 5.0},
            )
        ]
    )
    s = an.summarize(trials)
    assert an.summary_metrics(s) == ["eval/fvd", "eval/lpips", "params/total_m", "eval/new_metric", "zzz_custom"]
    assert "eval/new_metric_delta_pct" in s  # unknown eval/* counts as quality
    assert "zzz_custom_delta_pct" not in s


def test_summarize_uses_finished_rows_only_and_keeps_empty_ablations():
    trials = frame(
        [("baseline", 0, {"eval/fvd": 10.0}), ("baseline", 1, {"eval/fvd": NAN}), ("dit_s", 0, {"eval/fvd": NAN})]
    )
    trials["status"] = ["finished", "errored", "unfinished"]
    s = an.summarize(trials).set_index("ablation")
    assert s.loc["baseline", "n_seeds"] == 1 and s.loc["baseline", "n_incomplete"] == 1
    assert s.loc["dit_s", "n_seeds"] == 0 and s.loc["dit_s", "n_incomplete"] == 1
    assert math.isnan(s.loc["dit_s", "eval/fvd_mean"])


def test_summarize_rejects_duplicate_ablation_seed():
    trials = frame([("baseline", 0, {"eval/fvd": 1.0}), ("baseline", 0, {"eval/fvd": 2.0})])
    with pytest.raises(ValueError, match="select_trials"):
        an.summarize(trials)


# --------------------------------------------------------------------------- select_trials


def attempts_frame():
    return pd.DataFrame(
        [
            # a restarted trial: an errored attempt, then a finished one
            {
                "ablation": "baseline",
                "seed": 0,
                "trial_dir": "b0_old",
                "status": "errored",
                "last_time": 1.0,
                "eval/fvd": NAN,
            },
            {
                "ablation": "baseline",
                "seed": 0,
                "trial_dir": "b0_new",
                "status": "finished",
                "last_time": 2.0,
                "eval/fvd": 10.0,
            },
            # two finished attempts: the newest wins, wherever it sits in the frame
            {
                "ablation": "no_ema",
                "seed": 0,
                "trial_dir": "n0_new",
                "status": "finished",
                "last_time": 9.0,
                "eval/fvd": 30.0,
            },
            {
                "ablation": "no_ema",
                "seed": 0,
                "trial_dir": "n0_old",
                "status": "finished",
                "last_time": 5.0,
                "eval/fvd": 20.0,
            },
            # a finished attempt beats a newer errored one
            {
                "ablation": "no_ema",
                "seed": 1,
                "trial_dir": "n1_ok",
                "status": "finished",
                "last_time": 3.0,
                "eval/fvd": 40.0,
            },
            {
                "ablation": "no_ema",
                "seed": 1,
                "trial_dir": "n1_err",
                "status": "errored",
                "last_time": 4.0,
                "eval/fvd": NAN,
            },
            # never finished: kept, visible as errored (newest attempt)
            {
                "ablation": "dit_s",
                "seed": 0,
                "trial_dir": "d0_a",
                "status": "unfinished",
                "last_time": 1.0,
                "eval/fvd": NAN,
            },
            {
                "ablation": "dit_s",
                "seed": 0,
                "trial_dir": "d0_b",
                "status": "errored",
                "last_time": 2.0,
                "eval/fvd": NAN,
            },
        ]
    )


def test_select_trials_one_row_per_ablation_seed():
    sel = an.select_trials(attempts_frame())
    assert list(zip(sel["ablation"], sel["seed"])) == [("baseline", 0), ("no_ema", 0), ("no_ema", 1), ("dit_s", 0)]
    assert list(sel["trial_dir"]) == ["b0_new", "n0_new", "n1_ok", "d0_b"]
    assert list(sel["status"]) == ["finished", "finished", "finished", "errored"]
    assert list(sel["n_attempts"]) == [2, 2, 2, 2]
    assert sel["other_dirs"][0] == "b0_old"


def test_select_then_summarize():
    s = an.summarize(an.select_trials(attempts_frame())).set_index("ablation")
    assert s.loc["no_ema", "eval/fvd_mean"] == 35.0  # 30 (newest of seed 0) and 40
    assert s.loc["no_ema", "eval/fvd_delta_pct"] == 250.0
    assert s.loc["dit_s", "n_seeds"] == 0


# --------------------------------------------------------------------------- formatting


def test_to_markdown_exact_table():
    trials = frame(
        [
            ("baseline", 0, {"eval/fvd": 10.0, "eval/text_alignment": 0.25}),
            ("baseline", 1, {"eval/fvd": 14.0, "eval/text_alignment": 0.35}),
            ("no|ema", 0, {"eval/fvd": 18.0, "eval/text_alignment": 0.3}),
        ]
    )
    md = an.to_markdown(an.summarize(trials))
    assert md.splitlines() == [
        "| Ablation | Seeds | FVD ↓ | Δ% | Text align. ↑ | Δ% |",
        "|:---|---:|---:|---:|---:|---:|",
        "| baseline | 2 | 12.00 ± 2.83 | — | 0.3000 ± 0.0707 | — |",
        "| no\\|ema | 1 | 18.00 | +50.0% | 0.3000 | +0.0% |",
    ]


def test_to_markdown_counts_without_decimals():
    trials = frame([("baseline", s, {"eval/num_videos": 64}) for s in (0, 1)])
    assert an.to_markdown(an.summarize(trials)).splitlines()[2] == "| baseline | 2 | 64 ± 0 |"


def test_report_flags_unequal_sample_count_and_missing_baseline():
    trials = frame(
        [("a", 0, {"eval/fvd": 10.0, "eval/num_videos": 64}), ("b", 0, {"eval/fvd": 12.0, "eval/num_videos": 128})]
    )
    trials = trials.assign(status="finished", trial_dir=["d0", "d1"], error=None)
    selected = an.select_trials(trials)
    report = an.render_report("exp", selected, an.summarize(selected))
    assert "a: 64, b: 128 (UNEQUAL" in report
    assert "Baseline 'baseline' has no finished seed" in report
    assert (
        "a − baseline: n/a [n/a, n/a], p n/a (none), Holm p n/a, n 0, 1 unpaired seed(s) dropped → "
        "n < 3: no inference" in report
    )


def _seeded(ablation, values, metric="eval/fvd"):
    return [(ablation, seed, {metric: v}) for seed, v in enumerate(values)]


def test_paired_verdict_detects_what_mean_pm_std_calls_noise():
    """Seed-to-seed spread 10x the effect: the means are within one std, the paired verdict is not."""
    base = [10.0, 20.0, 30.0, 15.0]
    arm = [b - 1.0 + 0.05 * k for k, b in enumerate(base)]  # ~1 lower on every seed
    trials = frame(_seeded("baseline", base) + _seeded("b", arm)).assign(status="finished", primary="eval/fvd")
    summary = an.summarize(trials).set_index("ablation")
    gap = abs(summary.loc["b", "eval/fvd_mean"] - summary.loc["baseline", "eval/fvd_mean"])
    assert gap < summary.loc["baseline", "eval/fvd_std"]  # "within seed noise" by the old rule
    c = an.comparison_stats(trials).set_index(["ablation", "metric"]).loc[("b", "eval/fvd")]
    assert c["n"] == 4 and c["ci_high"] < 0 and c["test"] == "paired t" and c["verdict"] == "better"


def test_comparison_stats_directions_ratio_metric_and_holm():
    trials = frame(
        _seeded("baseline", [0.2, 0.3, 0.25], "eval/text_alignment")
        + _seeded("b", [0.8, 0.92, 0.84], "eval/text_alignment")
        + _seeded("baseline", [0.5, 0.5, 0.6], "eval/motion_ratio")
        + _seeded("b", [1.1, 0.95, 1.0], "eval/motion_ratio")
    )
    trials = (
        trials.groupby(["ablation", "seed"], as_index=False)
        .first()
        .assign(status="finished", primary="eval/text_alignment,eval/motion_ratio")
    )  # b's declared primary metrics
    c = an.comparison_stats(trials).set_index("metric")
    assert c.loc["eval/text_alignment", "verdict"] == "better"
    assert c.loc["eval/text_alignment", "delta_pct"] == pytest.approx(100 * (0.6 + 0.62 + 0.59) / 3 / 0.25)
    ratio = c.loc["eval/motion_ratio"]  # tested on |log r|: 1.1, 0.95, 1.0 are closer to 1 than 0.5, 0.5, 0.6
    assert ratio["diff"] < 0 and math.isnan(ratio["delta_pct"]) and ratio["verdict"] == "better"
    raw = c["p"].tolist()
    assert c["p_holm"].tolist() == pytest.approx(an.stats.holm(raw))


def test_one_seed_allows_no_inference():
    trials = frame(_seeded("baseline", [1.0]) + _seeded("b", [2.0])).assign(status="finished")
    assert an.comparison_stats(trials)["verdict"].tolist() == ["n < 3: no inference"]


def test_quality_and_cost_tables_are_short_and_nan_metrics_listed():
    rows = []
    for ablation, shift in (("baseline", 0.0), ("b", 0.1), ("c", -0.1)):
        for seed in range(3):
            rows.append(
                (
                    ablation,
                    seed,
                    {
                        "eval/fvd": math.nan,
                        "eval/fvd_status": "no I3D weights",
                        "eval/fvd_synthsign": 10 + seed - shift,
                        "eval/text_alignment": 0.5 + shift + 0.01 * seed + (0.002 * seed**2 if shift else 0),
                        "eval/lpips": 0.3,
                        "eval/motion_ratio": 1.0,
                        "eval/temporal_consistency_ssim": 0.8,
                        "val_loss": 0.1,
                        "train_time_h": 0.1,
                        "mem/gpu_peak_gb": 1.0,
                        "params/total_m": 2.0,
                        "params/trainable_m": 1.0,
                    },
                )
            )
    trials = frame(rows).assign(status="finished")
    md = an.comparison_markdown(trials, an.summarize(trials), an.comparison_stats(trials))
    tables = [line for line in md.splitlines() if line.startswith("|")]
    assert max(line.count("|") - 1 for line in tables) <= 10
    assert "- eval/fvd: no I3D weights" in md and "FVD ↓" not in md
    quality_row_b = next(line for line in tables if line.startswith("| b |"))
    assert "✓" in quality_row_b  # text alignment up on every seed
    assert "Cost" in md and "Params (M)" in md
    assert "the sample count N was not reported" in md
    trials["eval/num_videos"] = 64
    md = an.comparison_markdown(trials, an.summarize(trials), an.comparison_stats(trials))
    assert "Fréchet distances at N = 64 generated vs 64 real clips" in md


def test_training_curves_dedupes_restarts_and_averages_seeds():
    history = pd.DataFrame(
        [
            {"ablation": "baseline", "seed": 0, "step": 10, "loss": 9.0, "timestamp": 1},
            {"ablation": "baseline", "seed": 0, "step": 10, "loss": 1.0, "timestamp": 5},  # rerun
            {"ablation": "baseline", "seed": 1, "step": 10, "loss": 3.0, "timestamp": 2},
            {"ablation": "no_ema", "seed": 0, "step": 10, "loss": 4.0, "timestamp": 2},
        ]
    )
    c = an.training_curves(history)
    assert list(c.columns) == ["ablation", "step", "loss_mean", "loss_std", "n_seeds"]
    assert list(c["loss_mean"]) == [2.0, 4.0] and list(c["n_seeds"]) == [2, 1]
    assert list(an.training_curves(pd.DataFrame()).columns) == list(c.columns)


# --------------------------------------------------------------------------- fake experiment


@pytest.fixture
def exp(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"\x80")
    (exp / "experiment_state-2025.json").write_text("{}")
    (exp / "basic-variant-state-2025.json").write_text("{}")
    make_trial(
        exp,
        "baseline_seed0_a",
        "baseline",
        0,
        [train_row(10, 1, 2.0), final_row(2, fvd=10.0, lpips=0.2)],
        trial_id="t_00000",
    )
    # restarted: errored attempt with a half-written line, then a finished attempt
    make_trial(
        exp,
        "baseline_seed1_b",
        "baseline",
        1,
        [train_row(10, 3, 9.0)],
        error="RuntimeError: CUDA out of memory",
        tail='{"step": 20, "lo',
        trial_id="t_00001",
    )
    make_trial(
        exp,
        "baseline_seed1_c",
        "baseline",
        1,
        [train_row(10, 5, 4.0), final_row(6, fvd=14.0, lpips=0.4)],
        trial_id="t_00001",
    )
    make_trial(
        exp,
        "no_ema_seed0_d",
        "no_ema",
        0,
        [train_row(10, 7, 3.0), final_row(8, fvd=18.0, lpips=0.3, train_time_h=1.0)],
        trial_id="t_00002",
    )
    make_trial(
        exp, "no_ema_seed1_e", "no_ema", 1, [train_row(10, 9)], error="ValueError: bad batch", trial_id="t_00003"
    )
    make_trial(exp, "dit_s_seed0_f", "dit_s", 0, [train_row(10, 9)], tail='{"ste', trial_id="t_00004")
    return exp


def _ray_state(exp, statuses):
    """An experiment_state-*.json shaped as Tune 2.60 writes it: trial_data pairs of JSON strings."""
    trials = [
        [json.dumps({"trial_id": f"t_{i:05d}", "relative_logdir": folder, "status": status}), "{}"]
        for i, (folder, status) in enumerate(statuses.items())
    ]
    (exp / "experiment_state-2026.json").write_text(json.dumps({"trial_data": trials, "runner_data": {}}))


def test_load_trials_takes_status_from_ray_records_where_they_exist(exp):
    # Ray says the unfinished dit_s trial errored (it died before writing error.txt); a finished trial whose
    # record says TERMINATED stays finished; a trial Ray does not list keeps what its folder says
    _ray_state(exp, {"dit_s_seed0_f": "ERROR", "baseline_seed0_a": "TERMINATED", "no_ema_seed0_d": "TERMINATED"})
    t = an.load_trials(exp)
    by_dir = t.set_index(t["trial_dir"].map(lambda p: Path(p).name))
    assert by_dir.loc["dit_s_seed0_f", "status"] == "errored"
    assert "Ray recorded the trial as ERROR" in by_dir.loc["dit_s_seed0_f", "error"]
    assert by_dir.loc["baseline_seed0_a", ["status", "ray_state"]].tolist() == ["finished", "TERMINATED"]
    assert by_dir.loc["no_ema_seed1_e", "status"] == "errored" and by_dir["ray_state"].isna().sum() == 3


def test_load_trials_statuses_and_metrics(exp):
    t = an.load_trials(exp)
    assert len(t) == 6
    by_dir = t.set_index(t["trial_dir"].map(lambda p: Path(p).name))
    assert by_dir["status"].to_dict() == {
        "baseline_seed0_a": "finished",
        "baseline_seed1_b": "errored",
        "baseline_seed1_c": "finished",
        "no_ema_seed0_d": "finished",
        "no_ema_seed1_e": "errored",
        "dit_s_seed0_f": "unfinished",
    }
    assert by_dir.loc["baseline_seed1_b", "error"] == "RuntimeError: CUDA out of memory"
    assert by_dir.loc["baseline_seed0_a", "eval/fvd_synthsign"] == 10.0
    assert by_dir.loc["baseline_seed0_a", "eval/fvd_status"] == "no I3D weights: pass --i3d PATH"
    metrics = an.metric_columns(t)
    assert metrics[:3] == ["eval/fvd", "eval/fvd_synthsign", "eval/lpips"]
    assert not {"step", "loss", "training_iteration", "timestamp", "done", "seed"} & set(metrics)
    assert list(dict.fromkeys(t["ablation"])) == ["baseline", "no_ema", "dit_s"]


def test_load_history_excludes_final_rows(exp):
    h = an.load_history(exp)
    assert len(h) == 6 and "final_loss" not in h
    assert set(h["ablation"]) == {"baseline", "no_ema", "dit_s"}


def test_select_trials_on_experiment(exp):
    sel = an.select_trials(an.load_trials(exp))
    assert list(zip(sel["ablation"], sel["seed"], sel["status"])) == [
        ("baseline", 0, "finished"),
        ("baseline", 1, "finished"),
        ("no_ema", 0, "finished"),
        ("no_ema", 1, "errored"),
        ("dit_s", 0, "unfinished"),
    ]
    row = sel.iloc[1]
    assert Path(row["trial_dir"]).name == "baseline_seed1_c" and row["n_attempts"] == 2


def test_write_outputs_end_to_end(exp, tmp_path):
    out = tmp_path / "out"
    paths = an.write_outputs(exp, out)
    assert set(paths) == {"csv", "stats", "md", "report", "curves", "html", "curves_png", "metrics_png"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            an.TABLE_CSV,
            an.COMPARISON_STATS_CSV,
            an.TABLE_MD,
            an.REPORT_TXT,
            an.CURVES_CSV,
            "report.html",
            "training_curves.png",
            "metrics.png",
        ]
    )  # no temp files left
    html = paths["html"].read_text()
    for png in ("curves_png", "metrics_png"):  # the report's own figures, drawn once: the same bytes inlined
        assert f"data:image/png;base64,{base64.b64encode(paths[png].read_bytes()).decode()}" in html, png
    stats = pd.read_csv(paths["stats"])
    assert {"ablation", "metric", "n", "diff", "ci_low", "ci_high", "p", "p_holm", "verdict"} <= set(stats.columns)
    table = pd.read_csv(paths["csv"]).set_index("ablation")
    assert list(table.index) == ["baseline", "no_ema", "dit_s"]
    assert table.loc["baseline", "eval/fvd_synthsign_mean"] == 12.0
    assert table.loc["no_ema", "eval/fvd_synthsign_delta_pct"] == 50.0
    assert table.loc["no_ema", "train_time_h_delta_pct"] == 100.0
    assert table.loc["baseline", "eval/lpips_mean"] == (0.2 + 0.4) / 2  # full precision
    assert table.loc["no_ema", "n_incomplete"] == 1 and table.loc["dit_s", "n_seeds"] == 0
    md = paths["md"].read_text()
    assert "| FVD-SynthSign ↓ |" in md and "- eval/fvd: no I3D weights: pass --i3d PATH" in md
    report = paths["report"].read_text()
    for expected in [
        "ERRORED: (no_ema, seed 1)",
        "ValueError: bad batch",
        "UNFINISHED: (dit_s, seed 0)",
        "RESTARTED: (baseline, seed 1)",
        "eval/fvd: NaN in 3/3 finished trials",
        "3x no I3D weights: pass --i3d PATH",
        "eval/num_videos",
        "(equal)",
        str(exp.resolve()),
        "One finished seed only",
    ]:
        assert expected in report, expected
    curves = pd.read_csv(paths["curves"])
    assert curves.loc[curves["ablation"] == "baseline", "loss_mean"].tolist() == [3.0]


def test_write_outputs_format_filter_and_default_dir(exp):
    paths = an.write_outputs(exp, fmt="csv")
    assert set(paths) == {"csv", "stats", "report", "curves", "html", "curves_png", "metrics_png"}
    assert paths["csv"].parent == exp and not (exp / an.TABLE_MD).exists()
    with pytest.raises(ValueError, match="fmt"):
        an.write_outputs(exp, fmt="xlsx")


def test_not_an_experiment_dir(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        an.load_trials(tmp_path / "nope")
    with pytest.raises(ValueError, match="no trial folders.*params.json"):
        an.load_trials(tmp_path)


def test_storage_dir_hints_at_experiments(exp):
    with pytest.raises(ValueError, match="contains experiment dirs: exp"):
        an.load_trials(exp.parent)


def test_corrupt_middle_line_raises(tmp_path):
    d = make_trial(tmp_path, "t", "baseline", 0, [train_row(1, 1)])
    (d / "result.json").write_text('{"bad\n' + json.dumps(train_row(2, 2)) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        an.load_trials(tmp_path)


def test_params_without_ablation_raises(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "params.json").write_text('{"lr": 1}')
    with pytest.raises(ValueError, match="ablation"):
        an.load_trials(tmp_path)


def test_temporal_consistency_ranks_by_closeness_to_the_real_clips():
    rows = []
    for seed in range(3):
        real = 0.80 + 0.01 * seed
        rows += [
            ("baseline", seed, {"eval/temporal_consistency_ssim": 0.99, "eval/temporal_consistency_ssim_real": real}),
            (
                "b",
                seed,
                {
                    "eval/temporal_consistency_ssim": real - 0.01 * (seed + 1),
                    "eval/temporal_consistency_ssim_real": real,
                },
            ),
        ]
    trials = frame(rows).assign(status="finished", primary="eval/temporal_consistency_ssim")
    c = an.comparison_stats(trials).set_index("metric").loc["eval/temporal_consistency_ssim"]
    assert c["verdict"] == "better"  # 0.99 looks "more consistent" but is far from the real 0.8: frozen-ish


def test_report_shows_what_real_clips_score():
    rows = [
        (
            a,
            s,
            {
                "eval/text_alignment": 0.5,
                "eval/text_alignment_real": 1.0,
                "eval/text_alignment_chance": 0.125,
                "eval/fvd_synthsign_real": 2.5,
                "eval/motion_ratio": 1.2,
            },
        )
        for a in ("baseline", "b")
        for s in (0, 1)
    ]
    trials = frame(rows).assign(status="finished", trial_dir="d", error=None, n_attempts=1, other_dirs="")
    report = an.render_report("exp", trials, an.summarize(trials))
    assert "4. REFERENCE" in report and "(the floor at this N): 2.5" in report and "(the ceiling): 1" in report
    assert "(chance): 0.125" in report and "motion ratio of the real clips: 1" in report


def test_analyze_refuses_bootstrap_intervals_below_ten_seeds(exp, tmp_path):
    from typer.testing import CliRunner

    from t2s_ray.cli import app

    r = CliRunner().invoke(app, ["analyze", str(exp), "--out", str(tmp_path), "--interval", "bootstrap"])
    # the experiment has fewer than 10 seeds: a percentile interval would cover well under 95 %
    assert r.exit_code == 2 and "a bootstrap interval needs >= 10 paired seeds" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / an.COMPARISON_STATS_CSV).exists()
    r = CliRunner().invoke(app, ["analyze", str(exp), "--interval", "jackknife"])
    assert r.exit_code == 2


def test_a_metric_without_a_direction_gets_no_verdict_and_the_report_says_why():
    from t2s_ray.analysis.catalog import primary_metrics, study_directions

    rows = [
        (a, s, {"eval/own_score": v + s + (0.1 * s * s if a == "b" else 0), "eval/lpips": 0.3 + 0.01 * s})
        for a, v in (("baseline", 1.0), ("b", 2.0))
        for s in range(3)
    ]
    trials = frame(rows).assign(status="finished", trial_dir=[f"d{k}" for k in range(len(rows))], error=None)
    trials = an.select_trials(trials)
    summary = an.summarize(trials)
    stats = an.comparison_stats(trials)
    assert "eval/own_score" not in set(stats["metric"])  # no direction: never tested
    why = "Shown without a verdict (no direction"
    md = an.comparison_markdown(trials, summary, stats)
    report = an.render_report("exp", trials, summary, comparisons=stats)
    assert why in md and "eval/own_score; give each one in Study(metrics=" in md and why in report
    # the study gives it a direction: a verdict (its first metric is every arm's primary), no note
    with study_directions({"eval/own_score": "higher"}), primary_metrics(study_default=("eval/own_score",)):
        stats = an.comparison_stats(trials)
        assert stats.set_index("metric").loc["eval/own_score", "verdict"] == "better"
        assert why not in an.comparison_markdown(trials, summary, stats)


def test_a_trial_that_finished_after_a_retry_is_named_with_its_crash():
    rows = [(a, s, {"eval/lpips": 0.3 + 0.01 * s}) for a in ("baseline", "b") for s in range(3)]
    trials = frame(rows).assign(status="finished", trial_dir=[f"d{k}" for k in range(6)], error=None)
    trials.loc[4, "error"] = "Traceback (most recent call last):\n  ...\nRuntimeError: out of memory\n"
    selected = an.select_trials(trials)
    report = an.render_report("exp", selected, an.summarize(selected))
    assert "finished 6, errored 0" in report
    assert (
        "RECOVERED: (b, seed 1) crashed, was retried from its last checkpoint and finished "
        "(d4/error.txt: RuntimeError: out of memory)"
    ) in report
    assert report.count("RECOVERED") == 1


def _families_trials():
    """3 seeds; b: text alignment +0.10 +- 0.01 on every seed, and 8 more metrics that move at random."""
    rng = np.random.default_rng(4)
    rows = []
    for seed in range(3):
        base = {
            "eval/text_alignment": 0.5 + 0.02 * seed,
            "eval/gloss_accuracy": 0.5 + 0.02 * seed,
            "final_loss": 0.2 + 0.01 * seed,
            "eval/lpips": 0.3 + 0.01 * seed,
        }
        base |= {f"eval/x{k}": rng.normal() for k in range(8)}
        arm = {
            **{k: v + rng.normal(0, 0.3) for k, v in base.items()},
            "eval/text_alignment": base["eval/text_alignment"] + [0.09, 0.10, 0.11][seed],
            "eval/gloss_accuracy": base["eval/gloss_accuracy"] + [0.09, 0.10, 0.11][seed],
            "final_loss": base["final_loss"] - [0.09, 0.10, 0.11][seed],
        }
        rows += [("baseline", seed, base), ("b", seed, arm)]
    return frame(rows).assign(status="finished", primary="eval/text_alignment")


def test_a_primary_effect_at_3_seeds_is_found_beside_many_secondary_metrics():
    from t2s_ray.analysis.catalog import study_directions

    trials = _families_trials()
    with study_directions({f"eval/x{k}": "higher" for k in range(8)}):
        c = an.comparison_stats(trials).set_index("metric")
    ta = c.loc["eval/text_alignment"]
    assert ta["primary"] and ta["family"] == "primary" and ta["p_holm"] == ta["p"]  # a family of one
    assert ta["p"] == pytest.approx(0.0033, abs=5e-4) and ta["verdict"] == "better"
    # the same effect on a secondary metric is found but labelled exploratory (its own, larger family)
    ga = c.loc["eval/gloss_accuracy"]
    assert not ga["primary"] and ga["family"] == "secondary" and ga["p_holm"] > ga["p"]
    assert ga["verdict"] in ("better (exploratory)", "no detectable difference")
    assert c.loc["final_loss", "verdict"] == "loss: no verdict" and math.isnan(c.loc["final_loss", "p_holm"])
    assert not any(v in ("better", "worse") for m, v in c["verdict"].items() if m.startswith("eval/x"))
    # mde: the effect the paired t finds 80 % of the time at n = 3, this sd, alpha 0.05 (a family of one)

    assert _t_power(3, 0.05, ta["mde"], ta["sd_diff"]) == pytest.approx(0.8, abs=1e-4)  # the MDE: 80 % power


def test_an_arm_without_a_declared_primary_gets_only_exploratory_verdicts_and_primary_overrides():
    from t2s_ray.analysis.catalog import primary_metrics

    trials = _families_trials().drop(columns="primary")
    c = an.comparison_stats(trials).set_index("metric")
    assert not c["primary"].any() and c.loc["eval/text_alignment", "verdict"] == "better (exploratory)"
    with primary_metrics(override=("eval/gloss_accuracy",)):  # --primary: one metric for every arm
        c = an.comparison_stats(_families_trials()).set_index("metric")
    assert c.loc["eval/gloss_accuracy", "verdict"] == "better" and not c.loc["eval/text_alignment", "primary"]
    md = an.comparison_markdown(trials, an.summarize(trials), an.comparison_stats(trials))
    assert "(✓)" in md


def test_the_distribution_metric_is_i3d_fvd_where_computed_else_fvd_synthsign():
    from t2s_ray.analysis.catalog import arm_primary

    with_fvd = pd.DataFrame({"eval/fvd": [1.0, NAN], "eval/fvd_synthsign": [2.0, 3.0]})
    without = pd.DataFrame({"eval/fvd": [NAN, NAN], "eval/fvd_synthsign": [2.0, 3.0]})
    assert arm_primary("eval/text_alignment,distribution", with_fvd) == ("eval/text_alignment", "eval/fvd")
    assert arm_primary("distribution", without) == ("eval/fvd_synthsign",)
    assert arm_primary(None, without) == ()
    # KID where the clips are fewer than 4 x the feature width (the Fréchet distance is mostly bias there)
    small = without.assign(
        **{"eval/kid_synthsign": [0.1, 0.2], "eval/num_videos": 64, "eval/feature_dim_synthsign": 128}
    )
    assert arm_primary("distribution", small) == ("eval/kid_synthsign",)
    assert arm_primary("distribution", small.assign(**{"eval/num_videos": 2048})) == ("eval/fvd_synthsign",)
    i3d = with_fvd.assign(**{"eval/kid": [0.01, 0.02], "eval/num_videos": 256})
    assert arm_primary("distribution", i3d) == ("eval/kid",)
    assert arm_primary("distribution", i3d.assign(**{"eval/num_videos": 2048})) == ("eval/fvd",)


def test_no_detectable_difference_says_what_could_be_seen_and_with_how_many_seeds():
    from scipy.stats import t

    rows = []
    for seed, noise in enumerate([0.05, -0.04, 0.01]):  # a small effect in large noise
        rows += [("baseline", seed, {"eval/text_alignment": 0.5}), ("b", seed, {"eval/text_alignment": 0.5 + noise})]
    trials = frame(rows).assign(
        status="finished", trial_dir=[f"d{k}" for k in range(6)], error=None, primary="eval/text_alignment"
    )
    selected = an.select_trials(trials)
    c = an.comparison_stats(selected).iloc[0]
    sd = float(np.std([0.05, -0.04, 0.01], ddof=1))
    assert c["verdict"] == "no detectable difference" and c["sd_diff"] == pytest.approx(sd)
    assert _t_power(3, 0.05, c["mde"], sd) == pytest.approx(0.8, abs=1e-4)  # the MDE: 80 % power at n = 3
    k = an.stats.seeds_for(c["mde"] / 2, sd)
    assert k > 3 and (t.ppf(0.975, k - 1) + t.ppf(0.8, k - 1)) * sd / math.sqrt(k) <= c["mde"] / 2
    line = f"differences below {c['mde']:.3g} cannot be seen with 3 seeds; ~{k} seeds would see {c['mde'] / 2:.3g}"
    assert line in an.render_report("exp", selected, an.summarize(selected))
    assert line in an.comparison_markdown(selected, an.summarize(selected), an.comparison_stats(selected))


def test_analyze_primary_option_decides_every_arm_on_that_metric(exp, tmp_path):
    from typer.testing import CliRunner

    from t2s_ray.cli import app

    r = CliRunner().invoke(app, ["analyze", str(exp), "--out", str(tmp_path), "--primary", "eval/lpips"])
    assert r.exit_code == 0, r.output
    stats = pd.read_csv(tmp_path / an.COMPARISON_STATS_CSV)
    assert set(stats.loc[stats["primary"], "metric"]) == {"eval/lpips"}
    assert {"primary", "family", "mde", "sd_diff", "alpha"} <= set(stats.columns)
    r = CliRunner().invoke(app, ["analyze", str(exp), "--out", str(tmp_path / "own")])
    stats = pd.read_csv(tmp_path / "own" / an.COMPARISON_STATS_CSV)  # the registry's: no_ema on FVD-SynthSign
    assert set(stats.loc[stats["primary"] & (stats["ablation"] == "no_ema"), "metric"]) == {"eval/fvd_synthsign"}


def test_seeds_needed_from_a_pilot_experiment(tmp_path):
    from t2s_ray import AblationRunner

    for seed, (base, arm) in enumerate([(0.50, 0.52), (0.55, 0.56), (0.45, 0.48)]):
        for ablation, value in (("baseline", base), ("text_finetuned", arm)):
            runner = AblationRunner(ablation, tmp_path, experiment_scale="smoke", seed=seed)
            runner.log_training_step(0, 1, 0.5, 1e-4, 1.0)
            runner.log_evaluation(text_alignment=value, fvd_synthsign=10.0 + seed)
            runner.save_results()
    lines = an.seeds_needed(tmp_path, "0.01")
    (ta,) = [line for line in lines if "eval/text_alignment" in line]
    sd = float(np.std([0.02, 0.01, 0.03], ddof=1))
    k = an.stats.seeds_for(0.01, sd, 0.05 / 2)  # text_finetuned's two primary metrics: a family of 2
    assert f"~{k} seeds find 0.01 with 80 % power at alpha 0.025 (sd of the per-seed differences {sd:.3g}" in ta
    assert "2%" in an.seeds_needed(tmp_path, "2%")[0]
    for bad in ("lots", "-1", "0%"):
        with pytest.raises(ValueError, match="--effect"):
            an.parse_effect(bad)


def _held_out(root, diffs, more_metrics=0, seed_base=0.5):
    """An experiment written as AblationRunner runs: text_finetuned's text alignment = baseline's + diffs[k] at
    seed k; `more_metrics` other quality metrics that move at random (more comparisons for Holm)."""
    from t2s_ray import AblationRunner

    rng = np.random.default_rng(7)
    others = ["lpips", "gloss_wer", "kid_synthsign", "fvd", "kid"][:more_metrics]  # directed catalog metrics
    for seed, d in enumerate(diffs):
        base = seed_base + 0.05 * rng.normal()
        noise = {k: rng.normal() for k in others}
        arms = (("baseline", base), ("text_finetuned", base + d), ("no_ema", base + 0.01 * rng.normal()))
        for ablation, value in arms:
            runner = AblationRunner(ablation, root, experiment_scale="smoke", seed=seed)
            runner.log_training_step(0, 1, 0.5, 1e-4, 1.0)
            runner.log_evaluation(
                text_alignment=value,
                fvd_synthsign=10 + rng.normal(),
                gloss_accuracy=value,
                **{k: v + rng.normal(0, 0.5) for k, v in noise.items()},
            )
            runner.save_results()
    return root


def _analyze(exp):
    from typer.testing import CliRunner

    from t2s_ray.cli import app

    r = CliRunner().invoke(app, ["analyze", str(exp)])
    assert r.exit_code == 0, r.output
    stats = pd.read_csv(exp / an.COMPARISON_STATS_CSV)
    return stats.set_index(["ablation", "metric"]), r.output


def test_held_out_experiments_with_known_answers_through_analyze(tmp_path):
    rng = np.random.default_rng(3)
    # a consistent effect at 6 seeds: +0.03 +- 0.002 (Wilcoxon + Holm over 18 used to call it no difference)
    six, _ = _analyze(_held_out(tmp_path / "six", 0.03 + rng.normal(0, 0.002, 6)))
    assert six.loc[("text_finetuned", "eval/text_alignment"), "verdict"] == "better"
    assert six.loc[("text_finetuned", "eval/text_alignment"), "primary"]
    # identical differences at 3 seeds: no win without evidence (sign-flip p = 0.25)
    same, _ = _analyze(_held_out(tmp_path / "same", [1 / 64] * 3))
    row = same.loc[("text_finetuned", "eval/text_alignment")]
    assert row["p"] == 0.25 and row["verdict"] == "no detectable difference"
    # +0.10 +- 0.01 at 3 seeds on the primary metric, among 16 quality comparisons: found
    tight, _ = _analyze(_held_out(tmp_path / "tight", [0.09, 0.10, 0.11], more_metrics=5))
    assert tight.loc[("text_finetuned", "eval/text_alignment"), "verdict"] == "better"
    assert (tight["kind"] == "quality").sum() - (tight["family"] == "loss").sum() >= 16
    assert {"primary", "mde"} <= set(tight.columns)


def test_a_result_json_cut_short_is_recovered_from_progress_csv_and_named(tmp_path):
    """A trial whose result.json lost the end of its last line (the final report) still counts as finished
    when Tune's progress.csv holds that report, and the output names the damaged file either way."""
    import csv

    exp = _held_out(tmp_path / "cut", [0.05, 0.04, 0.06])
    folder = exp / "text_finetuned_seed1"
    rows = [json.loads(line) for line in (folder / "result.json").read_text().splitlines()]
    for i, row in enumerate(rows, 1):
        row["training_iteration"] = i
    keys = sorted({k for r in rows for k in r})
    with open(folder / "progress.csv", "w", newline="") as f:  # what Tune writes beside result.json
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (folder / "result.json").write_text(text[: len(text) - 40])  # the final report cut mid-line
    trials = an.select_trials(an.load_trials(exp))
    row = trials[(trials["ablation"] == "text_finetuned") & (trials["seed"] == 1)].iloc[0]
    assert row["status"] == "finished" and row["eval/text_alignment"] == pytest.approx(rows[-1]["eval/text_alignment"])
    assert "result.json: its last line is cut short; 1 report(s) recovered from progress.csv" in row["damaged"]
    stats, output = _analyze(exp)
    assert "Damaged files:" in output and str(folder / "result.json") in output.replace("\n", "")
    assert stats.loc[("text_finetuned", "eval/text_alignment"), "n"] == 3
    (folder / "progress.csv").unlink()  # no second copy: the trial is unfinished, and the output says why
    trials = an.select_trials(an.load_trials(exp))
    row = trials[(trials["ablation"] == "text_finetuned") & (trials["seed"] == 1)].iloc[0]
    assert row["status"] == "unfinished" and "progress.csv holds nothing more: that report is lost" in row["damaged"]
    _, output = _analyze(exp)
    assert "progress.csv holds nothing more" in output.replace("\n", " ")
    assert "DAMAGED: (text_finetuned, seed 1)" in (exp / an.REPORT_TXT).read_text()


def _t_power(n: int, alpha: float, effect: float, sd: float) -> float:
    """The two-sided paired t-test's power at a true mean difference `effect` (noncentral t, computed here)."""
    from scipy.stats import nct, t

    crit, nc = t.ppf(1 - alpha / 2, n - 1), effect / (sd / math.sqrt(n))
    return float(nct.sf(crit, n - 1, nc) + nct.cdf(-crit, n - 1, nc))


def test_the_analysis_and_the_cli_import_no_torch():
    """`t2s-ray analyze` reads CSV and JSON: torch's import (~2 s on 2 cores) would be a third of its time."""
    code = "import sys, t2s_ray.analysis, t2s_ray.cli\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
