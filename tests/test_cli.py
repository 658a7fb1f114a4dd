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


TINY = ["data.frames=4", "data.height=16", "data.width=16", "data.train_clips=8", "data.eval_clips=4",
        "training.batch_size=2", "training.steps=4", "training.report_every=2", "training.checkpoint_every=2",
        "eval.num_videos=2", "eval.sampling_steps=2", "device=cpu"]


def _sets(extra=()):
    return [a for s in [*TINY, *extra] for a in ("--set", s)]


def test_train_then_evaluate_through_the_cli(tmp_path, monkeypatch):
    import t2s_ray.evaluation as evaluation
    from t2s_ray.evaluator import EvaluatorUnavailable

    def no_evaluator(eval_cfg):
        def fn(data_cfg, device):
            raise EvaluatorUnavailable("skipped in this test")
        return fn

    monkeypatch.setattr(evaluation, "default_evaluator_fn", no_evaluator)
    sets = _sets([f"data.cache_dir={tmp_path / 'cache'}"])
    r = runner.invoke(app, ["train", "baseline", "--out", str(tmp_path / "run"), *sets])
    assert r.exit_code == 0, r.output
    assert "step 4/4" in r.output and "0.39M trainable" in r.output
    r = runner.invoke(app, ["train", "baseline", "--out", str(tmp_path / "run"), *sets])
    assert r.exit_code == 0 and "nothing to do: already at step 4" in r.output
    out = tmp_path / "eval.json"
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run" / "checkpoints" / "checkpoint_000004"),
                            "--n", "3", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    metrics = json.loads(out.read_text())
    assert metrics["step"] == 4 and metrics["eval/num_videos"] == 3
    assert metrics["eval/fvd_status"].startswith("no I3D detector")
    assert "eval/motion_ratio" in r.output


def test_train_cli_error_paths(tmp_path):
    r = runner.invoke(app, ["train", "nope"])
    assert r.exit_code == 2 and "unknown ablation 'nope'" in r.output
    r = runner.invoke(app, ["train", "baseline", "--steps", "0"])
    assert r.exit_code == 2 and "--steps 0" in r.output
    r = runner.invoke(app, ["train", "baseline", "--set", "training.lr=-1"])
    assert r.exit_code == 2 and "training.lr" in r.output
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"seed": 5}))
    r = runner.invoke(app, ["train", "baseline", "--out", str(tmp_path / "run"), *_sets()])
    assert r.exit_code == 1 and "holds a run with a different config" in r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"seed": 5}  # untouched
    assert "Traceback" not in r.output


def test_evaluate_cli_on_a_missing_checkpoint(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "meta.json" in r.output and "Traceback" not in r.output
