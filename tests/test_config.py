"""Config contract: round trips, strict overrides, validation, ablations as pure data."""

import json

import pytest

from t2s_ray.t2s.ablations import ABLATIONS, load_ablation_file, resolve
from t2s_ray.t2s.config import SCALES, Config, ConfigError, diff, parse_override


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("ablation", list(ABLATIONS))
def test_round_trip_every_ablation_and_scale(ablation, scale):
    cfg = resolve(ablation, scale, seed=3)
    back = Config.from_dict(json.loads(cfg.to_json()))
    assert back == cfg
    assert (back.ablation, back.scale, back.seed) == (ablation, scale, 3)


def test_ablations_differ_from_baseline_only_in_their_overrides():
    base = resolve("baseline", "smoke")
    assert diff(base, resolve("text_finetuned", "smoke")) == {"text_encoder.freeze": (True, False)}
    assert diff(base, resolve("no_ema", "smoke")) == {"ema.enabled": (True, False)}
    assert diff(base, resolve("dit_s", "smoke")) == {"model.size": ("dit-tiny", "dit-s")}


def test_precedence_defaults_scale_ablation_overrides():
    cfg = resolve("no_ema", "small", overrides=["training.steps=7", "ema.enabled=true"])
    assert cfg.training.steps == 7  # override beats scale
    assert cfg.ema.enabled is True  # override beats ablation
    assert cfg.model.size == SCALES["small"]["model"]["size"]
    assert cfg.text_encoder.max_length == Config().text_encoder.max_length  # default survives


def test_override_parses_by_field_type():
    assert parse_override("training.lr=1e-4") == {"training": {"lr": 1e-4}}
    assert parse_override("model.grad_checkpointing=yes") == {"model": {"grad_checkpointing": True}}
    assert parse_override("training.betas=0.9,0.95") == {"training": {"betas": [0.9, 0.95]}}
    assert parse_override("device=cpu") == {"device": "cpu"}


@pytest.mark.parametrize(
    "item, named",
    [
        ("training.lrr=1", "training.lrr"),
        ("trainin.lr=1", "trainin.lr"),
        ("training.lr=fast", "training.lr"),
        ("training.steps=2.5", "training.steps"),
        ("ema.enabled=maybe", "ema.enabled"),
        ("training=3", "training"),
        ("training.lr", "key.path=value"),
    ],
)
def test_bad_override_names_the_key(item, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        resolve("baseline", "smoke", overrides=[item])


@pytest.mark.parametrize(
    "item, key",
    [
        ("training.lr=0", "training.lr"),
        ("training.lr=-1", "training.lr"),
        ("training.batch_size=0", "training.batch_size"),
        ("training.steps=0", "training.steps"),
        ("data.frames=0", "data.frames"),
        ("ema.decay=1", "ema.decay"),
        ("ema.decay=0", "ema.decay"),
        ("model.size=dit-huge", "model.size"),
        ("diffusion.schedule=sqrt", "diffusion.schedule"),
        ("device=tpu", "device"),
        ("model.patch_size=5", "model.patch_size"),
    ],
)
def test_bad_values_are_rejected_with_key(item, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        resolve("baseline", "smoke", overrides=[item])


def test_from_dict_rejects_unknown_and_wrong_types():
    d = Config().to_dict()
    d["training"]["bogus"] = 1
    with pytest.raises(ConfigError, match="training.bogus"):
        Config.from_dict(d)
    d = Config().to_dict()
    d["training"]["steps"] = "10"
    with pytest.raises(ConfigError, match="training.steps"):
        Config.from_dict(d)


def test_unknown_ablation_and_scale_list_known_ones():
    with pytest.raises(ConfigError, match="baseline, text_finetuned, no_ema"):
        resolve("nope")
    with pytest.raises(ConfigError, match="smoke, small, full"):
        resolve("baseline", "huge")


def test_user_ablation_file(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(
        json.dumps({"eps_pred": {"description": "eps instead of v", "overrides": {"diffusion": {"prediction": "eps"}}}})
    )
    extra = load_ablation_file(f)
    cfg = resolve("eps_pred", "smoke", extra_ablations=extra)
    assert cfg.diffusion.prediction == "eps"
    f.write_text(json.dumps({"bad": {"description": "x", "overrides": {"diffusion": {"predictoin": "eps"}}}}))
    with pytest.raises(ConfigError, match="diffusion.predictoin"):
        load_ablation_file(f)
    f.write_text(json.dumps({"baseline": {"description": "x", "overrides": {}}}))
    with pytest.raises(ConfigError, match="shadows a built-in"):
        load_ablation_file(f)


def test_toml_ablation_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('[linear]\ndescription = "linear betas"\noverrides = { diffusion = { schedule = "linear" } }\n')
    assert resolve("linear", extra_ablations=load_ablation_file(f)).diffusion.schedule == "linear"
