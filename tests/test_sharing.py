"""Train once for evaluation-only ablations: the groups, the equal weights and metrics, the analysis rows."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import t2s_ray.analysis as an
from t2s_ray.data import build_dataset
from t2s_ray.outputs import shared_key
from t2s_ray.t2s.ablations import Ablation, resolve, training_groups
from t2s_ray.t2s.config import Config, trajectory_fields
from t2s_ray.t2s.evaluation import evaluate
from t2s_ray.t2s.sweep import BundledSweepSpec
from t2s_ray.t2s.training import TrainingError, build_state, member_state, next_batch, train_step, validation_loss
from tests.helpers import TINY_EVAL, fake_evaluator_fn, final_row, make_trial, train_row

STEPS = 6


def configs(names, extra=(), user=None):
    return {n: resolve(n, "smoke", 0, list(extra), extra_ablations=user) for n in names}


def test_evaluation_only_fields_come_from_the_schema():
    marked = {f.name for f in dataclasses.fields(Config) if f.metadata.get("trajectory", True) is False}
    assert marked == {"ablation", "ema", "eval"}
    d = trajectory_fields(resolve("baseline"))
    assert "ema" not in d and "eval" not in d and "training" in d and "text_encoder" in d


def test_groups_of_the_seed_ablations():
    groups = training_groups(configs(["baseline", "text_finetuned", "no_ema"]))
    assert [(g.trainer, g.members) for g in groups] == [
        ("baseline", ("baseline", "no_ema")),
        ("text_finetuned", ("text_finetuned",)),
    ]
    assert groups[0].others == ("no_ema",)
    # the trainer keeps the EMA, whichever comes first
    assert training_groups(configs(["no_ema", "baseline"]))[0].trainer == "baseline"
    assert len(training_groups(configs(["baseline", "text_finetuned", "no_ema"]), share=False)) == 3


def test_a_training_field_or_a_second_ema_setting_splits_a_group():
    user = {
        "slow_ema": Ablation("slow_ema", "other decay", {"ema": {"decay": 0.99}}),
        "more_steps_eval": Ablation("more_steps_eval", "eval only", {"eval": {"sampling_steps": 20}}),
        "lr_up": Ablation("lr_up", "lr", {"training": {"lr": 1e-3}}),
    }
    groups = training_groups(configs(["baseline", "no_ema", "slow_ema", "more_steps_eval", "lr_up"], user=user))
    assert [g.members for g in groups] == [("baseline", "no_ema", "more_steps_eval"), ("slow_ema",), ("lr_up",)]


def test_sweep_plan_and_param_space_name_the_shared_ablations(tmp_path):
    spec = BundledSweepSpec(ablations=("baseline", "text_finetuned", "no_ema"), seeds=2, storage=tmp_path, name="x")
    plan = "\n".join(spec.plan_lines())
    assert "3 ablation(s) x 2 seed(s) = 4 trial(s)" in plan and "baseline + no_ema: trained once" in plan
    space = spec.param_space()
    assert space["ablation"] == {"grid_search": ["baseline", "text_finetuned"]}
    assert space["shared"] == {"baseline": ["no_ema"]}
    off = BundledSweepSpec(ablations=spec.ablations, seeds=2, storage=tmp_path, name="y", share_training=False)
    assert off.param_space()["ablation"] == {"grid_search": ["baseline", "text_finetuned", "no_ema"]}
    assert "shared" not in off.param_space() and "6 trial(s)" in off.plan_lines()[0]


def _trained(cfg, text_encoder):
    state = build_state(cfg, text_encoder=text_encoder)
    data = build_dataset(cfg.data, "train")
    losses = [train_step(state, *next_batch(state, data)).item() for _ in range(STEPS)]
    return state, losses


def _eval(state, monkeypatch):
    import t2s_ray.t2s.evaluation as ev

    monkeypatch.setattr(
        ev,
        "clip_features",
        lambda m, v: (
            m.features(torch.from_numpy(np.ascontiguousarray(v)).permute(0, 4, 1, 2, 3).float()).double().numpy()
        ),
    )
    monkeypatch.setattr(ev, "recognise", lambda m, v: [(0,)] * len(v))
    val = build_dataset(state.cfg.data, "val")
    result = evaluate(state, val, evaluator_fn=fake_evaluator_fn, lpips=(None, "off in this test"))
    metrics = {k: v for k, v in result.metrics.items() if not k.startswith("eval/inference")}  # wall time
    return metrics | {"val_loss": validation_loss(state, val)}, result.videos


def test_no_ema_trained_alone_equals_the_shared_runs_raw_weights(tmp_path, text_encoder, monkeypatch):
    extra = [*TINY_EVAL, f"data.cache_dir={tmp_path}", "ema.decay=0.9"]  # a fast EMA: its weights differ visibly
    base_cfg = resolve("baseline", "smoke", 0, extra)
    alone_cfg = resolve("no_ema", "smoke", 0, extra)
    shared, shared_losses = _trained(base_cfg, text_encoder)
    alone, alone_losses = _trained(alone_cfg, text_encoder)
    assert shared_losses == alone_losses
    raw, own = shared.model.state_dict(), alone.model.state_dict()
    assert raw.keys() == own.keys() and all(torch.equal(raw[k], own[k]) for k in raw)
    as_member = member_state(shared, alone_cfg)
    assert as_member.ema is None and as_member.cfg.ablation == "no_ema" and as_member.model is shared.model
    member_metrics, member_videos = _eval(as_member, monkeypatch)
    alone_metrics, alone_videos = _eval(alone, monkeypatch)
    assert np.array_equal(member_videos, alone_videos)
    assert member_metrics.keys() == alone_metrics.keys()
    for k, v in alone_metrics.items():
        same = v == member_metrics[k] or (isinstance(v, float) and math.isnan(v) and math.isnan(member_metrics[k]))
        assert same, (k, v, member_metrics[k])
    # and the shared run's own (EMA) evaluation is a different model: the sharing is not a copy of one row
    ema_metrics, ema_videos = _eval(shared, monkeypatch)
    assert not np.array_equal(ema_videos, alone_videos)


def test_member_state_refuses_a_config_that_trains_other_weights(tmp_path, text_encoder):
    extra = [*TINY_EVAL, f"data.cache_dir={tmp_path}"]
    state = build_state(resolve("baseline", "smoke", 0, extra), text_encoder=text_encoder)
    with pytest.raises(TrainingError, match="differ in fields that change the trained weights"):
        member_state(state, resolve("text_finetuned", "smoke", 0, extra))
    with pytest.raises(TrainingError, match="needs EMA"):
        member_state(state, resolve("baseline", "smoke", 0, [*extra, "ema.decay=0.5"]))


def test_analysis_shows_one_row_per_ablation_and_trained_with(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    for seed in range(3):
        final = final_row(10.0 + seed, fvd=10.0 + seed, lpips=0.2)
        final |= {
            shared_key("no_ema", "eval/fvd_synthsign"): 20.0 + seed,
            shared_key("no_ema", "eval/lpips"): 0.3,
            shared_key("no_ema", "eval/fvd"): math.nan,
            shared_key("no_ema", "eval/fvd_status"): "no I3D weights",
            shared_key("no_ema", "train_time_h"): 0.5,
            shared_key("no_ema", "val_loss"): 0.7,
        }
        d = make_trial(
            exp,
            f"baseline_seed{seed}_{seed:05d}",
            "baseline",
            seed,
            [train_row(5, 1.0 + seed, loss=2.0), final],
            trial_id=f"t_{seed:05d}",
        )
        params = json.loads((d / "params.json").read_text())
        (d / "params.json").write_text(json.dumps(params | {"shared": {"baseline": ["no_ema"]}}))
    trials = an.select_trials(an.load_trials(exp))
    assert sorted(trials["ablation"]) == ["baseline"] * 3 + ["no_ema"] * 3
    assert set(trials["trained_with"]) == {"baseline"}
    assert not any(c.startswith("shared/") for c in trials.columns)
    no_ema = trials[trials["ablation"] == "no_ema"].sort_values("seed")
    assert list(no_ema["eval/fvd_synthsign"]) == [20.0, 21.0, 22.0] and list(no_ema["val_loss"]) == [0.7] * 3
    assert set(no_ema["eval/fvd_status"]) == {"no I3D weights"}
    summary = an.summarize(trials)
    assert list(summary["ablation"]) == ["baseline", "no_ema"] and list(summary["trained_with"]) == ["baseline"] * 2
    stats = an.comparison_stats(trials)
    row = stats[(stats["ablation"] == "no_ema") & (stats["metric"] == "eval/fvd_synthsign")].iloc[0]
    assert row["diff"] == pytest.approx(10.0) and row["n"] == 3
    history = an.load_history(exp)
    assert sorted(history["ablation"].unique()) == ["baseline", "no_ema"]  # the shared curve is both curves
