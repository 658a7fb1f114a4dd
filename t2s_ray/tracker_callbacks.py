"""Ray's W&B and MLflow logger callbacks, adapted to t2s-ray trials (see `t2s_ray.trackers` for what they log
and where), and `tracker_callbacks` that builds them. Imports Ray: the sweep loads it only when it builds its
Tuner."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow.fs
from ray.air.constants import TRAINING_ITERATION
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from t2s_ray.trackers import (
    TRACKERS,
    TrackerError,
    check_trackers,
    numeric_metrics,
    sample_gif_names,
    trial_params,
    trial_tags,
    wandb_tags,
)

log = logging.getLogger(__name__)


def fetch_sample_gifs(trial, scratch: Path) -> dict[str, Path]:
    """Media key -> local path of each sample GIF of the finished trial: in its folder in the experiment's storage
    (where the trial writes them; Ray uploads a remote trial's files before the trial ends), else in its latest
    checkpoint (where experiments of older versions kept them). Files on remote storage are copied into
    `scratch`; a file that cannot be read is skipped with a warning: media must not stop the sweep."""
    places = []
    if getattr(trial, "storage", None) is not None and trial.path:
        places.append((trial.storage.storage_filesystem, trial.path))
    if trial.checkpoint is not None:
        places.append((trial.checkpoint.filesystem, trial.checkpoint.path))
    found = {}
    for key, name in sample_gif_names(trial.config).items():
        for fs, folder in places:
            src = f"{folder}/{name}"
            try:
                if fs.get_file_info(src).type != pyarrow.fs.FileType.File:
                    continue
                if isinstance(fs, pyarrow.fs.LocalFileSystem):
                    found[key] = Path(src)
                else:
                    scratch.mkdir(parents=True, exist_ok=True)
                    pyarrow.fs.copy_files(
                        src,
                        str(scratch / name),
                        source_filesystem=fs,
                        destination_filesystem=pyarrow.fs.LocalFileSystem(),
                    )
                    found[key] = scratch / name
                break
            except OSError as e:
                log.warning("trial %s: cannot read %s from %s (%s); not logged", trial, name, folder, e)
    return found


class WandbTracker(WandbLoggerCallback):
    """One W&B run per trial: tags, the resolved config, Tune's numeric results, the sample GIFs as videos."""

    def __init__(self, init: dict[str, Any]):
        super().__init__(**init)  # project; the rest (dir, mode, entity) goes to wandb.init
        self._init = dict(self.kwargs)
        self._scratch = Path(tempfile.gettempdir()) / f"t2s-wandb-samples-{os.getpid()}-{id(self)}"

    def setup(self, *args, **kwargs):
        if "dir" in self._init:
            Path(self._init["dir"]).mkdir(parents=True, exist_ok=True)
        try:
            super().setup(*args, **kwargs)
        except ValueError as e:
            if "API key" not in str(e):
                raise
            raise TrackerError(
                "--log-to wandb: no W&B API key found; run `wandb login` or set WANDB_API_KEY, or "
                "set WANDB_MODE=offline to keep the runs on disk (upload them later with "
                "`wandb sync`)"
            ) from None

    def log_trial_start(self, trial):
        # Ray builds wandb.init's arguments from self.kwargs: this trial's tags and resolved config; the run id is
        # the trial id, so that `t2s-ray resume` continues the trial's run
        self.kwargs = {
            **self._init,
            "config": trial_params(trial.config),
            "tags": wandb_tags(trial.config),
            "resume": "allow",
        }
        super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial, result: dict):
        # Ray merges result["config"] (the sweep's params) into the run config: keep the resolved one instead
        super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})

    def log_trial_end(self, trial, failed: bool = False):
        import wandb

        gifs = fetch_sample_gifs(trial, self._scratch / trial.trial_id)
        if gifs:
            caption = f"{trial.config['ablation']} seed {trial.config['seed']}"
            media = {key: wandb.Video(str(path), caption=caption) for key, path in gifs.items()}
            step = (trial.last_result or {}).get(TRAINING_ITERATION)
            self.log_trial_result(step or 0, trial, {TRAINING_ITERATION: step, **media})
        super().log_trial_end(trial, failed)

    def on_experiment_end(self, trials, **info):
        super().on_experiment_end(trials, **info)  # waits for the runs to finish, media copied into them
        shutil.rmtree(self._scratch, ignore_errors=True)


class MLflowTracker(MLflowLoggerCallback):
    """One MLflow run per trial: tags, the resolved config as params, numeric metrics by training step, the
    sample GIFs as artifacts under `samples/`."""

    def __init__(self, tracking_uri: str, experiment_name: str):
        super().__init__(tracking_uri=tracking_uri, experiment_name=experiment_name)
        self._logged: dict[Any, dict[str, tuple[int, float]]] = {}  # trial -> metric -> (step, value) logged last

    def setup(self, *args, **kwargs):
        if urlparse(self.tracking_uri).scheme in ("", "file"):
            # MLflow 3 refuses its file store unless opted in; it is the one store needing no server or database
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        super().setup(*args, **kwargs)
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.tracking_uri)

    def log_trial_start(self, trial):
        from mlflow.entities import Param

        self.tags = trial_tags(trial.config)  # Ray tags the new run with self.tags
        super().log_trial_start(trial)  # also logs the sweep's params (ablation, seed, scale, overrides)
        params = [Param(k, str(v)) for k, v in trial_params(trial.config).items()]
        self._client.log_batch(self._trial_runs[trial], params=params)

    def log_trial_result(self, iteration: int, trial, result: dict):
        from mlflow.entities import Metric

        # one batch per report (Ray's own logs metric by metric, two store calls each)
        step = int(result.get("timesteps_total") or result[TRAINING_ITERATION])
        now = int(time.time() * 1000)
        # a final report repeats its last step's values (loss, lr ...): each (metric, step) is logged once
        seen = self._logged.setdefault(trial, {})
        fresh = {k: v for k, v in numeric_metrics(result).items() if seen.get(k) != (step, v)}
        seen.update({k: (step, v) for k, v in fresh.items()})
        self._client.log_batch(self._trial_runs[trial], metrics=[Metric(k, v, now, step) for k, v in fresh.items()])

    def log_trial_end(self, trial, failed: bool = False):
        with tempfile.TemporaryDirectory(prefix="t2s-mlflow-samples-") as scratch:
            for path in fetch_sample_gifs(trial, Path(scratch)).values():
                self._client.log_artifact(self._trial_runs[trial], str(path), artifact_path="samples")
        super().log_trial_end(trial, failed)


def tracker_callbacks(names: Sequence[str], experiment: str, storage: str | Path) -> list:
    """One Ray Tune logger callback per tracker in `names` for the experiment `experiment` kept at `storage`."""
    return [
        globals()[TRACKERS[name].callback](**TRACKERS[name].options(experiment, storage))
        for name in check_trackers(names)
    ]
