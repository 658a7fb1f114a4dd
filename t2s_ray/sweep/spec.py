"""What the user asked for, before anything runs: `SweepSpec` (the bundled study's; `sweep.study` has a user
study's), the experiment's name and paths, the `--grid` axes typed by the config schema."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from t2s_ray.ablations import DEFAULT_ABLATIONS, Ablation, TrainingGroup, get_ablation, resolve, training_groups
from t2s_ray.cluster import (
    RayOptions,
)
from t2s_ray.config import DEFAULT_SEEDS
from t2s_ray.outputs import ARMS_PARAM, GRID_PARAM
from t2s_ray.plan import (
    Probe,
    probe,
)
from t2s_ray.storage import (
    Location,
    join,
    normalize,
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
        from t2s_ray.sweep.run import _resources, trainable_with_resources

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
        space[ARMS_PARAM] = {a: {"description": get_ablation(a, self.user_ablations).description,
                                 "primary": list(get_ablation(a, self.user_ablations).primary)} for a in self.ablations}
        if self.user_ablations:
            space["user_ablations"] = {a.name: {"description": a.description, "overrides": dict(a.overrides),
                                                "primary": list(a.primary)}
                                       for a in self.user_ablations.values() if a.name in self.ablations}
        return space


    def validate(self, available_gpus: Optional[float] = None) -> list:
        """Check every option before Ray starts; the resolved configs the driver prepares data for."""
        from t2s_ray.sweep.validate import validate

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


def n_trials(spec: SweepSpec) -> int:
    return len(spec.training_groups()) * spec.seeds * spec.grid_points
