"""`--log-to wandb/mlflow`: checks before Ray starts, what a trial's run holds, and one offline sweep into both."""

import struct
import sys
from pathlib import Path

import pytest

from t2s_ray.trackers import (
    TrackerError,
    check_trackers,
    mlflow_tracking_uri,
    numeric_metrics,
    sample_gif_names,
    trial_params,
    trial_tags,
    wandb_init_options,
    wandb_tags,
)
from tests.helpers import FINISHED_STEPS

PARAMS = {
    "ablation": "baseline",
    "seed": 1,
    "scale": "smoke",
    "data": "synthsign",
    "overrides": ["data.spec=synthsign", "training.steps=7"],
    "shared": {"baseline": ["no_ema"]},
}


def test_unknown_tracker_names_the_choices():
    with pytest.raises(TrackerError, match=r"--log-to 'tensorboard': unknown tracker; choose from wandb, mlflow"):
        check_trackers(["wandb", "tensorboard"])


@pytest.mark.parametrize("name", ["wandb", "mlflow"])
def test_missing_package_names_the_extra(monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # `import <name>` now raises ImportError
    with pytest.raises(TrackerError) as e:
        check_trackers([name])
    assert str(e.value) == f"--log-to {name} needs the {name} package: pip install 't2s-ray[{name}]'"


def test_repeated_trackers_count_once():
    assert check_trackers(["mlflow", "wandb", "mlflow"]) == ("mlflow", "wandb")


def test_mlflow_runs_go_next_to_the_experiment_unless_a_tracking_uri_is_set(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_tracking_uri(tmp_path / "results" / "exp") == f"file://{tmp_path}/results/mlruns"
    assert mlflow_tracking_uri(f"file://{tmp_path}/results/exp") == f"file://{tmp_path}/results/mlruns"
    with pytest.raises(TrackerError, match="remote storage s3://bucket/exp: set MLFLOW_TRACKING_URI"):
        check_trackers(["mlflow"], storage="s3://bucket/exp")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert mlflow_tracking_uri("s3://bucket/exp") == "http://127.0.0.1:5000"


def test_wandb_project_and_folder(monkeypatch, tmp_path):
    for var in ("WANDB_PROJECT", "WANDB_DIR", "WANDB_MODE", "WANDB_ENTITY"):
        monkeypatch.delenv(var, raising=False)
    assert wandb_init_options("exp", tmp_path / "results" / "exp") == {
        "project": "exp",
        "dir": str(tmp_path / "results"),
    }
    assert wandb_init_options("exp", "s3://bucket/exp") == {"project": "exp"}  # W&B's default: the trial folder
    monkeypatch.setenv("WANDB_PROJECT", "t2s")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_init_options("exp", tmp_path / "results" / "exp") == {
        "project": "t2s",
        "dir": str(tmp_path / "w"),
        "mode": "offline",
    }


def test_a_trial_run_is_tagged_with_its_identity_and_holds_its_resolved_config():
    assert trial_tags(PARAMS) == {"ablation": "baseline", "seed": "1", "shared": "no_ema"}
    assert wandb_tags(PARAMS) == ["ablation:baseline", "seed:1", "shared:no_ema"]
    grid = {**PARAMS, "grid": {"training.lr": 0.0001}, "shared": {}}
    assert trial_tags(grid) == {"ablation": "baseline", "seed": "1", "grid": "training.lr=0.0001"}
    assert "grid:training.lr=0.0001" in wandb_tags(grid)
    params = trial_params(PARAMS)
    assert params["training.steps"] == 7 and params["seed"] == 1 and params["ema.enabled"] is True
    assert trial_params(grid)["training.lr"] == 0.0001
    assert sample_gif_names(PARAMS) == {"samples": "samples.gif", "shared/no_ema/samples": "samples-no_ema.gif"}


def test_a_study_sweep_logs_to_trackers_with_the_studys_own_config(tmp_path, monkeypatch):
    """--log-to works for --study: the run's config is the study's dataclass resolved for the trial."""
    from t2s_ray.sweep.study import StudySweepSpec

    monkeypatch.syspath_prepend(str(Path(__file__).parents[1]))
    params = {
        "study": "examples.own_model.study:study",
        "ablation": "no_ema",
        "seed": 2,
        "scale": "tiny",
        "overrides": ["train.lr=0.002"],
    }
    flat = trial_params(params)
    assert flat["train.ema"] is False and flat["train.lr"] == 0.002 and flat["train.steps"] == 40
    spec = StudySweepSpec(
        study="examples.own_model.study:study",
        scale="tiny",
        gpus=0,
        storage=tmp_path,
        name="tracked",
        log_to=("mlflow",),
    )
    assert spec.validate() == []  # checked, not refused
    with pytest.raises(TrackerError, match="unknown tracker"):
        StudySweepSpec(
            study="examples.own_model.study:study",
            scale="tiny",
            gpus=0,
            storage=tmp_path,
            name="x",
            log_to=("tensorboard",),
        ).validate()


def test_only_numbers_become_metrics():
    result = {
        "loss": 0.5,
        "step": 2,
        "mem/gpu_peak_gb": float("nan"),
        "mem/gpu_peak_gb_status": "CPU run",
        "done": False,
        "config": {"seed": 0},
        "node/gpu_ids": "0",
    }
    metrics = numeric_metrics(result)
    assert set(metrics) == {"loss", "step", "mem/gpu_peak_gb"} and metrics["loss"] == 0.5


def test_wandb_online_without_a_key_says_how_to_log_in(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before the first import of Ray
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC", "WANDB_CONFIG_DIR", "WANDB_SETUP_API_KEY_HOOK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no saved W&B login
    from t2s_ray.tracker_callbacks import WandbTracker

    with pytest.raises(TrackerError, match="no W&B API key found; run `wandb login`.*WANDB_MODE=offline"):
        WandbTracker({"project": "exp"}).setup()


# --------------------------------------------------------------------------- one sweep into both trackers


def wandb_records(path: Path) -> list:
    """The records of a W&B `.wandb` file (LevelDB log format: 32 KiB blocks of CRC/length/type-framed
    chunks holding `wandb_internal_pb2.Record` messages)."""
    from wandb.proto import wandb_internal_pb2

    data, block, pos, chunks, records = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunks += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


@pytest.mark.slow
def test_a_sweep_logs_every_trial_to_mlflow(finished_sweep, finished_sweep_root):
    from mlflow.tracking import MlflowClient

    assert (finished_sweep.num_trials, finished_sweep.num_errors, finished_sweep.num_finished) == (3, 0, 3)
    client = MlflowClient(tracking_uri=(finished_sweep_root / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("fake3").experiment_id])
    assert sorted(r.data.tags["ablation"] for r in runs) == ["baseline", "no_ema", "text_finetuned"]
    (run,) = [r for r in runs if r.data.tags["ablation"] == "baseline"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["seed"] == "0"
    assert run.data.params["training.steps"] == str(FINISHED_STEPS) and run.data.params["model.size"]
    loss = client.get_metric_history(run.info.run_id, "loss")
    # step 1, then every 2 and at each checkpoint (every 3)
    assert [m.step for m in loss] == [1, 2, 3, 4, 6] and all(m.value > 0 for m in loss)
    assert "eval/inference_ms_per_video" in run.data.metrics and "val_loss" in run.data.metrics
    assert not any(k.endswith("_status") or k.startswith("config/") for k in run.data.metrics)
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["samples"]  # no trial folder, no checkpoint
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/samples.gif"]


def _wandb_run(run_dir: Path):
    """(the run record, every record) of an offline W&B run folder."""
    (run_file,) = run_dir.glob("*.wandb")
    records = wandb_records(run_file)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return run, records


@pytest.mark.slow
def test_a_sweep_logs_every_trial_to_wandb_offline(finished_sweep, finished_sweep_root):
    run_dirs = sorted((finished_sweep_root / "wandb-dir" / "wandb").glob("offline-run-*"))
    runs = {run_dir: _wandb_run(run_dir) for run_dir in run_dirs}
    ablations = sorted(t for run, _ in runs.values() for t in run.tags if t.startswith("ablation:"))
    assert ablations == ["ablation:baseline", "ablation:no_ema", "ablation:text_finetuned"]
    ((run_dir, (run, records)),) = [(d, r) for d, r in runs.items() if "ablation:baseline" in r[0].tags]
    assert run.project == "fake3" and "seed:0" in run.tags
    config = {i.key: i.value_json for i in run.config.update}
    assert config["training.steps"] == str(FINISHED_STEPS) and config["ablation"] == '"baseline"'
    history = [
        {i.key or "/".join(i.nested_key): i.value_json for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    assert [h["loss"] for h in history if "loss" in h] and any("eval/inference_ms_per_video" in h for h in history)
    assert not any("mem/gpu_peak_gb_status" in h for h in history)
    (video,) = (run_dir / "files" / "media" / "videos").glob("samples_*.gif")
    assert video.read_bytes()[:6] == b"GIF89a"


def test_the_cli_offers_exactly_the_registered_trackers():
    from t2s_ray import outputs, trackers

    assert tuple(trackers.TRACKERS) == outputs.TRACKERS
