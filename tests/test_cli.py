"""The CLI through typer's CliRunner: output and error paths."""

import json

from typer.testing import CliRunner

from t2s_ray.cli import app

runner = CliRunner()


def test_config_shows_difference_from_baseline():
    r = runner.invoke(app, ["config", "text_finetuned", "--scale", "smoke"])
    assert r.exit_code == 0, r.output
    assert "* text_encoder.freeze" in r.output
    assert "(baseline: True)" in r.output
    assert "1 key(s) differ from baseline: text_encoder.freeze" in r.output


def test_config_json_is_the_resolved_config():
    r = runner.invoke(app, ["config", "no_ema", "--json", "--set", "training.steps=3"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["ema"]["enabled"] is False and d["training"]["steps"] == 3


def test_config_unknown_ablation_is_one_line_exit_2():
    r = runner.invoke(app, ["config", "nope"])
    assert r.exit_code == 2
    assert "unknown ablation 'nope'" in r.output and "baseline" in r.output
    assert "Traceback" not in r.output


def test_config_bad_set_names_the_key():
    r = runner.invoke(app, ["config", "baseline", "--set", "training.lrr=1"])
    assert r.exit_code == 2
    assert "training.lrr" in r.output and "Traceback" not in r.output
