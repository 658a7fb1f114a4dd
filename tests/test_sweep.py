"""The sweep end to end on a local Ray with fake GPUs, and its validation through the CLI."""

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from t2s_ray.checkpoint import list_checkpoints, read_checkpoint
from t2s_ray.cli import app
from t2s_ray.sweep import SweepError, run_sweep, validate
from t2s_ray.t2s.sweep import BundledSweepSpec
from tests.helpers import SWEEP_RUN

runner = CliRunner()

SKIP_CENSUS = "from t2s_ray.sweep.run import skip_callback_census; skip_callback_census()"


def _baseline_and_no_ema(tmp_path_factory, data_cache, name: str, grid: tuple[str, ...] = ()):
    """baseline + no_ema (one shared training per seed and grid point), 1 seed; (outcome, lines said)."""
    root = tmp_path_factory.mktemp(name)
    spec = BundledSweepSpec(
        ablations=("baseline", "no_ema"),
        seeds=1,
        scale="smoke",
        gpus=3,
        cpus_per_trial=0.5,
        # sharing and the grid are the subject: no back-translation metrics (finished_sweep has them)
        overrides=SWEEP_RUN + (f"data.cache_dir={data_cache}", "ema.decay=0.9", "eval.back_translator=none"),
        grid=grid,
        storage=root / "results",
        name=name,
        quiet=True,
    )
    said = []
    return run_sweep(spec, say=said.append), said


@pytest.fixture(scope="module")
def shared_sweep(fake_gpu_ray, tmp_path_factory, data_cache):
    return _baseline_and_no_ema(tmp_path_factory, data_cache, "shared")


@pytest.fixture(scope="module")
def grid_sweep(fake_gpu_ray, tmp_path_factory, data_cache):
    return _baseline_and_no_ema(tmp_path_factory, data_cache, "grid", grid=("training.lr=1e-4,3e-3",))


@pytest.mark.slow
def test_grid_sweep_crosses_its_axis_and_compares_with_the_baseline_at_the_same_value(grid_sweep, tmp_path):
    outcome, said = grid_sweep
    assert any("x 2 training.lr = 2 trial(s)" in line for line in said), said
    assert (outcome.num_trials, outcome.num_finished) == (2, 2)
    trials = sorted(p for p in outcome.experiment_dir.iterdir() if p.is_dir() and "_seed0_" in p.name)
    assert [t.name.split("_seed0_")[1].split("_")[0] for t in trials] == ["lr=0.0001", "lr=0.003"]
    params = [json.loads((t / "params.json").read_text()) for t in trials]
    assert [p["grid"] for p in params] == [{"training.lr": 1e-4}, {"training.lr": 3e-3}]
    trained = [json.loads(read_checkpoint(list_checkpoints(t)[-1])[0]["config"]) for t in trials]
    assert [c["training"]["lr"] for c in trained] == [1e-4, 3e-3]  # the grid value reached the training config
    r = runner.invoke(app, ["analyze", str(outcome.experiment_dir), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "comparison_table.csv")
    assert list(table["ablation"]) == [
        "baseline @ training.lr=0.0001",
        "no_ema @ training.lr=0.0001",
        "baseline @ training.lr=0.003",
        "no_ema @ training.lr=0.003",
    ]
    assert list(table["grid"]) == ["training.lr=0.0001"] * 2 + ["training.lr=0.003"] * 2
    comparisons = pd.read_csv(tmp_path / "comparison_stats.csv")
    val = comparisons[comparisons["metric"] == "val_loss"].set_index("grid")
    # each arm against the baseline trained at the same learning rate (the same trial: EMA vs raw weights)
    for point, lr_trial in zip(("training.lr=0.0001", "training.lr=0.003"), trials):
        final = _rows(lr_trial)[-1]
        assert val.loc[point, "ablation"] == f"no_ema @ {point}"
        assert val.loc[point, "baseline_mean"] == final["val_loss"]
        assert val.loc[point, "mean"] == final["shared/no_ema/val_loss"]
    assert (
        "no_ema @ training.lr=0.003" in r.output
        and "no_ema @ training.lr=0.003" in (tmp_path / "report.html").read_text()
    )


@pytest.mark.slow
def test_shared_training_runs_one_trial_and_reports_both_ablations(shared_sweep, tmp_path):
    outcome, said = shared_sweep
    assert any("baseline + no_ema: trained once" in line for line in said), said
    assert (outcome.num_trials, outcome.num_finished) == (1, 1)
    (trial,) = [p for p in outcome.experiment_dir.iterdir() if p.is_dir() and "_seed0_" in p.name]
    final = _rows(trial)[-1]
    assert final["final"] == 1 and "shared/no_ema/eval/fvd_synthsign" in final and "shared/no_ema/val_loss" in final
    assert final["shared/no_ema/val_loss"] != final["val_loss"]  # raw weights vs the EMA (decay 0.9)
    assert (trial / "samples.npz").is_file() and (trial / "samples-no_ema.npz").is_file()
    r = runner.invoke(app, ["analyze", str(outcome.experiment_dir), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "comparison_table.csv")
    assert list(table["ablation"]) == ["baseline", "no_ema"] and list(table["trained_with"]) == ["baseline"] * 2
    assert table.set_index("ablation").loc["no_ema", "val_loss_mean"] == final["shared/no_ema/val_loss"]
    assert "Trained with: baseline" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
def test_ray_own_tools_read_a_finished_experiment(finished_sweep):
    """ExperimentAnalysis and Tuner.restore(...).get_results() find every trial with its final metrics, and
    analyze reads Ray's record of each trial's status."""
    from ray import tune

    from t2s_ray.analysis import load_trials
    from t2s_ray.sweep import trainable_with_resources

    exp = finished_sweep.experiment_dir
    analysis = tune.ExperimentAnalysis(exp.as_posix())
    finals = {t.config["ablation"]: t.last_result for t in analysis.trials}
    assert sorted(finals) == ["baseline", "no_ema", "text_finetuned"]
    assert all(r["final"] == 1 and math.isfinite(r["eval/fvd_synthsign"]) for r in finals.values()), finals
    grid = tune.Tuner.restore(exp.as_posix(), trainable=trainable_with_resources({"cpu": 0.5, "gpu": 0})).get_results()
    assert grid.num_errors == 0 and len(grid) == 3
    assert {r.config["ablation"]: r.metrics["eval/fvd_synthsign"] for r in grid} == {
        a: r["eval/fvd_synthsign"] for a, r in finals.items()
    }
    trials = load_trials(exp)
    assert list(trials["ray_state"]) == ["TERMINATED"] * 3 and set(trials["status"]) == {"finished"}


def _rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_three_trials_run_concurrently_on_distinct_fake_gpus(finished_sweep):
    o = finished_sweep
    assert (o.num_trials, o.num_finished, o.num_errors) == (3, 3, 0)
    trial_dirs = sorted(p for p in o.experiment_dir.iterdir() if p.is_dir() and "_seed0_" in p.name)
    assert sorted(d.name.split("_seed")[0] for d in trial_dirs) == ["baseline", "no_ema", "text_finetuned"]
    spans, gpu_ids = [], set()
    for d in trial_dirs:
        params = json.loads((d / "params.json").read_text())
        assert d.name.startswith(f"{params['ablation']}_seed{params['seed']}_")
        rows = _rows(d)
        assert len(rows) >= 3
        for key in ("loss", "lr", "samples_per_s", "mem/gpu_peak_gb", "mem/cpu_rss_gb", "step_time_ms"):
            assert key in rows[0], key
        assert rows[-1]["final"] == 1 and rows[-1]["step"] == 6
        assert rows[-1]["node/device"] == "cpu"
        for key in ("eval/fvd_synthsign", "eval/text_alignment", "eval/motion_ratio", "eval/inference_ms_per_video"):
            assert key in rows[-1], key
        assert rows[-1]["eval/fvd_status"].startswith("no I3D detector")
        assert (d / "samples.gif").is_file() or list(d.glob("checkpoint_*/samples.gif"))
        gpu_ids.add(rows[-1]["node/gpu_ids"])
        start = rows[-1]["node/started_at"]
        spans.append((start, start + rows[-1]["time_total_s"]))
        assert list(d.glob("checkpoint_*/state.pt")), f"no checkpoint in {d}"
        assert "loss" in pd.read_csv(d / "progress.csv").columns
        mem = pd.read_csv(d / "gpu_memory.csv")
        assert len(mem) >= 2 and (mem["cpu_rss_gb"] > 0).all() and mem["gpu_allocated_gb"].isna().all()
        assert rows[-1]["mem/sampled_cpu_rss_peak_gb"] > 0
    assert len(gpu_ids) == 3 and "" not in gpu_ids  # each trial held its own (fake) GPU
    latest_start, earliest_end = max(s for s, _ in spans), min(e for _, e in spans)
    assert latest_start <= earliest_end, f"trials did not overlap in time: {spans}"


@pytest.mark.slow
def test_analyze_writes_one_row_per_ablation(finished_sweep, tmp_path):
    r = runner.invoke(app, ["analyze", str(finished_sweep.experiment_dir), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    table = pd.read_csv(tmp_path / "comparison_table.csv")
    assert list(table["ablation"]) == ["baseline", "text_finetuned", "no_ema"]
    assert (table["n_seeds"] == 1).all()
    assert table["val_loss_mean"].notna().all()
    assert (tmp_path / "comparison_table.md").read_text().count("\n| ") >= 3
    assert "baseline" in (tmp_path / "ABLATION_RESULTS_REPORT.txt").read_text()
    for png in ("training_curves.png", "metrics.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    # back-translation through the built-in SynthSign gloss translator, with the real clips' reference row
    for m in ("bleu4", "rouge_l", "chrf", "wer"):
        assert table[f"eval/{m}_mean"].notna().all() and table[f"eval/{m}_real_mean"].notna().all(), m
    report = (tmp_path / "ABLATION_RESULTS_REPORT.txt").read_text()
    assert "ROUGE-L of the back-translated real clips (the ceiling)" in report
    statuses = {r["final"].get("eval/bleu4_status") for r in _final_rows(finished_sweep.experiment_dir)}
    assert all(s and "sacrebleu nrefs:1" in s for s in statuses), statuses


def _final_rows(exp: Path) -> list[dict]:
    rows = []
    for result in sorted(exp.glob("*/result.json")):
        lines = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        rows.append({"final": next(r for r in reversed(lines) if r.get("final"))})
    return rows


def test_validation_too_many_gpus():
    spec = BundledSweepSpec(gpus=4, name="x")
    with pytest.raises(SweepError, match=r"--gpus 4 requested but 0 GPU\(s\) detected.*use --gpus 0 to run on CPU"):
        validate(spec, available_gpus=0)


@pytest.mark.parametrize(
    "bad",
    [
        {"gpus": 64},
        {"gpus": 0, "seeds": 0},
        {"gpus": 0, "overrides": ("training.lr=0",)},
        {"gpus": 0, "cpus_per_trial": 0},
    ],
)
def test_run_sweep_rejects_a_bad_spec_before_writing_anything(tmp_path, monkeypatch, bad):
    """A rejected spec leaves --storage empty and builds no data cache, evaluator or Ray cluster."""
    import t2s_ray.cluster as cluster
    import t2s_ray.t2s.sweep as bundled_sweep

    def past_validation(*args, **kwargs):
        raise AssertionError("run_sweep went past validation with a bad spec")

    for step in ("prepare_data", "prepare_evaluators"):  # the steps that write or start things
        monkeypatch.setattr(bundled_sweep, step, past_validation)
    monkeypatch.setattr(cluster, "init_ray", past_validation)
    storage, cache = tmp_path / "results", tmp_path / "cache"
    storage.mkdir()
    bad = dict(bad)
    overrides = (*SWEEP_RUN, f"data.cache_dir={cache}", *bad.pop("overrides", ()))
    spec = BundledSweepSpec(
        storage=storage,
        name="x",
        overrides=overrides,
        cpus_per_trial=bad.pop("cpus_per_trial", 0.5),
        quiet=True,
        dashboard=False,
        **bad,
    )
    with pytest.raises(ValueError):  # SweepError or ConfigError, both ValueErrors naming the fix
        run_sweep(spec)
    assert list(storage.iterdir()) == [], "a rejected sweep wrote into --storage"
    assert not cache.exists(), "a rejected sweep built its data cache"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gpus", "64"], "--gpus 64 requested"),
        (["--ablations", "baseline,nope"], "unknown ablation 'nope'"),
        (["--set", "training.lr=0"], "training.lr"),
        (["--set", "training.lrr=1"], "training.lrr"),
        (["--seeds", "0"], "--seeds 0"),
        (["--gpus-per-trial", "1.5", "--gpus", "0"], "--gpus-per-trial 1.5"),
        (["--steps", "0"], "'--steps'"),
        (["--grid", "training.lr=1e-4"], "one value is not an axis; use --set training.lr=1e-4"),
        (["--grid", "training.lr=1e-4,abc"], "--grid 'training.lr=1e-4,abc': training.lr: expected a number"),
        (["--grid", "training.lr=0,1e-4"], "training.lr: must be > 0"),
        (["--grid", "training.lrr=1,2"], "unknown key 'training.lrr'"),
        (["--grid", "seed=0,1"], "seed has its own option (--seeds)"),
        (["--grid", "training.lr=1e-4,3e-4", "--set", "training.lr=1e-3"], "training.lr is already set by --set"),
        (["--grid", "training.lr=1e-4,1e-4"], "a value is repeated"),
        (["--log-to", "neptune"], "'neptune' is not one of"),
    ],
)
def test_sweep_cli_rejects_bad_input_before_writing(tmp_path, args, message):
    r = runner.invoke(app, ["sweep", "--storage", str(tmp_path / "s"), "--name", "n", *args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "s").exists()


def test_sweep_cli_refuses_existing_experiment(tmp_path):
    (tmp_path / "s" / "taken").mkdir(parents=True)
    r = runner.invoke(app, ["sweep", "--gpus", "0", "--storage", str(tmp_path / "s"), "--name", "taken"])
    assert r.exit_code == 2
    assert "already exists" in r.output and "t2s-ray resume" in r.output


def test_sweep_cli_refuses_unwritable_storage(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = runner.invoke(app, ["sweep", "--gpus", "0", "--storage", str(blocker / "sub")])
    assert r.exit_code == 2 and "not writable" in r.output
    assert blocker.read_text() == "not a folder"


def test_analyze_and_resume_reject_a_non_experiment_folder(tmp_path):
    r = runner.invoke(app, ["analyze", str(tmp_path)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = runner.invoke(app, ["resume", str(tmp_path)])
    assert r.exit_code == 2 and "not a t2s-ray experiment" in r.output


def test_resume_address_joins_that_cluster_and_says_when_nothing_answers(tmp_path):
    """`resume --address` goes to the cluster named, not to a fresh local Ray (a fresh process: a Ray already
    running in this one would be reused)."""
    import pickle
    import socket
    import subprocess
    import sys

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(pickle.dumps({}))
    (exp / "experiment_state-2026-12-07_09-00-00.json").write_text('{"trial_data": []}')
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from t2s_ray.cli import app; app()",
            "resume",
            str(exp),
            "--address",
            f"127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"--address 127.0.0.1:{port}: nothing answers there" in r.stdout + r.stderr


def test_resume_of_a_finished_experiment_starts_no_ray_and_writes_the_tables(finished_sweep, tmp_path):
    import shutil

    exp = shutil.copytree(finished_sweep.experiment_dir, tmp_path / "exp")
    assert not (exp / "comparison_table.csv").exists()  # run_sweep wrote no tables; the CLI writes them
    trial_files = {p: p.stat().st_mtime_ns for p in exp.glob("*/**/*") if p.is_file()}
    r = runner.invoke(app, ["resume", str(exp), "--quiet"])
    said = " ".join(r.output.split())
    assert r.exit_code == 0, said
    assert f"every trial of {exp} has finished (3 of 3): nothing to resume, Ray not started" in said
    assert "trials: 3 finished, 0 errored, 0 interrupted or not started (of 3)" in said and "Ray not started" in said
    assert (exp / "comparison_table.csv").is_file() and (exp / "report.html").is_file()
    assert {p: p.stat().st_mtime_ns for p in exp.glob("*/**/*") if p.is_file()} == trial_files  # trials untouched


def _experiment(root: Path, trials: dict[str, tuple[str, list[dict]]]) -> Path:
    """A folder shaped as Tune 2.60 leaves one: experiment_state-*.json listing each trial folder with its status
    (trial_data pairs of JSON strings), and the folders' result.json rows (None: no folder yet)."""
    exp = root / "exp"
    exp.mkdir()
    state = [
        [json.dumps({"trial_id": f"t_{i:05d}", "relative_logdir": name, "status": status}), "{}"]
        for i, (name, (status, _)) in enumerate(trials.items())
    ]
    (exp / "experiment_state-2026-12-07_09-00-00.json").write_text(json.dumps({"trial_data": state}))
    for name, (_, rows) in trials.items():
        if rows is not None:
            (exp / name).mkdir()
            (exp / name / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return exp


DONE = [{"step": 1, "loss": 1.0}, {"step": 2, "final": 1, "final_loss": 0.5}]


@pytest.mark.parametrize(
    "trials, expected",
    [
        ({"a": ("TERMINATED", DONE), "b": ("TERMINATED", DONE)}, 2),
        ({"a": ("TERMINATED", DONE), "b": ("PENDING", None)}, None),  # not started: no folder yet
        ({"a": ("TERMINATED", DONE), "b": ("RUNNING", DONE[:1])}, None),  # a killed driver
        ({"a": ("TERMINATED", DONE), "b": ("TERMINATED", DONE[:1])}, None),  # stopped by Ctrl+C: no final report
        ({"a": ("TERMINATED", DONE), "b": ("ERROR", DONE[:1])}, None),
        ({"a": ("TERMINATED", DONE), "b": ("TERMINATED", None)}, None),  # its result.json never reached storage
        ({}, None),
    ],
)
def test_finished_trials_counts_only_an_experiment_with_nothing_left_to_run(tmp_path, trials, expected):
    from t2s_ray.sweep.resume import finished_trials

    assert finished_trials(_experiment(tmp_path, trials)) == expected


def test_finished_trials_reads_no_further_than_a_cut_or_missing_record(tmp_path):
    from t2s_ray.sweep.resume import finished_trials

    exp = _experiment(tmp_path, {"a": ("TERMINATED", DONE)})
    with open(exp / "a" / "result.json", "a") as f:
        f.write('{"step": 3, "fin')  # a writer killed mid-line: Ray decides, not this check
    assert finished_trials(exp) is None
    (exp / "a" / "result.json").write_text("")
    assert finished_trials(exp) is None
    for state in exp.glob("experiment_state-*.json"):
        state.unlink()
    assert finished_trials(exp) is None  # no experiment state: the grid is unknown


def test_tunes_driver_files_reach_local_storage_whole_and_other_storage_through_ray(tmp_path, monkeypatch):
    import pyarrow.fs
    from ray.train._internal import storage as ray_storage

    from t2s_ray.sweep import run as sweep_run

    calls = []
    monkeypatch.setattr(ray_storage, "_upload_to_fs_path", lambda **kw: calls.append(kw))
    sweep_run.write_driver_files_whole()
    sweep_run.write_driver_files_whole()  # once only: not wrapped twice
    upload = ray_storage._upload_to_fs_path
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "experiment_state-1.json").write_text("{}")
    upload(local_path=str(staging), fs=pyarrow.fs.LocalFileSystem(), fs_path=str(tmp_path / "exp"), exclude=None)
    assert (tmp_path / "exp" / "experiment_state-1.json").read_text() == "{}" and calls == []
    subtree = pyarrow.fs.SubTreeFileSystem("/", pyarrow.fs.LocalFileSystem())  # not a plain local one: Ray's own
    upload(local_path=str(staging), fs=subtree, fs_path="x", exclude=None)
    upload(local_path=str(staging), fs=pyarrow.fs.LocalFileSystem(), fs_path="y", exclude=["*.png"])
    assert [c["fs_path"] for c in calls] == ["x", "y"]


def test_resume_sets_aside_a_cut_experiment_state_and_restores_from_the_one_before(tmp_path):
    import pickle

    from t2s_ray.sweep.resume import set_aside_cut_state

    exp = tmp_path / "exp"
    exp.mkdir()
    searcher = pickle.dumps({"_iterators": [], "_finished": False})  # the searcher's state is a pickle
    for run, text in (("2026-12-06_10-00-00", '{"trial_data": []}'), ("2026-12-07_09-00-00", "")):
        (exp / f"experiment_state-{run}.json").write_text(text)
        (exp / f"basic-variant-state-{run}.json").write_bytes(searcher)
    said = []
    set_aside_cut_state(exp, said.append)
    assert sorted(p.name for p in exp.iterdir()) == [
        "basic-variant-state-2026-12-06_10-00-00.json",
        "basic-variant-state-2026-12-07_09-00-00.json.corrupt",
        "experiment_state-2026-12-06_10-00-00.json",
        "experiment_state-2026-12-07_09-00-00.json.corrupt",
    ]
    assert "experiment_state-2026-12-07_09-00-00.json is cut short" in said[0] and "1 other state file" in said[0]
    set_aside_cut_state(exp, said.append)  # whole now: nothing more to do
    assert len(said) == 1


@pytest.mark.parametrize("older", [None, "{not json"])
def test_resume_with_no_whole_experiment_state_is_a_clear_error_that_renames_nothing(tmp_path, older):
    import pickle

    from t2s_ray.sweep.resume import set_aside_cut_state

    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "experiment_state-2026-12-07_09-00-00.json").write_text('{"trial_data": []}')
    searcher = pickle.dumps({"_iterators": [], "_finished": False})
    # the searcher's pickle cut: the run's state cannot be restored either
    (exp / "basic-variant-state-2026-12-07_09-00-00.json").write_bytes(searcher[: len(searcher) // 2])
    if older is not None:
        (exp / "experiment_state-2026-12-06_10-00-00.json").write_text(older)
    before = sorted(p.name for p in exp.iterdir())
    with pytest.raises(SweepError, match="cut short .* no earlier ones are whole; the trial folders"):
        set_aside_cut_state(exp, print)
    assert sorted(p.name for p in exp.iterdir()) == before
    for state in exp.glob("experiment_state-*"):
        state.unlink()
    with pytest.raises(SweepError, match="holds no experiment_state-"):
        set_aside_cut_state(exp, print)


def test_check_passes_on_this_machine(tmp_path, monkeypatch):
    import t2s_ray.preflight as pf

    monkeypatch.setattr(pf, "_ray", lambda: "skipped in this test (covered by the sweep tests)")
    r = runner.invoke(app, ["check", "--storage", str(tmp_path / "store")])
    assert r.exit_code == 0, r.output
    assert r.output.count("✓") == 6 and "✗" not in r.output


def test_check_fails_with_a_cross_on_bad_data(tmp_path, monkeypatch):
    import t2s_ray.preflight as pf

    monkeypatch.setattr(pf, "_ray", lambda: "skipped")
    r = runner.invoke(app, ["check", "--data", "nosuchdata", "--storage", str(tmp_path)])
    assert r.exit_code == 1
    assert "✗ dataset" in r.output


def test_resume_with_a_corrupt_tuner_pkl_is_a_clear_error(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "tuner.pkl").write_bytes(b"\x80\x04garbage")
    r = runner.invoke(app, ["resume", str(exp)])
    assert r.exit_code == 2, r.output
    assert "cannot restore" in r.output and "corrupt" in r.output and "Traceback" not in r.output
    assert (exp / "tuner.pkl").read_bytes() == b"\x80\x04garbage"  # nothing overwritten


def test_trial_assigned_a_gpu_without_cuda_fails_clearly(monkeypatch):
    import torch

    from t2s_ray.t2s.ablations import resolve
    from t2s_ray.t2s.bundled import trial_device
    from t2s_ray.t2s.training import TrainingError

    cfg = resolve("baseline", "smoke")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a worker with a CPU-only torch
    with pytest.raises(TrainingError, match=r"assigned GPU 1 but CUDA is not available.*--set device=cpu"):
        trial_device(cfg, [1])
    assert trial_device(resolve("baseline", "smoke", overrides=["device=cpu"]), [1]).type == "cpu"
    assert trial_device(cfg, []).type == "cpu"


@pytest.mark.slow
def test_tensorboard_has_training_scalars_by_step_and_eval_values(finished_sweep):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trial = next(p for p in finished_sweep.experiment_dir.iterdir() if p.name.startswith("baseline_seed0_"))
    acc = EventAccumulator(str(trial), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in (
        "ray/tune/loss",
        "ray/tune/lr",
        "ray/tune/samples_per_s",
        "ray/tune/mem/cpu_rss_gb",
        "ray/tune/eval/fvd_synthsign",
        "ray/tune/eval/motion_ratio",
    ):
        assert tag in tags, (tag, sorted(tags)[:40])
    steps = [e.step for e in acc.Scalars("ray/tune/loss")]
    assert steps == sorted(steps) and steps[-1] == 6  # the training step, not Tune's iteration count
    assert [e.step for e in acc.Scalars("ray/tune/eval/fvd_synthsign")] == [6]
    assert "eval/samples" in acc.Tags()["images"]


def test_sweep_cli_rejects_a_missing_dataset_before_ray_starts(tmp_path):
    r = runner.invoke(
        app,
        [
            "sweep",
            "--gpus",
            "0",
            "--data",
            f"how2sign:{tmp_path / 'nope'}",
            "--storage",
            str(tmp_path / "s"),
            "--name",
            "n",
        ],
    )
    assert r.exit_code == 2, r.output
    assert "no such folder" in r.output and "how2sign_realigned_train.csv" in r.output
    assert not (tmp_path / "s").exists()


def test_an_ablation_equal_to_the_baseline_at_this_scale_is_refused(tmp_path):
    spec = BundledSweepSpec(ablations=("baseline", "dit_s"), scale="full", storage=tmp_path / "s", name="n", gpus=0)
    with pytest.raises(SweepError, match="'dit_s' resolves to the baseline's config at --scale full"):
        validate(spec, available_gpus=0)
    assert not (tmp_path / "s").exists()
    validate(
        BundledSweepSpec(ablations=("baseline", "dit_s"), scale="smoke", storage=tmp_path / "s", name="n", gpus=0),
        available_gpus=0,
    )


def test_seeds_default_to_three_where_a_verdict_is_possible(tmp_path):
    assert BundledSweepSpec(scale="small", storage=tmp_path).seeds == 3
    assert BundledSweepSpec(scale="full", storage=tmp_path).seeds == 3
    assert BundledSweepSpec(scale="smoke", storage=tmp_path).seeds == 1
    assert BundledSweepSpec(scale="small", seeds=5, storage=tmp_path).seeds == 5


CENSUS = """
import sys
from ray.air._internal import usage
from t2s_ray.sweep.keep_rows import KeepReportedRows
{skip}
usage.tag_callbacks([KeepReportedRows()])
print(sorted(m for m in ("wandb", "mlflow") if m in sys.modules))
"""


@pytest.mark.parametrize("skip, imported", [("", "['mlflow', 'wandb']"), (SKIP_CENSUS, "[]")])
def test_the_driver_does_not_import_wandb_and_mlflow_to_count_its_callbacks(skip, imported):
    """Tune's callback census imports W&B and MLflow (installed with the dev extras) for a usage tag; a sweep's
    driver skips it (~4 s of CPU on 2 cores). The first case shows the census does import them, so the second
    can fail."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", CENSUS.format(skip=skip)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().splitlines()[-1] == imported


def test_a_trials_node_facts_are_plain_values_the_driver_unpickles_without_torch(monkeypatch):
    """The driver unpickles every result a trial reports; a torch type among them (torch.__version__ is a
    TorchVersion) made it import torch (~3 s of CPU) for a version string."""
    import types

    import torch

    from t2s_ray import runner

    monkeypatch.setattr(runner.ray, "get_runtime_context", lambda: types.SimpleNamespace(get_node_id=lambda: "n1"))
    facts = runner.node_facts(torch.device("cpu"), [])
    assert {k: type(v) for k, v in facts.items() if type(v) not in (str, int, float)} == {}
    assert facts["node/torch"] == torch.__version__


def test_tensorboardx_is_imported_without_torch_and_torch_stays_importable():
    """Tune's TensorBoard logger imports tensorboardX, which imports torch when it can (~3 s of a CPU-only
    driver's CPU, for type hints); the driver imports it with torch hidden, and can still import torch after."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from t2s_ray.sweep.run import import_tensorboardx_without_torch\n"
        "import_tensorboardx_without_torch()\n"
        "print('tensorboardX' in sys.modules, 'torch' in sys.modules)\n"
        "import torch, tensorboardX\n"
        "print(torch.ones(1).item(), tensorboardX.SummaryWriter.__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["True False", "1.0 SummaryWriter"]
