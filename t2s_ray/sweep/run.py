"""Running the plan: the driver prepares data and evaluators once, starts Ray, builds the `Tuner` (the one
trainable of every study, `runner.study_trial`) and counts what `fit()` left."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from t2s_ray.cluster import (
    detect_local_gpus,
    existing_cluster_gpus,
    start_ray,
    validate_dashboard,
)
from t2s_ray.io import copy_files_whole, write_text_atomic
from t2s_ray.outputs import GRID_PARAM, SWEEP_FILE
from t2s_ray.storage import (
    Location,
    join,
    write_bytes,
)
from t2s_ray.sweep.estimate import _choose_cpus, _pack_by_memory, _print_estimate
from t2s_ray.sweep.spec import SweepSpec
from t2s_ray.sweep.validate import _validate_gpus


def prepare_tune() -> None:
    """Before `fit()`: Tune's legacy reporter (a table with our columns), no warnings about routine snapshots, and
    nothing imported that the driver does not use (`skip_callback_census`, `import_tensorboardx_without_torch`)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    skip_callback_census()
    import_tensorboardx_without_torch()
    write_driver_files_whole()


def write_driver_files_whole() -> None:
    """Tune copies the driver's files into storage (the experiment state and the searcher's, and each trial's
    result.json, progress.csv and params.json) by rewriting them in place, every few seconds: a driver killed
    during a copy left them cut, e.g. an empty experiment_state-*.json, from which `Tuner.restore` cannot read
    the trials (it starts the grid over instead). Into a local (or mounted) folder each file is now written
    beside its destination and renamed over it (`io.copy_files_whole`), so storage holds the old file or the new
    one whole; object stores replace an object whole already. Tune's own upload does everything else."""
    from ray.train._internal import storage as ray_storage

    if getattr(ray_storage._upload_to_fs_path, "writes_whole_files", False):
        return
    upload = ray_storage._upload_to_fs_path

    def upload_whole(local_path: str, fs, fs_path: str, exclude=None) -> None:
        import pyarrow.fs

        if exclude or not isinstance(fs, pyarrow.fs.LocalFileSystem):
            return upload(local_path=local_path, fs=fs, fs_path=fs_path, exclude=exclude)
        copy_files_whole(local_path, fs_path)

    upload_whole.writes_whole_files = True
    ray_storage._upload_to_fs_path = upload_whole


def import_tensorboardx_without_torch() -> None:
    """Import tensorboardX (Tune's TensorBoard logger) with torch hidden, unless torch is already imported.

    tensorboardX imports torch when it can, only to name `torch.Tensor` in its type hints; a sweep's driver logs
    plain numbers and otherwise never imports torch, which cost ~3 s of CPU on 2 cores before the first trial
    started. torch stays importable afterwards."""
    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects without torch
    try:
        import tensorboardX  # noqa: F401
    except ImportError:  # not installed: Tune's TensorBoard logger says so itself
        pass
    finally:
        del sys.modules["torch"]


def skip_callback_census() -> None:
    """Tune's `fit()` counts the callbacks it is given by class for Ray's usage statistics, and imports W&B's,
    MLflow's, Comet's and Aim's integrations to get the classes it counts: every sweep and resume (their callbacks
    always include `KeepReportedRows`) imported W&B and MLflow where they are installed, ~4 s of CPU in the
    driver before the first trial starts (docs/PERFORMANCE.md, P2), to record a count nothing here reads. The
    count is skipped; Tune's other usage tags are untouched."""
    from ray.air._internal import usage

    if getattr(usage, "tag_callbacks", None) is not None:  # a Ray without it has nothing to skip
        usage.tag_callbacks = _no_census


def _no_census(callbacks) -> bool:
    """`ray.air._internal.usage.tag_callbacks` that records nothing (and so imports nothing)."""
    return False


def _trial_dirname(trial) -> str:
    grid = "".join(f"_{key.rsplit('.', 1)[-1]}={value}" for key, value in trial.config.get(GRID_PARAM, {}).items())
    return f"{trial.config['ablation']}_seed{trial.config['seed']}{grid}_{trial.trial_id}"


def _resources(spec: SweepSpec) -> dict[str, float]:
    gpus = 0.0 if spec.gpus == 0 else spec.gpus_per_trial
    return {"cpu": spec.cpus_per_trial, "gpu": gpus}


def trainable_with_resources(resources: dict[str, float]):
    """The one function trainable of every study (`runner.study_trial`, through `sweep.trainable`, which imports it
    only in the trial's process; the trial's params name its study)."""
    from ray import tune

    from t2s_ray.sweep.trainable import study_trial

    return tune.with_resources(study_trial, resources)


def _reporter(quiet: bool, grid_keys: Sequence[str] = ()):
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={
            "ablation": "ablation",
            "seed": "seed",
            **{f"{GRID_PARAM}/{k}": k.rsplit(".", 1)[-1] for k in grid_keys},
        },
        metric_columns={
            "step": "step",
            "loss": "loss",
            "samples_per_s": "samples/s",
            "mem/gpu_peak_gb": "gpu_peak_gb",
            "mem/cpu_rss_gb": "rss_gb",
        },
        max_report_frequency=60 if quiet else 15,
        print_intermediate_tables=not quiet,
        max_column_length=14,
    )


def build_tuner(spec: SweepSpec, keep_checkpoints: int):
    """The `Tuner` for a new experiment."""
    from ray import tune

    prepare_tune()
    return tune.Tuner(
        spec.trainable(),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            num_samples=1,
            max_concurrent_trials=spec.max_concurrent,
            trial_dirname_creator=_trial_dirname,
            reuse_actors=False,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage if spec.remote else spec.storage.as_posix(),
            # remote storage: Ray also uploads each trial's working directory, where the trial then writes its
            # samples and memory CSV (persist.artifact_dir), at each checkpoint and at its end
            sync_config=tune.SyncConfig(sync_artifacts=spec.remote),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints),
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            progress_reporter=_reporter(spec.quiet, list(spec.grid_axes)),
            callbacks=_callbacks(spec),
            verbose=1,
        ),
    )


def _callbacks(spec: SweepSpec) -> list:
    """`KeepReportedRows` first (before Tune's own loggers open the files it brings back), then the trackers."""
    from t2s_ray.sweep.keep_rows import KeepReportedRows  # imports Ray: only once the sweep builds its Tuner

    if not spec.log_to:
        return [KeepReportedRows()]
    from t2s_ray.tracker_callbacks import tracker_callbacks

    return [KeepReportedRows(), *tracker_callbacks(spec.log_to, experiment=spec.name, storage=spec.experiment_dir)]


@dataclass
class SweepOutcome:
    """What a finished (or interrupted) `fit()` left behind."""

    experiment_dir: Location
    """The experiment folder, or its URI for remote storage."""
    num_trials: int
    num_errors: int
    num_finished: int
    """Trials with their final report (their evaluation): Tune calls a trial it stopped on Ctrl+C terminated too."""
    wall_s: float
    ray_start_s: float
    """Seconds Ray took to start or join; NaN when it was not started (a resume with nothing left to run)."""


def run_sweep(spec: SweepSpec, say: Callable[[str], None] = print) -> SweepOutcome:
    """Validate, start Ray, run the grid, return counts. Raises before writing anything if invalid."""
    existing = existing_cluster_gpus()
    # only a number of GPUs asked for is checked against this machine's (the count costs a torch import, ~3 s of
    # a CPU-only driver that imports no torch otherwise); --gpus 0 needs none, the default counts them at Ray's start
    count = spec.address is None and bool(spec.gpus)
    available = existing if existing is not None else (detect_local_gpus() if count else None)
    configs = spec.validate(available)
    validate_dashboard(spec.ray_options())
    for line in spec.plan_lines():
        say(line)
    probes = _pack_by_memory(spec, configs, say) if spec.pack_by_memory else {}
    if spec.address is None:
        spec.prepare(configs, say)
    else:  # a cluster's nodes may not share this machine's cache: trials build or find it on their node
        spec.prepare_on_cluster(configs, say)
    t0 = time.perf_counter()
    info = start_ray(spec.ray_options(), say)
    if spec.gpus is None:
        spec.gpus = info.gpus  # default: every GPU the cluster has (0 -> CPU trials)
    _validate_gpus(spec, info.gpus)
    if spec.cpus_per_trial is None:
        _choose_cpus(spec, say)
    if spec.estimate_before_run():
        _print_estimate(spec, configs, say, probes)
    if spec.address and spec.gpus and spec.max_concurrent is None and spec.gpus_per_trial > 0:
        # A shared cluster may have more GPUs than asked for: cap the trials running at once.
        spec.max_concurrent = max(1, int(spec.gpus // spec.gpus_per_trial))
    save_resources(spec)
    grid = build_tuner(spec, spec.keep_checkpoints(configs)).fit()
    exp = spec.experiment_dir if spec.remote else Path(grid.experiment_path)
    return _outcome(grid, exp, t0, info.start_s)


def save_resources(spec: SweepSpec) -> Location:
    """Write the trials' resource request into the experiment folder (before Tune creates its files)."""
    body = {
        "resources": _resources(spec),
        "gpus": spec.gpus,
        "max_concurrent": spec.max_concurrent,
        **({"primary": list(spec.primary)} if spec.primary else {}),
        **spec.sweep_record(),
    }
    text = json.dumps(body, indent=2) + "\n"
    if spec.remote:
        return write_bytes(join(spec.experiment_dir, SWEEP_FILE), text.encode())
    spec.experiment_dir.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(spec.experiment_dir / SWEEP_FILE, text)


def _outcome(grid, exp: Location, t0: float, ray_start_s: float) -> SweepOutcome:
    """Counts by each trial's real state. Tune handles Ctrl+C itself, returns normally and calls the trials it
    stopped "terminated": a trial counts as finished only with its final report (its evaluation) in hand."""
    finished = sum(1 for r in grid if r.error is None and r.metrics and r.metrics.get("final"))
    return SweepOutcome(exp, len(grid), grid.num_errors, finished, time.perf_counter() - t0, ray_start_s)
