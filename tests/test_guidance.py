"""The guidance-scale sweep at evaluation time: `eval.guidance_scale` as a list, its keys, and its report."""

from __future__ import annotations

import dataclasses
import html as html_text
import json
import math

import numpy as np
import pytest
import torch

from t2s_ray.guidance import HEADLINE_SCALE_KEY, guidance_key, parse_guidance_key, scale_text
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.config import Config, ConfigError, parse_override, trajectory_fields
from tests.helpers import TINY_EVAL, fake_evaluator_fn

# --------------------------------------------------------------------------- config and keys


def guided(value: str, extra: tuple[str, ...] = ()) -> Config:
    return resolve("baseline", "smoke", 0, [*extra, f"eval.guidance_scale={value}"])


def test_a_list_parses_keeps_its_order_and_round_trips_through_json():
    cfg = guided("[3,1,5]")
    e = cfg.eval
    assert e.guidance_scale == (3.0, 1.0, 5.0) and e.guidance == 3.0 and e.guidance_sweep == (3.0, 1.0, 5.0)
    assert Config.from_dict(json.loads(cfg.to_json())) == cfg
    assert guided("1.5,0.25").eval.guidance_sweep == (1.5, 0.25)  # brackets are optional
    assert guided("[2]").eval.guidance_sweep == (2.0,)  # a one-value list still asks for the curve
    assert parse_override("eval.guidance_scale=[3,1,5]") == {"eval": {"guidance_scale": [3.0, 1.0, 5.0]}}


def test_a_single_number_is_unchanged():
    e = guided("4").eval
    assert e.guidance_scale == 4.0 and e.guidance == 4.0 and e.guidance_sweep == ()
    assert Config().eval.guidance_scale == 3.0 and Config().eval.guidance_sweep == ()


def test_a_list_is_evaluation_only():
    assert trajectory_fields(guided("[3,1,5]")) == trajectory_fields(guided("3"))


@pytest.mark.parametrize(
    "value, says",
    [
        ("[]", "empty list"),
        ("[3,1,3.0]", "lists 3 more than once"),
        ("[3,-1]", "finite number >= 0, got 3, -1"),
        ("[1,nan]", "finite number >= 0"),
        ("[3 1 5]", "a number or a list of numbers"),
        ("three", "a number or a list of numbers"),
    ],
)
def test_bad_lists_raise_naming_the_key(value, says):
    with pytest.raises(ConfigError, match=r"eval\.guidance_scale") as err:
        guided(value)
    assert says in str(err.value)


def test_lists_in_ablation_files_are_checked_too():
    assert Config.from_dict({"eval": {"guidance_scale": [1, 2.5]}}).eval.guidance_scale == (1.0, 2.5)
    with pytest.raises(ConfigError, match=r"eval\.guidance_scale\[1\]: expected a number"):
        Config.from_dict({"eval": {"guidance_scale": [1, "x"]}})


@pytest.mark.parametrize("scale", [3.0, 1.5, 0.25, 0.1, 7.125, 100.0, 1e-05])
def test_keys_round_trip_every_scale(scale):
    key = guidance_key(scale, "fvd_synthsign")
    assert parse_guidance_key(key) == (scale, "fvd_synthsign")
    assert key.count("/") == 3 and "," not in key
    assert scale_text(3.0) == "3" and scale_text(1.5) == "1.5"


def test_other_keys_are_not_curve_keys():
    for key in ("eval/fvd_synthsign", HEADLINE_SCALE_KEY, "eval/guidance/x/fvd_synthsign", "eval/guidance/3/lpips"):
        assert parse_guidance_key(key) is None, key


# --------------------------------------------------------------------------- evaluation

NO_LPIPS = (None, "LPIPS not needed here")
TIMED = ("eval/inference_ms_per_video",)  # wall-clock: differs between any two runs


@pytest.fixture()
def judged(monkeypatch, tmp_path, text_encoder):
    """A tiny untrained state and an evaluator whose scores depend on the clips it sees: features are
    mean colours, and a clip is read as the glosses of the real prompt clip nearest to it in mean colour."""
    import t2s_ray.t2s.evaluation as ev
    from t2s_ray.data import build_dataset
    from t2s_ray.t2s.training import build_state

    cfg = resolve("baseline", "smoke", 0, [*TINY_EVAL, f"data.cache_dir={tmp_path}", "eval.guidance_scale=[3,1,5]"])
    val = build_dataset(cfg.data, "val")
    prompts = ev.eval_set(val, cfg.eval.num_videos, cfg.eval.seed)
    real_means = prompts.real.reshape(len(prompts.real), -1).mean(1)

    def features(model, videos):
        x = torch.from_numpy(np.ascontiguousarray(videos)).permute(0, 4, 1, 2, 3).float()
        return model.features(x).double().numpy()

    def recognise(model, videos):
        means = videos.reshape(len(videos), -1).mean(1)
        return [prompts.glosses[int(np.abs(real_means - m).argmin())] for m in means]

    monkeypatch.setattr(ev, "clip_features", features)
    monkeypatch.setattr(ev, "recognise", recognise)
    state = build_state(cfg, text_encoder=text_encoder)
    gen = torch.Generator().manual_seed(0)
    for p in state.ema.shadow.values():  # DiT's zero-initialised output ignores the caption: give it a say
        if p.is_floating_point():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return state, val


def evaluate_at(state, val, value: str, evaluator_fn=None):
    from t2s_ray.t2s.evaluation import evaluate

    cfg = state.cfg
    state.cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, guidance_scale=value))
    try:
        return evaluate(state, val, evaluator_fn=evaluator_fn or fake_evaluator_fn, lpips=NO_LPIPS).metrics
    finally:
        state.cfg = cfg


def same(a, b) -> bool:
    return (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)) or a == b


def test_a_list_reports_one_key_pair_per_scale_and_the_headline_at_the_first(judged):
    state, val = judged
    listed = evaluate_at(state, val, (3.0, 1.0, 5.0))
    single = evaluate_at(state, val, 3.0)
    curve = {k: v for k, v in listed.items() if k.startswith("eval/guidance/")}
    assert sorted(curve) == sorted(
        [HEADLINE_SCALE_KEY] + [guidance_key(s, m) for s in (3, 1, 5) for m in ("fvd_synthsign", "text_alignment")]
    )
    assert listed[HEADLINE_SCALE_KEY] == 3.0
    # the headline: every other key and value as a single-scale run at the first value (same seed)
    headline = {k: v for k, v in listed.items() if k not in curve}
    assert headline.keys() == single.keys() and not any(k.startswith("eval/guidance") for k in single)
    assert all(same(headline[k], single[k]) for k in headline if k not in TIMED), {
        k: (headline[k], single[k]) for k in headline if not same(headline[k], single[k])
    }
    # the headline scale's entry is the headline numbers; the others sampled at their own scale
    assert listed["eval/guidance/3/fvd_synthsign"] == listed["eval/fvd_synthsign"]
    assert listed["eval/guidance/3/text_alignment"] == listed["eval/text_alignment"]
    fvds = [listed[guidance_key(s, "fvd_synthsign")] for s in (3, 1, 5)]
    assert all(math.isfinite(v) for v in fvds) and len(set(fvds)) == 3
    assert all(0 <= listed[guidance_key(s, "text_alignment")] <= 1 for s in (3, 1, 5))


def test_each_scale_equals_a_single_scale_run_at_it(judged):
    """The same prompts and noise at every scale: the curve is paired."""
    state, val = judged
    listed = evaluate_at(state, val, (3.0, 1.5))
    alone = evaluate_at(state, val, 1.5)
    assert listed["eval/guidance/1.5/fvd_synthsign"] == alone["eval/fvd_synthsign"]
    assert listed["eval/guidance/1.5/text_alignment"] == alone["eval/text_alignment"]


def test_without_a_gloss_evaluator_the_curve_is_nan_with_the_reason_and_nothing_is_sampled(judged, monkeypatch):
    import t2s_ray.t2s.evaluation as ev
    from t2s_ray.t2s.gloss_evaluator import EvaluatorUnavailable

    def no_evaluator(data_cfg, device):
        raise EvaluatorUnavailable("the gloss evaluator exists for SynthSign only")

    calls = []
    real_sample_with = ev.sample_with
    monkeypatch.setattr(ev, "sample_with", lambda *a, **k: calls.append(k.get("guidance")) or real_sample_with(*a, **k))
    state, val = judged
    m = evaluate_at(state, val, (3.0, 1.0), evaluator_fn=no_evaluator)
    listed_calls = len(calls)
    calls.clear()
    evaluate_at(state, val, 3.0, evaluator_fn=no_evaluator)
    assert listed_calls == len(calls)  # no extra scale sampled: nothing could score it
    for s in (3, 1):
        for metric in ("fvd_synthsign", "text_alignment"):
            assert math.isnan(m[guidance_key(s, metric)])
            assert "SynthSign only" in m[f"eval/{metric}_status"]


# --------------------------------------------------------------------------- analysis and report

SCALES = (3.0, 1.0, 5.0)
# per ablation and seed: (fvd_synthsign, text_alignment) at each of SCALES
CURVES = {
    "baseline": [
        [(20.0, 0.50), (40.0, 0.20), (25.0, 0.60)],
        [(22.0, 0.40), (44.0, 0.10), (27.0, 0.70)],
        [(24.0, 0.60), (42.0, 0.30), (29.0, 0.50)],
    ],
    "no_ema": [
        [(30.0, 0.30), (50.0, 0.10), (33.0, 0.40)],
        [(32.0, 0.20), (52.0, 0.00), (35.0, 0.30)],
        [(34.0, 0.40), (54.0, 0.20), (37.0, 0.50)],
    ],
}


def write_trial(exp, ablation: str, seed: int, final: dict) -> None:
    d = exp / f"{ablation}_seed{seed}"
    d.mkdir()
    (d / "params.json").write_text(
        json.dumps({"ablation": ablation, "seed": seed, "scale": "smoke", "overrides": [], "data": "synthsign"})
    )
    rows = [
        {"step": 10, "loss": 1.0, "lr": 1e-4, "timestamp": 1.7e9 + seed, "trial_id": f"{ablation}{seed}"},
        {"final": 1, "step": 20, "timestamp": 1.7e9 + 10 + seed, "trial_id": f"{ablation}{seed}", **final},
    ]
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def swept(tmp_path):
    """Two ablations x 3 seeds, each evaluated at guidance [3, 1, 5] (headline 3)."""
    exp = tmp_path / "exp"
    exp.mkdir()
    for ablation, seeds in CURVES.items():
        for seed, points in enumerate(seeds):
            final = {
                "eval/fvd_synthsign": points[0][0],
                "eval/text_alignment": points[0][1],
                "eval/num_videos": 8,
                "eval/lpips": 0.3 + 0.01 * seed,
                "val_loss": 0.5,
                "train_time_h": 0.1,
                HEADLINE_SCALE_KEY: 3.0,
            }
            for scale, (fvd, align) in zip(SCALES, points):
                final |= {guidance_key(scale, "fvd_synthsign"): fvd, guidance_key(scale, "text_alignment"): align}
            write_trial(exp, ablation, seed, final)
    return exp


def test_guidance_curve_means_per_ablation_and_scale_in_increasing_order(swept):
    import t2s_ray.analysis as an

    curve = an.guidance_curve(an.select_trials(an.load_trials(swept)))
    assert list(zip(curve["ablation"], curve["scale"])) == [(a, s) for a in CURVES for s in (1.0, 3.0, 5.0)]
    base = curve[curve["ablation"] == "baseline"].set_index("scale")
    assert base.loc[1.0, "fvd_synthsign_mean"] == pytest.approx(42.0)
    assert base.loc[5.0, "text_alignment_mean"] == pytest.approx(0.6)
    assert base.loc[3.0, "fvd_synthsign_std"] == pytest.approx(2.0) and (curve["fvd_synthsign_n"] == 3).all()
    assert list(base["headline"]) == [False, True, False]


def test_report_has_the_curve_figure_and_table_and_the_headline_tables_stay_at_the_headline(swept):
    import pandas as pd

    import t2s_ray.analysis as an

    paths = an.write_outputs(swept)
    html = html_text.unescape(paths["html"].read_text())
    section = html[html.index('<h2 id="guidance">') : html.index('<h2 id="samples">')]
    assert 'alt="guidance curve"' in section and 'src="data:image/png;base64,' in section
    assert '<table class="guidance">' in section
    for scale in ("1", "3", "5"):
        assert f"FVD-SynthSign ↓ @ {scale}</th>" in section and f"Text align. ↑ @ {scale}</th>" in section
    assert ">42.00 ± 2.00<" in section  # baseline's FVD-SynthSign at guidance 1: mean ± std over 3 seeds
    note = "Evaluated at guidance 3 (eval.guidance_scale's first value)"
    quality = html[html.index('<table class="quality">') : html.index('<h2 id="guidance">')]
    assert note in quality and "@ " not in quality and "eval/guidance" not in quality
    assert note in paths["md"].read_text() and note in paths["report"].read_text()
    # no per-scale metric among the headline tables' columns or the statistics' rows
    table = pd.read_csv(paths["csv"])
    assert not [c for c in table.columns if "guidance" in c] and "eval/fvd_synthsign_mean" in table
    assert table.loc[table["ablation"] == "baseline", "eval/fvd_synthsign_mean"].item() == pytest.approx(22.0)
    stats = pd.read_csv(paths["stats"])
    assert "eval/fvd_synthsign" in set(stats["metric"]) and not stats["metric"].str.contains("guidance").any()
    results = paths["report"].read_text().split("2. RESULTS")[1].split("3. VERDICTS")[0]
    table_lines = [line for line in results.splitlines() if line.startswith("|")]
    assert "FVD-SynthSign" in table_lines[0] and not any("guidance" in line for line in table_lines)
    # the curve's own files
    csv = pd.read_csv(paths["guidance"])
    assert len(csv) == 6 and set(csv["scale"]) == set(SCALES)
    assert paths["guidance_png"].read_bytes()[:4] == b"\x89PNG"


def test_without_a_list_the_report_has_no_curve(tmp_path):
    import t2s_ray.analysis as an

    exp = tmp_path / "exp"
    exp.mkdir()
    for seed in range(2):
        write_trial(exp, "baseline", seed, {"eval/fvd_synthsign": 10.0 + seed, "eval/text_alignment": 0.5})
    paths = an.write_outputs(exp)
    html = html_text.unescape(paths["html"].read_text())
    assert 'id="guidance"' not in html and "eval.guidance_scale's first value" not in html
    assert "guidance" not in paths and "guidance_png" not in paths


def test_a_curve_that_could_not_be_computed_says_why(tmp_path):
    import t2s_ray.analysis as an

    exp = tmp_path / "exp"
    exp.mkdir()
    reason = "the gloss evaluator exists for SynthSign only"
    nan = float("nan")
    for seed in range(2):
        write_trial(
            exp,
            "baseline",
            seed,
            {
                "eval/fvd_synthsign": nan,
                "eval/fvd_synthsign_status": reason,
                "eval/text_alignment": nan,
                "eval/text_alignment_status": reason,
                "val_loss": 0.5,
                HEADLINE_SCALE_KEY: 1.5,
                **{guidance_key(s, m): nan for s in (1.5, 4.0) for m in ("fvd_synthsign", "text_alignment")},
            },
        )
    paths = an.write_outputs(exp)
    html = html_text.unescape(paths["html"].read_text())
    assert f"No curve for baseline: {reason}" in html and 'alt="guidance curve"' not in html
    assert "Evaluated at guidance 1.5 (eval.guidance_scale's first value)" in html
    assert "guidance" not in paths  # no value: no CSV of NaNs
