"""Building, running and restoring the Ray Tune experiment: grid, resources, storage, failures.

Everything here runs in the driver. Validation happens before Ray starts, so a bad option
costs nothing and writes nothing.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from t2s_ray.ablations import DEFAULT_ABLATIONS, Ablation, TrainingGroup, grid_override, resolve, training_groups
from t2s_ray.cluster import (
    RayOptions,
    detect_local_gpus,
    existing_cluster_gpus,
    start_ray,
    validate_dashboard,
)
from t2s_ray.config import DEFAULT_SEEDS, diff
from t2s_ray.io import write_text_atomic
from t2s_ray.outputs import GRID_PARAM, SWEEP_FILE
from t2s_ray.plan import (
    AUTO_MAX_CPUS,
    CONTEXT_GIB,
    MEMORY_MARGIN,
    Probe,
    auto_cpus,
    concurrency,
    cost_lines,
    pack,
    probe,
)
from t2s_ray.storage import (
    Location,
    StorageError,
    check_reachable,
    check_writable,
    exists,
    filesystem,
    join,
    normalize,
    read_bytes,
    write_bytes,
)


class SweepError(ValueError):
    """A sweep option is invalid or the environment cannot run it; the message names the fix."""


@dataclass
class SweepSpec:
    """What the user asked for, before anything runs."""

    ablations: tuple[str, ...] = DEFAULT_ABLATIONS
    seeds: Optional[int] = None
    """Seeds per ablation (0..K-1); None: `config.DEFAULT_SEEDS` of the scale."""
    scale: str = "smoke"
    steps: Optional[int] = None
    data: str = "synthsign"
    overrides: tuple[str, ...] = ()
    user_ablations: dict[str, Ablation] = field(default_factory=dict)
    gpus: Optional[float] = None
    gpus_per_trial: float = 1.0
    pack_by_memory: bool = False
    """`--gpus-per-trial auto`: set gpus_per_trial from a probe of each model's peak memory (`plan.pack`)."""
    cpus_per_trial: Optional[float] = None
    """None: auto (`plan.auto_cpus`, decided once Ray reports the cluster's CPUs and GPUs)."""
    storage: Location = Path("results")
    """A local folder (resolved to an absolute Path; `file:///abs` too) or a URI Ray's storage takes (s3://, gs://)."""
    name: Optional[str] = None
    """Experiment folder under `storage`; None: t2s-<date>-<time>."""
    address: Optional[str] = None
    max_failures: int = 2
    max_concurrent: Optional[int] = None
    quiet: bool = False
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Optional[int] = None
    expose_dashboard: bool = False
    share_training: bool = True
    """Train once per training group (ablations differing only in EMA/evaluation fields); False: per ablation."""
    grid: tuple[str, ...] = ()
    """Extra sweep axes (`--grid key.path=v1,v2`), crossed with ablations x seeds; parsed by `parse_grid`."""
    log_to: tuple[str, ...] = ()
    """Trackers that also receive every trial's metrics (`--log-to`): see `t2s_ray.trackers`."""
    primary: tuple[str, ...] = ()
    """`--primary`: the metric(s) every arm is decided on (recorded for `analyze`); empty: each arm's own."""

    def ray_options(self) -> RayOptions:
        return RayOptions(address=self.address, gpus=self.gpus, dashboard=self.dashboard,
                          dashboard_host=self.dashboard_host, dashboard_port=self.dashboard_port,
                          expose_dashboard=self.expose_dashboard, quiet=self.quiet,
                          runtime_env=self.runtime_env())

    def runtime_env(self) -> Optional[dict]:
        """Ray's runtime_env for the trials: nothing for the bundled study (it is installed)."""
        return None

    def trainable(self):
        """The Tune trainable of this sweep, with each trial's resources."""
        return trainable_with_resources(_resources(self))

    def sweep_record(self) -> dict[str, Any]:
        """What `t2s_sweep.json` records beyond resources (a user study's reference)."""
        return {}

    def __post_init__(self) -> None:
        if self.seeds is None:
            self.seeds = DEFAULT_SEEDS.get(self.scale, 1)
        self.storage = normalize(self.storage)
        self.name = datetime.now().strftime("t2s-%Y%m%d-%H%M%S") if self.name is None else check_name(self.name)
        # Tune runs each trial in its own working directory: every path the trials read must be absolute.
        self.overrides = tuple(absolutize_override(o) for o in self.overrides)
        self.data = absolutize_spec(self.data)

    @property
    def experiment_dir(self) -> Location:
        """`<storage>/<name>`: a local Path, or a URI for remote storage."""
        return join(self.storage, self.name)

    @property
    def all_overrides(self) -> list[str]:
        return ([f"data.spec={self.data}", *self.overrides]
                + ([f"training.steps={self.steps}"] if self.steps is not None else []))

    @property
    def grid_points(self) -> int:
        """Points of the --grid axes (1 without any)."""
        return math.prod(len(v) for v in self.grid_axes.values())

    @functools.cached_property
    def grid_axes(self) -> dict[str, list]:
        """The --grid axes, parsed and typed once (`parse_grid`; raises on a bad --grid)."""
        return parse_grid(self.grid, self.overrides)

    @property
    def remote(self) -> bool:
        """True when --storage is a URI (s3://, gs://...) rather than a local folder."""
        return isinstance(self.storage, str)

    def param_space(self) -> dict[str, Any]:
        """Grid over ablation x seed; everything else constant, so params.json says what a trial was."""
        from ray import tune

        groups = self.training_groups()
        space: dict[str, Any] = {
            "ablation": tune.grid_search([g.trainer for g in groups]),
            "seed": tune.grid_search(list(range(self.seeds))),
            "scale": self.scale,
            "data": self.data,
            "overrides": self.all_overrides,
        }
        axes = self.grid_axes
        if axes:
            space[GRID_PARAM] = {key: tune.grid_search(values) for key, values in axes.items()}
        shared = {g.trainer: list(g.others) for g in groups if g.others}
        if shared:  # the trial of `trainer` also evaluates these ablations' weights
            space["shared"] = shared
        if self.user_ablations:
            space["user_ablations"] = {a.name: {"description": a.description, "overrides": dict(a.overrides),
                                                "primary": list(a.primary)}
                                       for a in self.user_ablations.values() if a.name in self.ablations}
        return space


    def validate(self, available_gpus: Optional[float] = None) -> list:
        """Check every option before Ray starts; the resolved configs the driver prepares data for."""
        return validate(self, available_gpus)

    def probes(self, configs, device: str, say: Callable[[str], None], threads: int,
               probe_steps: int = 3) -> dict[str, Probe]:
        """One cost probe per training group's trainer (the distinct models of the sweep), on `device`."""
        try:
            return {g.trainer: probe(next(c for c in configs if c.ablation == g.trainer), probe_steps, device=device,
                                     say=say, threads=threads) for g in self.training_groups()}
        except (OSError, ValueError) as e:  # a text encoder or data path the trials could not read either
            raise SweepError(f"the cost probe could not train a step: {e}") from None

    def trial_steps(self, configs) -> Optional[int]:
        """Training steps of one trial (None when unknown)."""
        return configs[0].training.steps

    def samplings_per_member(self, configs) -> int:
        """Samplings of the evaluation set per member ablation: one per guidance scale listed."""
        return max(1, len(configs[0].eval.guidance_sweep))

    def training_groups(self) -> list[TrainingGroup]:
        """The sweep's ablations grouped by the weights they train (one group each without sharing); computed
        once (ablations, scale, overrides and sharing do not change after the spec is made)."""
        return self._training_groups

    @functools.cached_property
    def _training_groups(self) -> list[TrainingGroup]:
        configs = {a: resolve(a, self.scale, 0, self.all_overrides, extra_ablations=self.user_ablations)
                   for a in self.ablations}
        return training_groups(configs, share=self.share_training)

    def plan_subject(self) -> str:
        """What the plan line names before its counts ("" for the bundled study)."""
        return ""

    def shared_training_how(self) -> str:
        """How the members of a training group differ and are scored (the plan's line per shared group)."""
        return "EMA/evaluation settings), each evaluated with its own weights"

    def plan_lines(self) -> list[str]:
        """What will train: trials, and which ablations share one training run."""
        groups = self.training_groups()
        axes = self.grid_axes
        points = self.grid_points
        grid = "".join(f" x {len(v)} {k}" for k, v in axes.items())
        lines = [f"plan: {self.plan_subject()}{len(self.ablations)} ablation(s) x {self.seeds} seed(s){grid} = "
                 f"{len(groups) * self.seeds * points} trial(s) at scale {self.scale}"]
        for key, values in axes.items():
            lines.append(f"  --grid {key}: {', '.join(map(str, values))} (each compared with the baseline at the "
                         f"same value)")
        for g in groups:
            if g.others:
                lines.append(f"  {' + '.join(g.members)}: trained once ({g.trainer}'s config; they differ only in "
                             f"{self.shared_training_how()}")
        if self.share_training and all(not g.others for g in groups):
            lines.append("  every ablation trains its own weights")
        elif not self.share_training:
            lines.append("  --no-share-training: every ablation trains separately")
        return lines


def check_name(name: str) -> str:
    """`name` if it is one path component, so the experiment stays under --storage; else `SweepError`."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise SweepError(f"--name {name!r}: must be a single folder name (no '/', '\\', '.' or '..'), "
                         f"it is created under --storage; e.g. --name my-sweep")
    return name


PATH_KEYS = ("data.cache_dir", "eval.fvd_detector", "text_encoder.path")


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def absolutize_override(item: str) -> str:
    """`data.cache_dir=rel` -> `data.cache_dir=/abs/rel` (and the other path keys); others unchanged."""
    key, sep, value = item.partition("=")
    if key.strip() in PATH_KEYS and sep:
        return f"{key.strip()}={_abs(value.strip())}"
    if key.strip() == "data.spec" and sep:
        return f"data.spec={absolutize_spec(value.strip())}"
    return item


def absolutize_spec(spec: str) -> str:
    """`how2sign:rel/root` -> `how2sign:/abs/rel/root`; `synthsign` unchanged."""
    name, sep, arg = spec.partition(":")
    return f"{name}:{_abs(arg)}" if sep and arg else spec


GRID_RESERVED = {"ablation": "--ablations", "seed": "--seeds", "scale": "--scale", "data.spec": "--data"}
"""Config keys that are sweep axes or settings of their own, not `--grid` axes (the option to use instead)."""


def parse_grid(items: Sequence[str], overrides: Sequence[str] = (), schema: Any = None) -> dict[str, list]:
    """`("training.lr=1e-4,3e-4",)` -> `{"training.lr": [0.0001, 0.0003]}`, values typed by the config schema
    (the bundled `Config`, or a study's dataclass type `schema`).

    Raises `SweepError`/`ConfigError` naming the item: no values, one value, a repeated key or value, a key that
    is also --set, a key with its own option (bundled study), a tuple-valued key (its values contain commas)."""
    axes: dict[str, list] = {}
    set_keys = {o.partition("=")[0].strip() for o in overrides}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        values = [v.strip() for v in text.split(",")] if sep else []
        if not key or not values or any(not v for v in values):
            raise SweepError(f"--grid {item!r}: expected key.path=v1,v2,... e.g. --grid training.lr=1e-4,3e-4")
        if key in GRID_RESERVED and schema is None:
            raise SweepError(f"--grid {item!r}: {key} has its own option ({GRID_RESERVED[key]}); use that")
        if key in axes or key in set_keys:
            raise SweepError(f"--grid {item!r}: {key} is already {'a --grid axis' if key in axes else 'set by --set'}; "
                             f"give each key once")
        typed = [_typed_value(key, v, item, schema) for v in values]
        if len(typed) < 2:
            raise SweepError(f"--grid {item!r}: one value is not an axis; use --set {key}={values[0]}")
        if len(set(map(repr, typed))) < len(typed):
            raise SweepError(f"--grid {item!r}: a value is repeated")
        axes[key] = typed
    return axes


def _typed_value(key: str, text: str, item: str, schema: Any = None) -> Any:
    from t2s_ray.config import ConfigError, parse_override

    try:
        value: Any = parse_override(f"{key}={text}", schema)
    except ConfigError as e:
        why = str(e).split(": ", 1)[1] if str(e).startswith("--set ") else str(e)  # names the --set form
        raise SweepError(f"--grid {item!r}: {why}") from None
    for part in key.split("."):
        value = value[part]
    if isinstance(value, (list, tuple, dict)):
        raise SweepError(f"--grid {item!r}: {key} holds several values; sweep it with separate --set runs")
    return value


# --- validation (no Ray, nothing written) -----------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def validate(spec: SweepSpec, available_gpus: Optional[float] = None) -> list:
    """Check every option; return the resolved configs. Raises `SweepError`/`ConfigError`."""
    if spec.seeds < 1:
        raise SweepError(f"--seeds {spec.seeds}: must be >= 1 (seeds 0..K-1 are run)")
    if not spec.ablations:
        raise SweepError("--ablations is empty; e.g. --ablations baseline,no_ema")
    if spec.gpus_per_trial <= 0 or (spec.gpus_per_trial > 1 and not float(spec.gpus_per_trial).is_integer()):
        raise SweepError(f"--gpus-per-trial {spec.gpus_per_trial:g}: use a fraction in (0, 1] (e.g. 0.5 packs two "
                         f"trials per GPU) or a whole number; for CPU trials use --gpus 0")
    if spec.cpus_per_trial is not None and spec.cpus_per_trial <= 0:
        raise SweepError(f"--cpus-per-trial {spec.cpus_per_trial}: must be > 0")
    if spec.max_failures < -1:
        raise SweepError("--max-failures must be >= 0 (or -1 for unlimited retries)")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise SweepError("--max-concurrent must be >= 1")
    _validate_gpus(spec, available_gpus)
    for key, values in spec.grid_axes.items():  # every grid value must give a valid config (e.g. training.lr > 0)
        for value in values:
            resolve("baseline", spec.scale, 0, [*spec.all_overrides, grid_override(key, value)],
                    extra_ablations=spec.user_ablations)
    if spec.log_to:
        from t2s_ray.trackers import check_trackers

        check_trackers(spec.log_to, storage=spec.experiment_dir)
    configs = [resolve(a, spec.scale, s, spec.all_overrides, extra_ablations=spec.user_ablations)
               for a in spec.ablations for s in range(spec.seeds)]
    _refuse_copies_of_baseline(spec)
    _validate_storage(spec)
    return configs


def _refuse_copies_of_baseline(spec: SweepSpec) -> None:
    """An ablation whose config equals the baseline's at this scale would only measure seed noise: refuse it."""
    base = resolve("baseline", spec.scale, 0, spec.all_overrides, extra_ablations=spec.user_ablations)
    for name in spec.ablations:
        if name == "baseline":
            continue
        cfg = resolve(name, spec.scale, 0, spec.all_overrides, extra_ablations=spec.user_ablations)
        if not diff(cfg, base, ignore=("ablation", "device")):
            raise SweepError(f"ablation {name!r} resolves to the baseline's config at --scale {spec.scale} (with "
                             f"these --set overrides): it would only measure seed noise; drop it from --ablations "
                             f"or choose another scale")


def _validate_gpus(spec: SweepSpec, available: Optional[float]) -> None:
    if spec.gpus is None:
        return
    if spec.gpus < 0:
        raise SweepError(f"--gpus {spec.gpus}: must be >= 0 (0 runs trials on CPU)")
    where = "on this machine" if spec.address is None else f"in the cluster at {spec.address}"
    if available is not None and spec.gpus > available:
        fix = f"use --gpus {available:g}, or --gpus 0 to run on CPU" if available else "use --gpus 0 to run on CPU"
        raise SweepError(f"--gpus {spec.gpus:g} requested but {available:g} GPU(s) detected {where}; {fix}")
    if spec.gpus > 0 and spec.gpus_per_trial > spec.gpus:
        raise SweepError(f"--gpus-per-trial {spec.gpus_per_trial:g} exceeds --gpus {spec.gpus:g}")


def _validate_storage(spec: SweepSpec) -> None:
    if spec.remote:
        _validate_remote_storage(spec)
        return
    exp = spec.experiment_dir
    if exp.exists():
        raise SweepError(f"experiment {exp} already exists; continue it with `t2s-ray resume {exp}` "
                         f"or choose another --name")
    anchor = _nearest_existing(spec.storage)
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise SweepError(f"--storage {spec.storage} is not writable ({anchor} is not a writable folder); "
                         f"choose another --storage")


def _validate_remote_storage(spec: SweepSpec) -> None:
    """A URI: reachable and writable (a probe object is written and deleted), and no experiment of that name."""
    try:
        check_writable(spec.storage)
        taken = exists(spec.experiment_dir)
    except StorageError as e:
        raise SweepError(str(e)) from None
    if taken:
        raise SweepError(f"experiment {spec.experiment_dir} already exists; continue it with "
                         f"`t2s-ray resume {spec.experiment_dir}` or choose another --name")


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
    from t2s_ray.evaluator import evaluator_config, evaluator_dir, shipped_evaluators, train_evaluator

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


def saved_resources(exp: Location, say: Callable[[str], None]) -> dict[str, float]:
    """The resources the sweep of `exp` asked for per trial; an experiment written before they were saved gets
    1 CPU and no GPU for trials not yet started, and is told so."""
    path = join(exp, SWEEP_FILE)
    try:
        resources = json.loads(read_bytes(path))["resources"]
        return {"cpu": float(resources["cpu"]), "gpu": float(resources["gpu"])}
    except FileNotFoundError:
        say(f"note: {exp} has no {SWEEP_FILE} (written by an older t2s-ray): trials not started yet will get "
            "1 CPU and no GPU; started ones keep what they had")
        return {"cpu": 1.0, "gpu": 0.0}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(f"cannot read {path} ({e}); it records each trial's CPUs and GPUs: restore it, or delete "
                         "it to give trials not yet started 1 CPU and no GPU") from None


def saved_study(exp: Location) -> Optional[str]:
    """The `--study` reference a study sweep recorded in `t2s_sweep.json` (None for the bundled study); its
    folder goes on the path so that it imports from anywhere."""
    import sys

    try:
        record = json.loads(read_bytes(join(exp, SWEEP_FILE)))
    except (FileNotFoundError, OSError, ValueError):
        return None
    if record.get("study_root") and record["study_root"] not in sys.path:
        sys.path.insert(0, record["study_root"])
    return record.get("study")


def n_trials(spec: SweepSpec) -> int:
    return len(spec.training_groups()) * spec.seeds * spec.grid_points


def _choose_cpus(spec: SweepSpec, say: Callable[[str], None]) -> None:
    """`--cpus-per-trial auto`: from the CPUs of the running cluster (see `plan.auto_cpus`)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    gpus = spec.gpus or 0.0
    spec.cpus_per_trial = auto_cpus(cpus, gpus, spec.gpus_per_trial, n_trials(spec))
    why = (f"{cpus:g} CPUs shared by the GPU trials that fit at once, at most {AUTO_MAX_CPUS}" if gpus > 0
           else f"{cpus:g} CPUs shared by {n_trials(spec)} CPU trial(s), at most {AUTO_MAX_CPUS}")
    say(f"--cpus-per-trial auto: {spec.cpus_per_trial:g} ({why})")


def _pack_by_memory(spec: SweepSpec, configs, say: Callable[[str], None]) -> dict[str, Probe]:
    """`--gpus-per-trial auto`: probe each distinct model on this machine's GPU and pack by the largest peak."""
    local = detect_local_gpus()
    if (spec.gpus if spec.gpus is not None else local) == 0:
        spec.gpus_per_trial = 1.0  # CPU trials: nothing to pack
        return {}
    if local == 0:
        raise SweepError("--gpus-per-trial auto measures a trial's peak memory on this machine's GPU, and none is "
                         "visible here; give a number instead, e.g. --gpus-per-trial 0.5")
    probes = spec.probes(configs, "cuda", say, threads=1)
    worst = max(probes.values(), key=lambda p: p.peak_gib)
    try:
        n, spec.gpus_per_trial = pack(worst.peak_gib, worst.total_gib)
    except ValueError as e:
        raise SweepError(f"--gpus-per-trial auto: {worst.trainer}: {e}") from None
    say(f"--gpus-per-trial auto: {spec.gpus_per_trial:g} ({worst.trainer} peaks at {worst.peak_gib:.2f} GiB; with "
        f"x{MEMORY_MARGIN} + {CONTEXT_GIB} GiB each, {n} trial(s) fit in the GPU's {worst.total_gib:.1f} GiB)")
    return probes


def _print_estimate(spec: SweepSpec, configs, say: Callable[[str], None], probes: dict[str, Probe]) -> None:
    import ray

    gpus, cpus = spec.gpus or 0.0, float(ray.cluster_resources().get("CPU", 1))
    at_once = concurrency(cpus, gpus, spec.cpus_per_trial, spec.gpus_per_trial, n_trials(spec), spec.max_concurrent)
    device = "cuda" if gpus and detect_local_gpus() else "cpu"
    probes = probes or spec.probes(configs, device, say, threads=max(1, int(spec.cpus_per_trial)))
    for line in _cost_lines(spec, configs, probes, at_once, spec.cpus_per_trial, gpus):
        say(line)


def dry_run(spec: SweepSpec, say: Callable[[str], None] = print, probe_steps: int = 3) -> None:
    """Print the plan and its estimated cost without starting Ray or training (`t2s-ray sweep --dry-run`).

    The cluster is this machine (its CPUs and GPUs) unless --address is given, whose resources are unknown
    without joining it: then --gpus and the CPUs given per trial are taken as they are.
    """
    configs = spec.validate(available_gpus=None if spec.address else detect_local_gpus())
    for line in spec.plan_lines():
        say(line)
    gpus = spec.gpus if spec.gpus is not None else detect_local_gpus()
    probes = _pack_by_memory(spec, configs, say) if spec.pack_by_memory and gpus else {}
    cpus = float(os.cpu_count() or 1)
    trials = n_trials(spec)
    cpus_per_trial = spec.cpus_per_trial or auto_cpus(cpus, gpus, spec.gpus_per_trial, trials)
    at_once = concurrency(cpus, gpus, cpus_per_trial, spec.gpus_per_trial, trials, spec.max_concurrent)
    where = "this machine" if spec.address is None else f"the cluster at {spec.address} (assumed like this machine)"
    say(f"resources per trial: {cpus_per_trial:g} CPU" + (f", {spec.gpus_per_trial:g} GPU" if gpus else "") +
        f"; {where}: {cpus:g} CPUs, {gpus:g} GPUs -> {at_once} trial(s) at once")
    probes = probes or spec.probes(configs, "cuda" if gpus else "cpu", say, max(1, int(cpus_per_trial)),
                                   probe_steps)
    for line in _cost_lines(spec, configs, probes, at_once, cpus_per_trial, gpus):
        say(line)


def _cost_lines(spec: SweepSpec, configs, probes: dict[str, Probe], at_once: int, cpus_per_trial: float,
                gpus: float) -> list[str]:
    """`plan.cost_lines` for this sweep: each group's trials (seeds x grid points), in GPU- or CPU-hours, with
    the evaluation's samplings per member; each group's time per step alone when a trial's steps are unknown."""
    steps = spec.trial_steps(configs)
    if steps is None:
        return [*(f"  {' + '.join(g.members)}: {probes[g.trainer].step_s:.3f} s/step on {probes[g.trainer].device}"
                  for g in spec.training_groups()),
                "estimate: not available, the study does not say which config field holds its steps: give "
                "Study(steps='train.steps') (your field's path)"]
    return cost_lines(spec.training_groups(), probes, spec.seeds * spec.grid_points, steps,
                      at_once, spec.gpus_per_trial if gpus else cpus_per_trial, "GPU" if gpus else "CPU",
                      samplings_per_member=spec.samplings_per_member(configs))


def _outcome(grid, exp: Location, t0: float, ray_start_s: float) -> SweepOutcome:
    """Counts by each trial's real state. Tune handles Ctrl+C itself, returns normally and calls the trials it
    stopped "terminated": a trial counts as finished only with its final report (its evaluation) in hand."""
    finished = sum(1 for r in grid if r.error is None and r.metrics and r.metrics.get("final"))
    return SweepOutcome(exp, len(grid), grid.num_errors, finished, time.perf_counter() - t0, ray_start_s)


def _check_tuner_pkl(exp: Location) -> None:
    """Refuse a missing, truncated or corrupt `tuner.pkl` before Ray starts (Tune cannot rebuild it)."""
    try:
        data = read_bytes(join(exp, "tuner.pkl"))
    except (FileNotFoundError, IsADirectoryError):
        raise SweepError(f"{exp} is not a t2s-ray experiment (no tuner.pkl); pass the folder that "
                         f"`t2s-ray sweep` printed, e.g. results/<name> or s3://bucket/prefix/<name>") from None
    try:
        pickle.loads(data)
    except (EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError, OSError) as e:
        raise SweepError(f"cannot restore {exp}: tuner.pkl is corrupt or truncated ({type(e).__name__}: "
                         f"{e}); the trial folders and checkpoints are intact, start a new sweep to continue") from None


def resume_sweep(experiment_dir: str | Path, restart_errored: bool = False, quiet: bool = False,
                 say: Callable[[str], None] = print, address: Optional[str] = None) -> SweepOutcome:
    """`Tuner.restore` unfinished and errored trials of an existing experiment (a folder or a URI) and run them,
    on a fresh local Ray or, with `address`, on the cluster there (as `sweep --address`)."""
    exp = _experiment_location(experiment_dir)
    _check_tuner_pkl(exp)
    resources = saved_resources(exp, say)
    study = saved_study(exp)
    runtime_env = None
    if study:
        from t2s_ray.study import StudyError, load_study
        from t2s_ray.study_sweep import study_runtime_env

        try:
            load_study(study)
        except StudyError as e:
            raise SweepError(f"cannot resume {exp}: {e}") from None
        runtime_env = study_runtime_env(study)
    t0 = time.perf_counter()
    info = start_ray(RayOptions(address=address, quiet=quiet, runtime_env=runtime_env), say)
    from ray import tune  # after init_ray: Ray reads its network settings at import

    quiet_tune_env()
    try:
        # trials already created keep the resources stored in the experiment state; trials Ray creates after the
        # restore (pending ones, under a concurrency cap) get these: the sweep's own
        tuner = tune.Tuner.restore(str(exp), trainable=trainable_with_resources(resources),
                                   resume_unfinished=True, resume_errored=not restart_errored,
                                   restart_errored=restart_errored)
    except (EOFError, pickle.UnpicklingError, ValueError, RuntimeError, OSError) as e:
        raise SweepError(f"cannot restore {exp}: {type(e).__name__}: {e} (tuner.pkl or experiment state may be "
                         f"corrupt)") from None
    return _outcome(tuner.fit(), exp, t0, info.start_s)


def _experiment_location(experiment_dir: str | Path) -> Location:
    """A local experiment folder (absolute), or a URI checked to be reachable; `SweepError` otherwise."""
    exp = normalize(experiment_dir)
    if isinstance(exp, str):
        try:
            check_reachable(exp, option="experiment")
            filesystem(exp, option="experiment")
        except StorageError as e:
            raise SweepError(str(e)) from None
    return exp
