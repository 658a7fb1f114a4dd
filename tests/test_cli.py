"""The CLI through typer's CliRunner: output and error paths."""

import json
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

import t2s_ray.cli as cli
from t2s_ray.analysis import FORMATS
from t2s_ray.cli import app
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.config import SCALES
from tests.helpers import set_args, tiny_overrides

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


TINY = tiny_overrides(
    "data.train_clips=8",
    "training.checkpoint_every=2",
    drop=("training.warmup_steps", "eval.evaluator_clips", "eval.evaluator_epochs"),
)


def _sets(extra=()):
    return set_args([*TINY, *extra])


def test_train_then_evaluate_through_the_cli(tmp_path, monkeypatch):
    import t2s_ray.t2s.evaluation as evaluation
    from t2s_ray.t2s.gloss_evaluator import EvaluatorUnavailable

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
    r = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "run" / "checkpoints" / "checkpoint_000004"),
            "--n",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
    )
    assert r.exit_code == 0, r.output
    metrics = json.loads(out.read_text())
    assert metrics["step"] == 4 and metrics["eval/num_videos"] == 3
    assert metrics["eval/fvd_status"].startswith("no I3D detector")
    assert "eval/motion_ratio" in r.output


def test_train_cli_error_paths(tmp_path):
    r = runner.invoke(app, ["train", "nope"])
    assert r.exit_code == 2 and "unknown ablation 'nope'" in r.output
    r = runner.invoke(app, ["train", "baseline", "--steps", "0"])
    assert r.exit_code == 2 and "--steps" in r.output
    r = runner.invoke(app, ["train", "baseline", "--set", "training.lr=-1"])
    assert r.exit_code == 2 and "training.lr" in r.output
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"seed": 5}))
    r = runner.invoke(app, ["train", "baseline", "--out", str(tmp_path / "run"), *_sets()])
    assert r.exit_code == 2 and "holds a run with a different config" in r.output
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == {"seed": 5}  # untouched
    assert "Traceback" not in r.output


def test_evaluate_cli_on_a_missing_checkpoint(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "meta.json" in r.output and "Traceback" not in r.output


def test_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output == f"t2s-ray {version('t2s-ray')}\n"


def test_choices_come_from_their_registries():
    assert [s.value for s in cli.Scale] == list(SCALES)
    assert tuple(f.value for f in cli.Fmt) == FORMATS
    for d in cli.Device:
        assert resolve("baseline", "smoke", 0, [f"device={d.value}"]).device == d.value


def _one_error_line(r) -> str:
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    return lines[0]


@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", "..", ".", ""])
def test_sweep_name_must_be_one_folder_name(tmp_path, monkeypatch, name):
    monkeypatch.setattr(cli, "run_sweep", lambda *a, **k: pytest.fail("the sweep started"))
    storage = tmp_path / "a" / "storage"
    r = runner.invoke(app, ["sweep", "--gpus", "0", "--storage", str(storage), "--name", name])
    assert r.exit_code == 2
    assert "--name" in _one_error_line(r) and "single folder name" in r.output
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "x").exists()


@pytest.mark.parametrize("where", ["/proc/x", "a-file/x"])
def test_train_out_must_be_writable(tmp_path, monkeypatch, where):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["train", "baseline", "--scale", "smoke", "--out", where])
    assert r.exit_code == 2
    line = _one_error_line(r)
    assert where.split("/")[-2] in line and "choose another --out" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_train_ctrl_c_exits_130(tmp_path, monkeypatch):
    import t2s_ray.t2s.in_process

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(t2s_ray.t2s.in_process, "train_local", interrupted)
    r = runner.invoke(app, ["train", "baseline", "--out", str(tmp_path / "run")])
    assert r.exit_code == 130 and "run the same command again" in r.output


def test_analyze_on_a_file_says_what_it_is(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("a,b\n")
    r = runner.invoke(app, ["analyze", str(f)])
    assert r.exit_code == 2
    assert "is a file, expected an experiment folder written by t2s-ray sweep" in _one_error_line(r)
    assert list(tmp_path.iterdir()) == [f] and f.read_text() == "a,b\n"


def test_evaluate_device_is_a_choice(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path), "--device", "bogus"])
    assert r.exit_code == 2 and "--device" in r.output and "bogus" in r.output
