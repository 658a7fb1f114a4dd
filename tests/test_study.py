"""Your own model in the study: `Study` checks what a user writes, `Session` logs and checkpoints, `AblationRunner`
runs from separate processes form one experiment, and the example study sweeps through Ray, survives a SIGKILL
and gets paired verdicts and a report."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from t2s_ray import Session, Study, StudyError
from t2s_ray.checkpoint import list_checkpoints, read_checkpoint
from t2s_ray.study import load_study
from tests.faults import fault_env
from tests.helpers import run_process_tree

REPO = Path(__file__).parents[1]


def _cli(*args: str):
    """`t2s-ray ARGS` in this process (typer's test runner): its result, printed text in `.output`."""
    from typer.testing import CliRunner

    from t2s_ray.cli import app

    return CliRunner().invoke(app, list(args))


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
    args = {
        "name": "t",
        "config": Cfg,
        "train": _train,
        "ablations": {"baseline": {}, "text_finetuned": {"text.freeze": False}},
    } | kw
    return Study(**args)


# --- what a user writes is checked, with a line that names the fix -----------------------------------------------


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"config": dict}, "config must be a frozen dataclass type"),
        ({"train": lambda cfg: None}, "must take two arguments, train(cfg, session)"),
        ({"ablations": {"text_finetuned": {"text.freeze": False}}}, "ablations lack the baseline 'baseline'"),
        ({"ablations": {"baseline": {}, "same": {"text.lr": 1e-3}}}, "ablation 'same' resolves to the same config"),
        ({"ablations": {"baseline": {}, "bad": {"text.nope": 1}}}, "ablation 'bad': --set 'text.nope=1': unknown key"),
        ({"ablations": {"baseline": {}, "bad": {"steps": "many"}}}, "steps: expected an integer, got 'many'"),
        ({"ablations": {"baseline": {}, "bad": {"width": 2.5}}}, "width: expected an integer, got 2.5"),
        ({"metrics": {"eval/score": "up"}}, "direction 'up'; use one of ('lower', 'higher', 'real')"),
    ],
)
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
    for ref, message in [
        ("mystudy", "expected package.module:attr"),
        ("nosuch.mod:study", "cannot import"),
        ("mystudy:other", "has no attribute 'other'"),
        ("mystudy:not_one", "not a t2s_ray.Study"),
    ]:
        with pytest.raises(StudyError, match=message):
            load_study(ref)


@dataclasses.dataclass(frozen=True)
class SharedCfg:
    steps: int = 3
    ema: bool = True
    guidance: float = 1.0
    lr: float = 0.1


def _shared_train(cfg, session):
    session.log_step(1, 1.0)
    session.log_step(2, 0.5)
    session.checkpoint({"w": torch.tensor([2.0]), "step": 2})


def _shared_evaluate(cfg, state, session):
    session.log_evaluation({"eval/score": float(state["w"]) * (10 if cfg.ema else 1) + cfg.guidance})


def _shared_study(**kw) -> Study:
    args = {
        "name": "s",
        "config": SharedCfg,
        "train": _shared_train,
        "evaluate": _shared_evaluate,
        "evaluation_only": ("ema", "guidance"),
        "steps": "steps",
        "ablations": {"baseline": {}, "no_ema": {"ema": False}, "fast": {"lr": 0.5}, "g2": {"guidance": 2.0}},
    }
    return Study(**(args | kw))


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"evaluate": None}, "evaluation_only ['ema', 'guidance'] needs evaluate(cfg, checkpoint_state, session)"),
        ({"evaluation_only": ("emma",)}, "evaluation_only 'emma': unknown key 'emma'"),
        ({"evaluation_only": "ema"}, "evaluation_only must be a tuple of field names, e.g. ('ema',)"),
        ({"evaluate": lambda cfg, state: None}, "must take three arguments, evaluate(cfg, checkpoint_state, session)"),
        ({"steps": "lr"}, "steps 'lr' must name an int field"),
        ({"steps": "nsteps"}, "steps 'nsteps': unknown key 'nsteps'"),
    ],
)
def test_shared_training_options_are_checked(kw, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        _shared_study(**kw)


def test_ablations_differing_only_in_evaluation_fields_train_once_and_are_each_scored(tmp_path):
    from t2s_ray.study import train_and_score

    study = _shared_study()
    configs = {a: study.resolve(a) for a in study.ablations}
    assert study.training_groups(configs) == [("baseline", ("baseline", "no_ema", "g2")), ("fast", ("fast",))]
    assert study.training_groups(configs, share=False) == [(a, (a,)) for a in configs]
    assert _study().training_groups({a: _study().resolve(a) for a in ("baseline", "text_finetuned")}) == [
        ("baseline", ("baseline",)),
        ("text_finetuned", ("text_finetuned",)),
    ]  # no evaluation_only: never shared
    session = Session(ablation="baseline", seed=0, device="cpu", trial_dir=tmp_path, sink=_Sink(), report_every=1)
    final = train_and_score(study, configs["baseline"], session, {m: configs[m] for m in ("no_ema", "g2")})
    # the trainer, which logged no evaluation, is scored by evaluate too; each member with its own config
    assert final["eval/score"] == 21.0 and final["shared/no_ema/eval/score"] == 3.0
    assert final["shared/g2/eval/score"] == 22.0 and final["final_loss"] == 0.5

    def no_final_checkpoint(cfg, session):
        session.log_step(1, 1.0)
        session.checkpoint({"w": torch.tensor([1.0])})
        session.log_step(2, 0.5)

    late = _shared_study(train=no_final_checkpoint)
    with pytest.raises(StudyError, match=r"end train with session.checkpoint\(state\) after the last"):
        train_and_score(
            late,
            configs["baseline"],
            Session(ablation="baseline", seed=0, device="cpu", trial_dir=tmp_path / "b", sink=_Sink(), report_every=1),
            {"no_ema": configs["no_ema"]},
        )


def test_a_study_sweep_shares_training_takes_a_grid_and_checks_its_values(tmp_path, monkeypatch):
    from t2s_ray.sweep import SweepError
    from t2s_ray.sweep.study import StudySweepSpec

    monkeypatch.setattr("t2s_ray.sweep.study.load_study", lambda ref: _shared_study())
    monkeypatch.setattr("t2s_ray.sweep.study.study_root", lambda ref: tmp_path)
    spec = StudySweepSpec(study="x:y", storage=tmp_path, name="e", gpus=0, grid=("lr=0.1,0.2",))
    space = spec.param_space()
    assert space["ablation"]["grid_search"] == ["baseline", "fast"]
    assert space["shared"] == {"baseline": ["no_ema", "g2"]}
    assert space["grid"] == {"lr": {"grid_search": [0.1, 0.2]}}
    lines = spec.plan_lines()
    assert lines[0].endswith("4 ablation(s) x 3 seed(s) x 2 lr = 12 trial(s) at scale default"), lines
    assert "baseline + no_ema + g2: trained once (baseline's config; they differ only in ema, guidance)" in lines[2]
    assert spec.validate(0) == []
    assert StudySweepSpec(study="x:y", storage=tmp_path, name="e", gpus=0, share_training=False).param_space()[
        "ablation"
    ]["grid_search"] == ["baseline", "no_ema", "fast", "g2"]
    for grid, message in [
        (("lr=0.1,fast",), "lr: expected a number, got 'fast'"),
        (("nope=1,2",), "unknown key 'nope'"),
        (("lr=0.1",), "one value is not an axis"),
    ]:
        with pytest.raises(SweepError, match=re.escape(message)):
            StudySweepSpec(study="x:y", storage=tmp_path, name="e", gpus=0, grid=grid).validate(0)


def test_dry_run_probes_the_users_train_and_estimates_the_sweep(tmp_path, monkeypatch):
    from t2s_ray.sweep import SweepError
    from t2s_ray.sweep import dry_run as study_dry_run
    from t2s_ray.sweep.study import StudySweepSpec

    def slow_train(cfg, session):
        for step in range(1, 100):
            time.sleep(0.01)
            session.log_step(step, 1.0)
        raise AssertionError("the probe stops train inside log_step")

    monkeypatch.setattr("t2s_ray.sweep.study.load_study", lambda ref: _shared_study(train=slow_train))
    monkeypatch.setattr("t2s_ray.sweep.study.study_root", lambda ref: tmp_path)
    lines: list[str] = []
    study_dry_run(StudySweepSpec(study="x:y", storage=tmp_path, name="e", gpus=0), say=lines.append)
    text = "\n".join(lines)
    assert "probing each training group's train for 3 step(s)" in text
    (row,) = [line for line in lines if line.startswith("baseline + no_ema + g2")]
    assert 0.009 < float(row.split()[6]) < 0.5, row  # s/step: the 10 ms sleep
    assert "estimate: 6 trial(s)" in text and not (tmp_path / "e").exists()

    def broken(cfg, session):
        raise KeyError("my_field")

    monkeypatch.setattr("t2s_ray.sweep.study.load_study", lambda ref: _shared_study(train=broken, steps=None))
    with pytest.raises(SweepError, match="train of ablation 'baseline' raised KeyError: 'my_field'"):
        study_dry_run(StudySweepSpec(study="x:y", storage=tmp_path, name="f", gpus=0), say=lines.append)


# --- Session ------------------------------------------------------------------------------------------------------


class _Sink:
    def __init__(self):
        self.reports, self.saved = [], []

    def report(self, metrics):
        self.reports.append(metrics)

    def save(self, state, metrics, meta=None):
        self.saved.append((state, metrics))

    def restore(self):
        return self.saved[-1] if self.saved else None


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
    with pytest.raises(StudyError, match="expected a dict of tensors and plain values or a folder"):
        s.checkpoint([1, 2])
    with pytest.raises(StudyError, match="is not a folder"):
        s.checkpoint(tmp_path / "nowhere")
    s.close()


def _folder_session(folder: Path, sink=None) -> Session:
    from t2s_ray.ablation_runner import FolderSink

    return Session(
        ablation="baseline",
        seed=0,
        device="cpu",
        trial_dir=folder,
        sink=sink or FolderSink(folder, "baseline seed 0", {}),
        report_every=2,
    )


def test_a_trial_restored_at_its_last_step_reports_the_same_final_loss(tmp_path):
    s = _folder_session(tmp_path)
    for step in (1, 2, 3):
        s.log_step(step, 1.0 / step)
    s.checkpoint({"w": torch.full((2,), 3.0), "step": 3})
    s.log_evaluation({"eval/score": 1.0})
    straight = s.final_metrics()
    s.close()
    again = _folder_session(tmp_path)  # the process died after the last checkpoint: nothing left to train
    assert again.restore()["step"] == 3
    again.log_evaluation({"eval/score": 1.0})
    assert again.final_metrics()["final_loss"] == straight["final_loss"] == pytest.approx(1 / 3)
    assert again.final_metrics()["step"] == 3
    again.close()


def test_a_folder_checkpoint_comes_back_as_a_folder_and_a_damaged_one_is_set_aside(tmp_path, caplog):
    own = tmp_path / "own_format"
    (own / "sub").mkdir(parents=True)
    (own / "weights.bin").write_bytes(b"\x01" * 100)
    (own / "sub" / "config.json").write_text('{"a": 1}')
    trial = tmp_path / "trial"
    s = _folder_session(trial)
    s.log_step(1, 0.5)
    s.checkpoint(own)
    (own / "weights.bin").write_bytes(b"\x02" * 100)  # the user's folder changes after: the checkpoint does not
    s.log_step(2, 0.25)
    s.checkpoint(str(own))
    s.close()
    restored = _folder_session(trial).restore()
    assert isinstance(restored, Path) and restored == trial / "restored_checkpoint"
    assert (restored / "weights.bin").read_bytes() == b"\x02" * 100
    assert (restored / "sub" / "config.json").read_text() == '{"a": 1}'
    # a file of the newest checkpoint damaged on disk: it is set aside and the one before comes back
    newest = trial / "checkpoints" / "checkpoint_000002"
    (newest / "files" / "weights.bin").write_bytes(b"\x03" * 100)
    again = _folder_session(trial)
    restored = again.restore()
    assert (restored / "weights.bin").read_bytes() == b"\x01" * 100
    assert (trial / "checkpoints" / "checkpoint_000002.corrupt").is_dir()
    assert "files/weights.bin is corrupt (checksum mismatch)" in caplog.text
    assert again._last["step"] == 1  # the metrics of the step it came from


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


def test_a_checkpoint_step_is_one_report_with_its_meta_status_strings_and_the_sampler_step(tmp_path):
    """A report due at a log_step goes with the checkpoint that follows (one row per step, not two); `<x>_status`
    strings pass; meta lands in meta.json; at_step reaches the memory sampler; a reserved meta key is refused."""
    from t2s_ray.checkpoint import read_meta

    sink, at = _Sink(), []
    s = Session(
        ablation="baseline", seed=0, device="cpu", trial_dir=tmp_path, sink=sink, report_every=2, progress=at.append
    )
    s.log_step(1, 1.0)
    s.at_step(2)
    s.log_step(2, 0.5, **{"perf/mfu": float("nan"), "perf/mfu_status": "CPU: no peak FLOP/s"})
    s.checkpoint({"w": torch.ones(1)}, meta={"config": {"lr": 0.1}})
    s.log_step(3, 0.4)
    s.log_step(4, 0.3)  # due: pending until the next call
    assert [r["step"] for r in sink.reports] == [] and [m["step"] for _, m in sink.saved] == [2]
    assert sink.saved[0][1]["perf/mfu_status"] == "CPU: no peak FLOP/s" and at == [2]
    s.log_step(5, 0.2)
    assert [r["step"] for r in sink.reports] == [4]
    s.log_step(6, 0.1)
    s.close()  # a train that raised: the report still due is sent
    assert [r["step"] for r in sink.reports] == [4, 6]
    rows = pd.read_csv(tmp_path / "training_metrics.csv")  # a column added at step 2: the file keeps aligned
    assert rows["step"].tolist() == [1, 2, 3, 4, 5, 6] and rows["loss"].tolist() == [1.0, 0.5, 0.4, 0.3, 0.2, 0.1]
    assert rows["perf/mfu_status"].iloc[1] == "CPU: no peak FLOP/s" and rows["perf/mfu_status"].isna().sum() == 5
    with pytest.raises(StudyError, match="meta key 'step' is t2s-ray's own"):
        s.checkpoint({"w": torch.ones(1)}, meta={"step": 3})

    from t2s_ray.ablation_runner import FolderSink

    f = Session(
        ablation="baseline",
        seed=0,
        device="cpu",
        trial_dir=tmp_path / "f",
        sink=FolderSink(tmp_path / "f", "baseline seed 0", {}),
        report_every=1,
    )
    f.log_step(1, 1.0)
    f.checkpoint({"w": torch.ones(1)}, meta={"config": {"lr": 0.1}})
    meta = read_meta(tmp_path / "f" / "checkpoints" / "checkpoint_000001")
    assert meta["config"] == {"lr": 0.1} and meta["step"] == 1 and meta["last"]["loss"] == 1.0
    f.close()


def test_log_samples_keeps_the_real_clips_beside_and_writes_the_tensorboard_image(tmp_path):
    rng = np.random.default_rng(1)
    fake, real = (rng.integers(0, 256, (3, 4, 8, 8, 3), dtype=np.uint8) for _ in range(2))
    s = Session(ablation="baseline", seed=0, device="cpu", trial_dir=tmp_path, sink=_Sink(), report_every=1)
    written = s.log_samples(fake, ["a", "b", "c"], real=real)
    assert written == [tmp_path / "samples.gif", tmp_path / "samples.npz"]
    saved = np.load(tmp_path / "samples.npz")
    assert np.array_equal(saved["real"], real) and np.array_equal(saved["fake"], fake)
    assert list(tmp_path.glob("events.out.tfevents.*.samples"))
    with pytest.raises(StudyError, match="real clips .* do not match"):
        s.log_samples(fake, ["a", "b", "c"], real=real[:, :2])
    member = s.for_member("no_ema")
    member.log_samples(fake, ["a", "b", "c"])
    assert (tmp_path / "samples-no_ema.npz").is_file() and "real" not in np.load(tmp_path / "samples-no_ema.npz")


def test_the_report_shows_a_studys_configs_and_hash_from_its_trial_folders(tmp_path):
    """report.html needs no study code for configs: each trial folder holds its resolved config
    (t2s_config.json), so a user study's report has its config hash and each ablation's changes."""
    from t2s_ray import AblationRunner

    study = _study(metrics={"eval/score": "higher"})
    for seed in range(3):
        for ablation in ("baseline", "text_finetuned"):
            runner = AblationRunner(ablation, tmp_path, experiment_scale="default", seed=seed, study=study)
            runner.log_training_step(0, 1, 0.5, 1e-3, 1.0)
            runner.log_evaluation(score=1.0 + seed + (0.5 if ablation == "text_finetuned" else 0.0))
            runner.save_results()
    saved = json.loads((tmp_path / "text_finetuned_seed1" / "t2s_config.json").read_text())
    assert saved == {"steps": 4, "width": 8, "text": {"freeze": False, "lr": 1e-3}}
    r = _cli("analyze", str(tmp_path))
    assert r.exit_code == 0, r.output
    html = (tmp_path / "report.html").read_text()
    assert re.search(r"Config hash</dt><dd><code>[0-9a-f]{12}</code>", html), "no config hash"
    assert "<code>text.freeze</code></td><td>False</td><td>True</td>" in html and "not resolvable" not in html
    assert "text.freeze=False" in html  # the ablation's description: its overrides


def test_the_bundled_model_is_a_study_resolving_its_trials_as_the_sweep_does():
    """`t2s_ray.t2s:study` (what the runner loads for a trial naming no study) resolves a trial's params, ablation
    files included, exactly as `ablations.resolve_params` does, and keeps device=cpu trials off their GPU."""
    from t2s_ray.outputs import DEFAULT_STUDY
    from t2s_ray.study import load_study
    from t2s_ray.t2s.ablations import resolve_params

    study = load_study(DEFAULT_STUDY)
    params = {
        "ablation": "mine",
        "seed": 2,
        "scale": "smoke",
        "overrides": ["data.spec=synthsign", "device=cpu"],
        "user_ablations": {"mine": {"description": "x", "overrides": {"training": {"lr": 5e-4}}}},
        "grid": {"training.warmup_steps": 3},
    }
    cfg = study.trial_config(params)
    assert cfg == resolve_params(params) and cfg.training.lr == 5e-4 and cfg.seed == 2
    assert cfg.training.warmup_steps == 3 and study.trial_config(params, "no_ema").ema.enabled is False
    assert study.trial_device(cfg, [0]).type == "cpu"
    assert study.evaluate is not None and study.steps_of(cfg) == cfg.training.steps


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
    # one torch thread each: eight processes with two threads each on two cores spin against each other (71 s
    # against 29 s for the eight)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-c", RUNNER_SCRIPT, "baseline", "0", str(tmp_path)], env=env, check=True, timeout=300
    )  # builds the data cache once
    procs = [
        subprocess.Popen([sys.executable, "-c", RUNNER_SCRIPT, a, str(s), str(tmp_path)], env=env)
        for a in ("baseline", "text_finetuned", "no_ema")
        for s in range(3)
        if (a, s) != ("baseline", 0)
    ]
    assert [p.wait(300) for p in procs] == [0] * 8
    rows = [json.loads(line) for line in (tmp_path / "no_ema_seed2" / "result.json").read_text().splitlines()]
    assert sum(1 for r in rows if r.get("final")) == 1
    r = _cli("analyze", str(tmp_path))
    assert r.exit_code == 0, r.output[-2000:]
    table = pd.read_csv(tmp_path / "comparison_stats.csv")
    mse = table[table["metric"] == "eval/pixel_mse"].set_index("ablation")
    assert set(mse.index) == {"text_finetuned", "no_ema"} and (mse["n"] == 3).all()
    assert mse["verdict"].notna().all()
    assert "eval/pixel_mse ↓" in r.output  # the study's own metric leads the quality table, ranked


# --- the example study through Ray: 3 ablations x 3 seeds, one trial SIGKILLed mid-run ---------------------------

STUDY_DRIVER = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from tests.drivers import joined_runtime_env
ray.init(address=sys.argv[1], log_to_driver=False,  # the test's Ray
         runtime_env=joined_runtime_env(worker_process_setup_hook="tests.faults.cut_checkpoint_copy"))
from t2s_ray.sweep.study import StudySweepSpec
from t2s_ray.sweep import run_sweep
storage, cache = sys.argv[2:4]
for sweep in sys.argv[4:]:  # name:ablations:seeds, one after the other on this Ray
    name, ablations, seeds = sweep.split(":")
    o = run_sweep(StudySweepSpec(study="examples.own_model.study:study", ablations=tuple(ablations.split(",")),
                                 seeds=int(seeds), scale="tiny", gpus=0, cpus_per_trial=0.5, storage=storage,
                                 name=name, quiet=True, max_failures=2, overrides=(cache,)))
    print(f"{name} swept: {o.num_finished} finished, {o.num_errors} errored")
"""


def _final_state(trial: Path) -> dict:
    state, _ = read_checkpoint(list_checkpoints(trial)[-1])
    assert state["step"] == 40
    return state


@pytest.mark.slow
def test_the_example_study_sweeps_through_ray_survives_a_sigkill_and_gets_verdicts(tmp_path, ray_address):
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": str(REPO),
        **fault_env({"index": 2, "fraction": 0.5, "marker": str(tmp_path / "cut.marker"), "only": "baseline_seed0_"}),
    }
    cache = f"cache_dir={tmp_path / 'cache'}"
    # the reference, uninterrupted, runs after the cut: the fault hook copies whole once its marker exists
    sweeps = ["own:baseline,text_finetuned,no_ema:3", "ref:baseline:1"]
    r = run_process_tree(
        [sys.executable, "-c", STUDY_DRIVER, ray_address, str(tmp_path), cache, *sweeps],
        900,
        env=env,
        cwd=REPO,
    )
    # baseline and no_ema differ only in train.ema (evaluation_only): 3 training runs per seed x 2 = 6 trials
    assert r.returncode == 0 and "own swept: 6 finished, 0 errored" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert "baseline + no_ema: trained once" in r.stdout
    assert (tmp_path / "cut.marker").exists(), "no trial was killed"
    assert str(tmp_path / "own") in (tmp_path / "cut.marker").read_text()  # the cut was in the swept, not the reference
    exp = tmp_path / "own"
    (killed,) = exp.glob("baseline_seed0_*")
    assert (killed / "checkpoint_000002.corrupt").is_dir()  # its third checkpoint was cut mid-copy, then resumed
    assert "ref swept: 1 finished, 0 errored" in r.stdout
    assert not list((tmp_path / "ref").glob("*/*.corrupt"))
    (reference,) = (tmp_path / "ref").glob("baseline_seed0_*")
    a, b = _final_state(killed), _final_state(reference)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part

    def final_loss(trial):
        return [json.loads(line) for line in (trial / "result.json").read_text().splitlines()][-1]["final_loss"]

    assert final_loss(killed) == final_loss(reference)
    r = _cli("analyze", str(exp))
    assert r.exit_code == 0, r.output[-2000:]
    stats = pd.read_csv(exp / "comparison_stats.csv")
    mse = stats[stats["metric"] == "eval/pixel_mse"].set_index("ablation")
    assert set(mse.index) == {"text_finetuned", "no_ema"} and (mse["n"] == 3).all() and mse["verdict"].notna().all()
    html = (exp / "report.html").read_text()
    assert "data:image/gif;base64," in html and "text_finetuned" in html
    assert (killed / "samples-no_ema.npz").is_file()  # no_ema's samples, from the run it shared with baseline
    no_ema = stats[(stats["ablation"] == "no_ema") & (stats["metric"] == "eval/pixel_mse")].iloc[0]
    assert no_ema["diff"] != 0  # scored on the raw weights, not baseline's EMA

    gif = tmp_path / "grid.gif"  # t2s-ray sample finds the study in the experiment's t2s_sweep.json
    r = _cli("sample", str(exp), "-t", "hello", "-t", "good morning", "-o", str(gif))
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())  # the console wraps long lines
    assert "2 sentence(s) x 3 column(s)" in said and "no_ema: step 40, the study's weights" in said
    assert gif.stat().st_size > 0


FAULTY_STUDY = """
from dataclasses import dataclass
import t2s_ray

@dataclass(frozen=True)
class Cfg:
    mode: str = "ok"

def train(cfg, session):
    for step in range(1, 4):
        session.log_step(step, 1.0 / step)
    if cfg.mode == "boom":
        raise RuntimeError("boom in the user's train")
    if cfg.mode == "ok":
        session.log_evaluation({"eval/score": 1.0 + session.seed})

study = t2s_ray.Study(name="faulty", config=Cfg, train=train, metrics={"eval/score": "higher"},
                      ablations={"baseline": {}, "boom": {"mode": "boom"}, "silent": {"mode": "silent"}})
"""

FAULTY_DRIVER = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
from t2s_ray.sweep.study import StudySweepSpec, study_runtime_env
from t2s_ray.sweep import run_sweep
from t2s_ray.study import load_study
sys.path.insert(0, os.getcwd())  # where the study module is, as `--study` does
load_study("faulty_study:study")
# the test's Ray, with the study's module shipped to the trials as `sweep --study` ships it
ray.init(address=sys.argv[1], log_to_driver=False, runtime_env=study_runtime_env("faulty_study:study"))
o = run_sweep(StudySweepSpec(study="faulty_study:study", seeds=1, gpus=0, cpus_per_trial=0.5, storage=sys.argv[2],
                             name="faulty", quiet=True, max_failures=0))
print(f"swept: {o.num_finished} finished, {o.num_errors} errored")
"""


@pytest.mark.slow
def test_a_train_that_raises_or_logs_no_evaluation_errors_its_trial_and_the_others_go_on(tmp_path, ray_address):
    (tmp_path / "faulty_study.py").write_text(FAULTY_STUDY)  # a single-module study, shipped to the trials
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(REPO)}
    r = run_process_tree(
        [sys.executable, "-c", FAULTY_DRIVER, ray_address, str(tmp_path / "results")], 600, env=env, cwd=tmp_path
    )
    assert r.returncode == 0 and "swept: 1 finished, 2 errored" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    exp = tmp_path / "results" / "faulty"
    (boom,) = exp.glob("boom_seed0_*")
    error = (boom / "error.txt").read_text()
    assert "RuntimeError: boom in the user's train" in error and "faulty_study.py" in error  # the user's traceback
    (silent,) = exp.glob("silent_seed0_*")
    assert "train returned without session.log_evaluation or session.evaluate" in (silent / "error.txt").read_text()
    (ok,) = exp.glob("baseline_seed0_*")
    final = [json.loads(line) for line in (ok / "result.json").read_text().splitlines()][-1]
    assert final["final"] == 1 and final["eval/score"] == 1.0 and final["final_loss"] == pytest.approx(1 / 3)


# --- the CLI with --study -----------------------------------------------------------------------------------------


def test_config_and_train_take_a_study_and_bad_input_is_exit_2(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    ref = "examples.own_model.study:study"
    r = _cli("config", "text_finetuned", "--study", ref, "--scale", "tiny")
    assert r.exit_code == 0 and "1 key(s) differ from baseline: text.freeze" in r.output, r.output
    for args, message in [
        (["config", "baseline", "--study", ref, "--set", "text.nope=1"], "unknown key 'text.nope'"),
        (["config", "baseline", "--study", "examples.own_model.study:nope"], "no attribute 'nope'"),
        (["sweep", "--study", ref, "--scale", "huge", "--gpus", "0"], "has the scales cpu, tiny"),
        (["train", "zzz", "--study", ref], "has no ablation 'zzz'"),
    ]:
        r = _cli(*args)
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    out = tmp_path / "run"
    r = _cli(
        "train",
        "no_ema",
        "--study",
        ref,
        "--scale",
        "tiny",
        "--out",
        str(out),
        "--set",
        f"cache_dir={tmp_path / 'cache'}",
        "--set",
        "train.steps=12",
    )
    assert r.exit_code == 0, r.output
    assert "eval/pixel_mse = " in r.output
    final = json.loads((out / "result.json").read_text().splitlines()[-1])
    assert final["final"] == 1 and final["step"] == 12 and list_checkpoints(out / "checkpoints")
    assert json.loads((out / "params.json").read_text())["ablation"] == "no_ema"


def test_the_runner_the_sweep_and_the_analysis_import_nothing_of_the_bundled_study():
    """The house rule: the generic parts run any study; the bundled one (t2s_ray.t2s, with its config and
    ablation registry) is reached only by reference (`outputs.DEFAULT_STUDY`)."""
    code = (
        "import sys, t2s_ray.runner, t2s_ray.sweep, t2s_ray.sweep.study, t2s_ray.analysis, t2s_ray.trackers\n"
        "print(sorted(m for m in sys.modules if m.startswith('t2s_ray.t2s')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
