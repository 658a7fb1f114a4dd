"""Running the plan: the driver prepares data and evaluators once, starts Ray, builds the `Tuner` (the one
trainable of every study, `runner.study_trial`) and counts what `fit()` left."""

from __future__ import annotations

import json
import os
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
from t2s_ray.io import write_text_atomic
from t2s_ray.outputs import GRID_PARAM, SWEEP_FILE
from t2s_ray.storage import (
    Location,
    join,
    write_bytes,
)
from t2s_ray.sweep.estimate import _choose_cpus, _pack_by_memory, _print_estimate
from t2s_ray.sweep.spec import SweepError, SweepSpec
from t2s_ray.sweep.validate import _validate_gpus


def quiet_tune_env() -> None:
    """Tune's legacy reporter (a table with our columns) and no warnings about routine snapshots."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _trial_dirname(trial) -> str:
    grid = "".join(f"_{key.rsplit('.', 1)[-1]}={value}" for key, value in trial.config.get(GRID_PARAM, {}).items())
    return f"{trial.config['ablation']}_seed{trial.config['seed']}{grid}_{trial.trial_id}"


def _resources(spec: SweepSpec) -> dict[str, float]:
    gpus = 0.0 if spec.gpus == 0 else spec.gpus_per_trial
    return {"cpu": spec.cpus_per_trial, "gpu": gpus}


def trainable_with_resources(resources: dict[str, float]):
    """The one function trainable of every study (`runner.study_trial`; the trial's params name its study)."""
    from ray import tune

    from t2s_ray.runner import study_trial

    return tune.with_resources(study_trial, resources)


def _reporter(quiet: bool, grid_keys: Sequence[str] = ()):
    from ray.tune import CLIReporter

    return CLIReporter(
        parameter_columns={"ablation": "ablation", "seed": "seed",
                           **{f"{GRID_PARAM}/{k}": k.rsplit(".", 1)[-1] for k in grid_keys}},
        metric_columns={"step": "step", "loss": "loss", "samples_per_s": "samples/s",
                        "mem/gpu_peak_gb": "gpu_peak_gb", "mem/cpu_rss_gb": "rss_gb"},
        max_report_frequency=60 if quiet else 15,
        print_intermediate_tables=not quiet,
        max_column_length=14,
    )


def build_tuner(spec: SweepSpec, keep_checkpoints: int):
    """The `Tuner` for a new experiment."""
    from ray import tune

    quiet_tune_env()
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
            callbacks=_tracker_callbacks(spec),
            verbose=1,
        ),
    )


def _tracker_callbacks(spec: SweepSpec) -> list:
    if not spec.log_to:
        return []
    from t2s_ray.trackers import tracker_callbacks

    return tracker_callbacks(spec.log_to, experiment=spec.name, storage=spec.experiment_dir)


@dataclass
class SweepOutcome:
    """What a finished (or interrupted) `fit()` left behind."""

    experiment_dir: Location
    """The experiment folder, or its URI for remote storage."""
    num_trials: int
    num_errors: int
    num_terminated: int
    wall_s: float
    ray_start_s: float


def prepare_data(configs, say: Callable[[str], None]) -> None:
    """Build (or find cached) the train and val splits once, in the driver, before any trial starts.

    A bad dataset path fails here with its message instead of in every trial, and trials never
    wait on each other to decode a corpus.
    """
    from t2s_ray.data import build_dataset

    seen = set()
    for cfg in configs:
        if cfg.data in seen:
            continue
        seen.add(cfg.data)
        try:
            sizes = {split: len(build_dataset(cfg.data, split)) for split in ("train", "val")}
        except (ValueError, OSError) as e:
            raise SweepError(str(e) if cfg.data.spec in str(e) else f"--data {cfg.data.spec}: {e}") from None
        if sizes["val"] == 0:
            raise SweepError(f"--data {cfg.data.spec}: the val split is empty; the evaluation samples its captions "
                             f"from val (add val rows, e.g. a 'split' column in a manifest)")
        say(f"data {cfg.data.spec}: {sizes['train']} train / {sizes['val']} val clips "
            f"({cfg.data.frames}x{cfg.data.height}x{cfg.data.width})")


def prepare_evaluators(configs, say: Callable[[str], None]) -> None:
    """Train (or find cached) the SynthSign gloss evaluator of each data config once, in the driver.

    Otherwise the first trial would train it on its one CPU while the others wait on its lock.
    """
    from t2s_ray.t2s.evaluator import evaluator_config, evaluator_dir, shipped_evaluators, train_evaluator

    seen = set()
    for cfg in configs:
        if cfg.data.spec != "synthsign" or cfg.data.frames < 3:
            continue
        ecfg = evaluator_config(cfg.eval)
        folder = evaluator_dir(cfg.data, ecfg)
        if folder in seen:
            continue
        seen.add(folder)
        if not (folder / "report.json").exists() and folder.name not in shipped_evaluators():
            say(f"training the SynthSign gloss evaluator for eval/fvd_synthsign and eval/text_alignment "
                f"(once per data config, cached in {folder})")
        report = train_evaluator(cfg.data, ecfg)
        say(f"gloss evaluator ({report.source}): exact-sentence accuracy {report.exact_accuracy:.2f} on SynthSign "
            f"test clips")


def prepare_cluster_data(configs, say: Callable[[str], None]) -> None:
    """Under --address: check the data this machine can see, and say where the trials find their cache.

    Each trial builds or reuses the cache (gloss evaluator included) on its own node under the cache's file
    locks: this machine's cache may be no node's. A given data.cache_dir is created here when possible, so
    that every node mounting it sees it (a trial that cannot see it fails, naming its node).
    """
    from t2s_ray.data import check_layout, dataset_path

    lines = []
    for data in dict.fromkeys(cfg.data for cfg in configs):
        try:
            here = check_layout(data)
        except (ValueError, OSError) as e:
            raise SweepError(str(e) if data.spec in str(e) else f"--data {data.spec}: {e}") from None
        if not here:
            lines.append(f"data: {dataset_path(data)} is not on this machine; each trial looks for it on its node")
        lines.append(_cluster_cache_line(data))
    for line in dict.fromkeys(lines):
        say(line)


def _cluster_cache_line(data) -> str:
    if not data.cache_dir:
        return ("data: each node builds or reuses its own cache ($T2S_RAY_CACHE or ~/.cache/t2s-ray on that node); "
                "set data.cache_dir to a folder every node mounts to build it once")
    folder = Path(data.cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return (f"data: trials build or reuse the cache in {folder} (data.cache_dir), which every node must see; "
                f"it cannot be created here ({e.strerror or e}): create it on a filesystem every node mounts")
    return f"data: trials build or reuse the cache in {folder} (data.cache_dir) once; every node must see that folder"


def run_sweep(spec: SweepSpec, say: Callable[[str], None] = print) -> SweepOutcome:
    """Validate, start Ray, run the grid, return counts. Raises before writing anything if invalid."""
    existing = existing_cluster_gpus()
    available = existing if existing is not None else (None if spec.address else detect_local_gpus())
    configs = spec.validate(available)
    validate_dashboard(spec.ray_options())
    for line in spec.plan_lines():
        say(line)
    probes = _pack_by_memory(spec, configs, say) if spec.pack_by_memory else {}
    if not configs:
        pass  # a user study prepares its own data
    elif spec.address is None:
        prepare_data(configs, say)
        prepare_evaluators(configs, say)
    else:  # a cluster's nodes may not share this machine's cache: trials build or find it on their node
        prepare_cluster_data(configs, say)
    t0 = time.perf_counter()
    info = start_ray(spec.ray_options(), say)
    if spec.gpus is None:
        spec.gpus = info.gpus  # default: every GPU the cluster has (0 -> CPU trials)
    _validate_gpus(spec, info.gpus)
    if spec.cpus_per_trial is None:
        _choose_cpus(spec, say)
    if spec.scale == "full" and configs:  # hours of GPU time: say what they will cost before spending them
        _print_estimate(spec, configs, say, probes)
    if spec.address and spec.gpus and spec.max_concurrent is None and spec.gpus_per_trial > 0:
        # A shared cluster may have more GPUs than asked for: cap the trials running at once.
        spec.max_concurrent = max(1, int(spec.gpus // spec.gpus_per_trial))
    save_resources(spec)
    grid = build_tuner(spec, configs[0].training.keep_checkpoints if configs else STUDY_KEEP_CHECKPOINTS).fit()
    exp = spec.experiment_dir if spec.remote else Path(grid.experiment_path)
    return _outcome(grid, exp, t0, info.start_s)


STUDY_KEEP_CHECKPOINTS = 2


"""Checkpoints kept per trial of a user study (the bundled study's config says its own)."""


def save_resources(spec: SweepSpec) -> Location:
    """Write the trials' resource request into the experiment folder (before Tune creates its files)."""
    body = {"resources": _resources(spec), "gpus": spec.gpus, "max_concurrent": spec.max_concurrent,
            **({"primary": list(spec.primary)} if spec.primary else {}), **spec.sweep_record()}
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
