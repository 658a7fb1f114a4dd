"""Your own model in the study: `Study` checks what a user writes, `Session` logs and checkpoints, `AblationRunner`
runs from separate processes form one experiment, and the example study sweeps through Ray, survives a SIGKILL
and gets paired verdicts and a report."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from t2s_ray import Session, Study, StudyError
from t2s_ray.checkpoint import list_checkpoints, read_checkpoint
from t2s_ray.study import load_study
from tests.helpers import run_process_tree

REPO = Path(__file__).parents[1]


@dataclasses.dataclass(frozen=True)
class Inner:
    freeze: bool = True
    lr: float = 1e-3


@dataclasses.dataclass(frozen=True)
class Cfg:
    steps: int = 4
    width: int = 8
    text: Inner = dataclasses.field(default_factory=Inner)


def _train(cfg, session):
    session.log_step(1, 0.5)
    session.log_evaluation({"eval/score": 1.0})


def _study(**kw) -> Study:
    args = {"name": "t", "config": Cfg, "train": _train,
            "ablations": {"baseline": {}, "text_finetuned": {"text.freeze": False}}} | kw
    return Study(**args)


# --- what a user writes is checked, with a line that names the fix -----------------------------------------------

@pytest.mark.parametrize("kw, message", [
    ({"config": dict}, "config must be a frozen dataclass type"),
    ({"train": lambda cfg: None}, "must take two arguments, train(cfg, session)"),
    ({"ablations": {"text_finetuned": {"text.freeze": False}}}, "ablations lack the baseline 'baseline'"),
    ({"ablations": {"baseline": {}, "same": {"text.lr": 1e-3}}}, "ablation 'same' resolves to the same config"),
    ({"ablations": {"baseline": {}, "bad": {"text.nope": 1}}}, "ablation 'bad': --set 'text.nope=1': unknown key"),
    ({"ablations": {"baseline": {}, "bad": {"steps": "many"}}}, "steps: expected an integer, got 'many'"),
    ({"ablations": {"baseline": {}, "bad": {"width": 2.5}}}, "width: expected an integer, got 2.5"),
    ({"metrics": {"eval/score": "up"}}, "direction 'up'; use one of ('lower', 'higher', 'real')"),
])
def test_a_bad_study_is_one_line_naming_the_fix(kw, message):
    with pytest.raises(StudyError) as e:
        _study(**kw)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_resolve_layers_defaults_scale_ablation_then_set():
    s = _study(scales={"quick": {"steps": 2}, "long": {"steps": "100"}})
    assert s.resolve("baseline", "quick") == Cfg(steps=2)
    assert s.resolve("text_finetuned", "long", ["text.lr=0.5"]) == Cfg(steps=100, text=Inner(False, 0.5))
    with pytest.raises(StudyError, match="no scale 'huge'; its scales: quick, long"):
        s.resolve("baseline", "huge")
    with pytest.raises(StudyError, match="no ablation 'nope'"):
        s.resolve("nope")
    with pytest.raises(StudyError, match="unknown key 'text.nope'"):
        s.resolve("baseline", "quick", ["text.nope=1"])


def test_load_study_names_what_is_wrong(tmp_path, monkeypatch):
    (tmp_path / "mystudy.py").write_text("from tests.test_study import _study\nstudy = _study()\nnot_one = 3\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(REPO))
    assert load_study("mystudy:study").name == "t"
    for ref, message in [("mystudy", "expected package.module:attr"), ("nosuch.mod:study", "cannot import"),
                         ("mystudy:other", "has no attribute 'other'"), ("mystudy:not_one", "not a t2s_ray.Study")]:
        with pytest.raises(StudyError, match=message):
            load_study(ref)


# --- Session ------------------------------------------------------------------------------------------------------

class _Sink:
    def __init__(self):
        self.reports, self.saved = [], []

    def report(self, metrics):
        self.reports.append(metrics)

    def save(self, state, metrics):
        self.saved.append((state, metrics))

    def restore(self):
        return self.saved[-1][0] if self.saved else None


def test_log_step_writes_every_call_and_reports_every_k(tmp_path):
    sink = _Sink()
    s = Session(ablation="baseline", seed=1, device="cpu", trial_dir=tmp_path, sink=sink, report_every=3)
    for step in range(1, 8):
        s.log_step(step, 1.0 / step, lr=0.1)
    rows = pd.read_csv(tmp_path / "training_metrics.csv")
    assert list(rows["step"]) == list(range(1, 8)) and rows["lr"].eq(0.1).all()
    assert len((tmp_path / "training_metrics.jsonl").read_text().splitlines()) == 7
    assert [r["step"] for r in sink.reports] == [3, 6]
    assert list(tmp_path.glob("events.out.tfevents.*.steps"))
    with pytest.raises(StudyError, match="train returned without session.log_evaluation"):
        s.final_metrics()
    s.checkpoint({"w": torch.ones(2), "step": 7})
    assert s.restore()["step"] == 7
    s.log_evaluation({"eval/score": np.float32(0.25), "eval/score_status": "ok"})
    final = s.final_metrics()
    assert final["final"] == 1 and final["final_loss"] == pytest.approx(1 / 7) and final["eval/score"] == 0.25
    with pytest.raises(StudyError, match="loss became nan at step 8"):
        s.log_step(8, float("nan"))
    with pytest.raises(StudyError, match="expected a dict"):
        s.checkpoint([1, 2])
    s.close()


def test_session_evaluate_scores_user_clips_and_says_why_a_metric_is_nan(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 256, (4, 6, 16, 16, 3), dtype=np.uint8)
    s = Session(ablation="baseline", seed=0, device="cpu", trial_dir=tmp_path, sink=_Sink(), report_every=1)
    m = s.evaluate(real, real, ["a"] * 4)
    assert m["eval/motion_ratio"] == pytest.approx(1.0)
    assert m["eval/temporal_consistency_ssim"] == pytest.approx(m["eval/temporal_consistency_ssim_real"])
    assert np.isnan(m["eval/fvd"]) and "no I3D detector" in m["eval/fvd_status"]
    frozen = np.repeat(real[:, :1], 6, axis=1)
    assert s.evaluate(frozen, real)["eval/motion_ratio"] == 0.0
    with pytest.raises(ValueError, match="expected uint8 clips"):
        s.evaluate(real.astype(np.float32), real)
    s.log_samples(real, ["a", "b", "c", "d"])
    assert (tmp_path / "samples.gif").is_file() and np.load(tmp_path / "samples.npz")["fake"].shape == real.shape


# --- AblationRunner: the seed's pattern, nine separate processes into one folder ----------------------------------

RUNNER_SCRIPT = """
import sys
from examples.own_model.study import study, train
from t2s_ray import AblationRunner
ablation, seed, root = sys.argv[1], int(sys.argv[2]), sys.argv[3]
runner = AblationRunner(ablation, root, experiment_scale="tiny", seed=seed, study=study)
cfg = study.resolve(ablation, "tiny", [f"cache_dir={root}/cache"])
train(cfg, runner.session)
runner.save_results()
runner.save_results()  # idempotent
"""


@pytest.mark.slow
def test_nine_hand_launched_ablation_runners_are_one_experiment_with_verdicts(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", RUNNER_SCRIPT, "baseline", "0", str(tmp_path)], env=env, check=True,
                   timeout=300)  # builds the data cache once
    procs = [subprocess.Popen([sys.executable, "-c", RUNNER_SCRIPT, a, str(s), str(tmp_path)], env=env)
             for a in ("baseline", "text_finetuned", "no_ema") for s in range(3) if (a, s) != ("baseline", 0)]
    assert [p.wait(300) for p in procs] == [0] * 8
    rows = [json.loads(line) for line in (tmp_path / "no_ema_seed2" / "result.json").read_text().splitlines()]
    assert sum(1 for r in rows if r.get("final")) == 1
    r = subprocess.run([sys.executable, "-m", "t2s_ray.cli", "analyze", str(tmp_path)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    table = pd.read_csv(tmp_path / "comparison_stats.csv")
    mse = table[table["metric"] == "eval/pixel_mse"].set_index("ablation")
    assert set(mse.index) == {"text_finetuned", "no_ema"} and (mse["n"] == 3).all()
    assert mse["verdict"].notna().all()
    assert "eval/pixel_mse ↓" in r.stdout  # the study's own metric leads the quality table, ranked


# --- the example study through Ray: 3 ablations x 3 seeds, one trial SIGKILLed mid-run ---------------------------

STUDY_DRIVER = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
         runtime_env={"worker_process_setup_hook": "tests.faults.cut_checkpoint_copy"})
from t2s_ray.study_sweep import StudySweepSpec
from t2s_ray.sweep import run_sweep
o = run_sweep(StudySweepSpec(study="examples.own_model.study:study", ablations=tuple(sys.argv[3].split(",")),
                             seeds=int(sys.argv[4]), scale="tiny", gpus=0, cpus_per_trial=0.5, storage=sys.argv[1],
                             name=sys.argv[2], quiet=True, max_failures=2, overrides=tuple(sys.argv[5:])))
print(f"swept: {o.num_terminated} finished, {o.num_errors} errored")
"""


def _final_state(trial: Path) -> dict:
    state, _ = read_checkpoint(list_checkpoints(trial)[-1])
    assert state["step"] == 40
    return state


@pytest.mark.slow
def test_the_example_study_sweeps_through_ray_survives_a_sigkill_and_gets_verdicts(tmp_path):
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(REPO),
           "T2S_FAULT_INDEX": "2", "T2S_FAULT_FRACTION": "0.5", "T2S_FAULT_THEN": "die",
           "T2S_FAULT_MARKER": str(tmp_path / "cut.marker"), "T2S_FAULT_TRIAL": "baseline_seed0_"}
    cache = f"cache_dir={tmp_path / 'cache'}"
    r = run_process_tree([sys.executable, "-c", STUDY_DRIVER, str(tmp_path), "own", "baseline,text_finetuned,no_ema",
                          "3", cache], 900, env=env, cwd=REPO)
    assert r.returncode == 0 and "swept: 9 finished, 0 errored" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "cut.marker").exists(), "no trial was killed"
    exp = tmp_path / "own"
    (killed,) = exp.glob("baseline_seed0_*")
    assert (killed / "checkpoint_000002.corrupt").is_dir()  # its third checkpoint was cut mid-copy, then resumed

    clean = {k: v for k, v in env.items() if not k.startswith("T2S_FAULT_")}
    r = run_process_tree([sys.executable, "-c", STUDY_DRIVER, str(tmp_path), "ref", "baseline", "1", cache], 600,
                         env=clean, cwd=REPO)
    assert r.returncode == 0 and "swept: 1 finished, 0 errored" in r.stdout, r.stderr[-3000:]
    (reference,) = (tmp_path / "ref").glob("baseline_seed0_*")
    a, b = _final_state(killed), _final_state(reference)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part

    def final_loss(trial):
        return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()][-1]["final_loss"]

    assert final_loss(killed) == final_loss(reference)
    r = subprocess.run([sys.executable, "-m", "t2s_ray.cli", "analyze", str(exp)], capture_output=True, text=True,
                       timeout=300, env=clean)
    assert r.returncode == 0, r.stderr[-2000:]
    stats = pd.read_csv(exp / "comparison_stats.csv")
    mse = stats[stats["metric"] == "eval/pixel_mse"].set_index("ablation")
    assert set(mse.index) == {"text_finetuned", "no_ema"} and (mse["n"] == 3).all() and mse["verdict"].notna().all()
    html = (exp / "report.html").read_text()
    assert "data:image/gif;base64," in html and "text_finetuned" in html


# --- the CLI with --study -----------------------------------------------------------------------------------------

def test_config_and_train_take_a_study_and_bad_input_is_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from t2s_ray.cli import app

    runner = CliRunner()
    monkeypatch.chdir(REPO)
    ref = "examples.own_model.study:study"
    r = runner.invoke(app, ["config", "text_finetuned", "--study", ref, "--scale", "tiny"])
    assert r.exit_code == 0 and "1 key(s) differ from baseline: text.freeze" in r.output, r.output
    for args, message in [(["config", "baseline", "--study", ref, "--set", "text.nope=1"], "unknown key 'text.nope'"),
                          (["config", "baseline", "--study", "examples.own_model.study:nope"], "no attribute 'nope'"),
                          (["sweep", "--study", ref, "--scale", "huge", "--gpus", "0"], "has the scales cpu, tiny"),
                          (["train", "zzz", "--study", ref], "has no ablation 'zzz'")]:
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    out = tmp_path / "run"
    r = runner.invoke(app, ["train", "no_ema", "--study", ref, "--scale", "tiny", "--out", str(out), "--set",
                            f"cache_dir={tmp_path / 'cache'}", "--set", "train.steps=12"])
    assert r.exit_code == 0, r.output
    assert "eval/pixel_mse = " in r.output
    final = json.loads((out / "result.json").read_text().splitlines()[-1])
    assert final["final"] == 1 and final["step"] == 12 and list_checkpoints(out / "checkpoints")
    assert json.loads((out / "params.json").read_text())["ablation"] == "no_ema"
