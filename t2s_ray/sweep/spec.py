"""What the user asked for: `SweepSpec`, the options every study's sweep has (`run_sweep` fills in what it decides
once Ray is up), and the hooks a study's spec fills in (the bundled study's: `t2s_ray.t2s.sweep.BundledSweepSpec`;
a user study's: `sweep.study.StudySweepSpec`): how its ablations resolve and group, what the driver prepares, how
a trial is probed. Also the experiment's name and paths and the `--grid` axes typed by the config schema."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from t2s_ray.cluster import RayOptions
from t2s_ray.plan import Probe, TrainingGroup
from t2s_ray.storage import Location, join, normalize

KEEP_CHECKPOINTS = 2
"""Checkpoints kept per trial unless the study's spec says otherwise (the last one is never removed)."""


class SweepError(ValueError):
    """A sweep option is invalid or the environment cannot run it; the message names the fix."""


@dataclass
class SweepSpec:
    """What the user asked for: the options of `t2s-ray sweep` that every study has. A study's spec subclasses it
    and fills in the hooks that raise `NotImplementedError` here. `run_sweep` fills in what it decides once Ray
    is up: `gpus` (None: every GPU of the cluster), `cpus_per_trial` (auto), `max_concurrent` (on a cluster) and,
    with `--gpus-per-trial auto`, `gpus_per_trial`."""

    ablations: tuple[str, ...] = ()
    seeds: Optional[int] = None
    """Seeds per ablation (0..K-1); None: the study's default."""
    scale: Optional[str] = None
    overrides: tuple[str, ...] = ()
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
    """Train once per training group (ablations whose configs differ only in evaluation fields); False: per
    ablation."""
    grid: tuple[str, ...] = ()
    """Extra sweep axes (`--grid key.path=v1,v2`), crossed with ablations x seeds; parsed by `parse_grid`."""
    log_to: tuple[str, ...] = ()
    """Trackers that also receive every trial's metrics (`--log-to`): see `t2s_ray.trackers`."""
    primary: tuple[str, ...] = ()
    """`--primary`: the metric(s) every arm is decided on (recorded for `analyze`); empty: each arm's own."""

    def __post_init__(self) -> None:
        self.storage = normalize(self.storage)
        self.name = datetime.now().strftime("t2s-%Y%m%d-%H%M%S") if self.name is None else check_name(self.name)

    # --- the same for every study ---------------------------------------------------------------------

    def ray_options(self) -> RayOptions:
        """How this sweep starts or joins Ray: its options of `RayOptions`'s field names, and its study's
        runtime_env."""
        same = {f.name: getattr(self, f.name) for f in fields(RayOptions) if f.name != "runtime_env"}
        return RayOptions(**same, runtime_env=self.runtime_env())

    def trainable(self):
        """The Tune trainable of this sweep (the one of every study), with each trial's resources."""
        from t2s_ray.sweep.run import _resources, trainable_with_resources

        return trainable_with_resources(_resources(self))

    @property
    def experiment_dir(self) -> Location:
        """`<storage>/<name>`: a local Path, or a URI for remote storage."""
        return join(self.storage, self.name)

    @property
    def grid_points(self) -> int:
        """Points of the --grid axes (1 without any)."""
        return math.prod(len(v) for v in self.grid_axes.values())

    @property
    def remote(self) -> bool:
        """True when --storage is a URI (s3://, gs://...) rather than a local folder."""
        return isinstance(self.storage, str)

    def training_groups(self) -> list[TrainingGroup]:
        """The sweep's ablations grouped by the weights they train (one group each without sharing); computed
        once (ablations, scale, overrides and sharing do not change after the spec is made)."""
        return self._training_groups

    def plan_lines(self) -> list[str]:
        """What will train: trials, and which ablations share one training run."""
        groups = self.training_groups()
        axes = self.grid_axes
        points = self.grid_points
        grid = "".join(f" x {len(v)} {k}" for k, v in axes.items())
        lines = [
            f"plan: {self.plan_subject()}{len(self.ablations)} ablation(s) x {self.seeds} seed(s){grid} = "
            f"{len(groups) * self.seeds * points} trial(s) at scale {self.scale}"
        ]
        for key, values in axes.items():
            lines.append(
                f"  --grid {key}: {', '.join(map(str, values))} (each compared with the baseline at the same value)"
            )
        for g in groups:
            if g.others:
                lines.append(
                    f"  {' + '.join(g.members)}: trained once ({g.trainer}'s config; they differ only in "
                    f"{self.shared_training_how()}"
                )
        if self.share_training and all(not g.others for g in groups):
            lines.append("  every ablation trains its own weights")
        elif not self.share_training:
            lines.append("  --no-share-training: every ablation trains separately")
        return lines

    # --- hooks with a default ----------------------------------------------------------------------------

    def runtime_env(self) -> Optional[dict]:
        """Ray's runtime_env for the trials (None: the study is installed where they run)."""
        return None

    def sweep_record(self) -> dict[str, Any]:
        """What `t2s_sweep.json` records beyond resources (a user study's reference)."""
        return {}

    def prepare(self, configs: list, say: Callable[[str], None]) -> None:
        """What the driver builds once before any trial starts (data, evaluators), on this machine."""

    def prepare_on_cluster(self, configs: list, say: Callable[[str], None]) -> None:
        """As `prepare`, for a sweep on a cluster (`--address`), whose nodes may not share this machine's files."""

    def keep_checkpoints(self, configs: list) -> int:
        """Checkpoints kept per trial."""
        return KEEP_CHECKPOINTS

    def estimate_before_run(self) -> bool:
        """Whether the sweep prints its cost estimate before it starts (hours of GPU time ahead)."""
        return False

    def plan_subject(self) -> str:
        """What the plan line names before its counts ("" for the bundled study)."""
        return ""

    # --- hooks each study's spec fills in ---------------------------------------------------------------

    @property
    def all_overrides(self) -> list[str]:
        """Every trial's `--set` overrides (the spec's own first)."""
        raise NotImplementedError

    @functools.cached_property
    def grid_axes(self) -> dict[str, list]:
        """The --grid axes, parsed and typed once by the study's schema (`parse_grid`)."""
        raise NotImplementedError

    @functools.cached_property
    def _training_groups(self) -> list[TrainingGroup]:
        raise NotImplementedError

    def param_space(self) -> dict[str, Any]:
        """Tune's param_space: a grid over each group's trainer x seed (x --grid point), the rest constant."""
        raise NotImplementedError

    def validate(self, available_gpus: Optional[float] = None) -> list:
        """Check every option before Ray starts (`sweep.validate` has the checks every study shares); return the
        resolved configs the driver prepares for."""
        raise NotImplementedError

    def probes(
        self, configs, device: str, say: Callable[[str], None], threads: int, probe_steps: int = 3
    ) -> dict[str, Probe]:
        """One cost probe per training group's trainer, on `device` (`--dry-run`, `--gpus-per-trial auto`)."""
        raise NotImplementedError

    def pair_probes(
        self, configs, probes: dict[str, Probe], device: str, say: Callable[[str], None], threads: int
    ) -> dict[str, Probe]:
        """`probes` with `Probe.pair_step_s` measured (two copies of each trainer at once on one GPU), for the
        estimate of packed trials; a study that cannot measure it returns `probes` as they are (the estimate
        then takes packed trials as GPU-bound and says so)."""
        return probes

    def trial_steps(self, configs) -> Optional[int]:
        """Training steps of one trial (None when unknown)."""
        raise NotImplementedError

    def samplings_per_member(self, configs) -> int:
        """Samplings of the evaluation set per member ablation, for the estimate (0: not counted)."""
        raise NotImplementedError

    def shared_training_how(self) -> str:
        """How the members of a training group differ and are scored (the plan's line per shared group)."""
        raise NotImplementedError


def check_name(name: str) -> str:
    """`name` if it is one path component, so the experiment stays under --storage; else `SweepError`."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise SweepError(
            f"--name {name!r}: must be a single folder name (no '/', '\\', '.' or '..'), "
            f"it is created under --storage; e.g. --name my-sweep"
        )
    return name


def parse_grid(
    items: Sequence[str], overrides: Sequence[str], schema: Any, reserved: Mapping[str, str] | None = None
) -> dict[str, list]:
    """`("training.lr=1e-4,3e-4",)` -> `{"training.lr": [0.0001, 0.0003]}`, values typed by the study's config
    dataclass type `schema`. `reserved`: config keys that have an option of their own (key -> the option to use
    instead).

    Raises `SweepError`/`ConfigError` naming the item: no values, one value, a repeated key or value, a key that
    is also --set, a reserved key, a tuple-valued key (its values contain commas)."""
    axes: dict[str, list] = {}
    set_keys = {o.partition("=")[0].strip() for o in overrides}
    for item in items:
        key, sep, text = (part.strip() for part in item.partition("="))
        values = [v.strip() for v in text.split(",")] if sep else []
        if not key or not values or any(not v for v in values):
            raise SweepError(f"--grid {item!r}: expected key.path=v1,v2,... e.g. --grid training.lr=1e-4,3e-4")
        if key in (reserved or {}):
            raise SweepError(f"--grid {item!r}: {key} has its own option ({reserved[key]}); use that")
        if key in axes or key in set_keys:
            raise SweepError(
                f"--grid {item!r}: {key} is already {'a --grid axis' if key in axes else 'set by --set'}; "
                f"give each key once"
            )
        typed = [_typed_value(key, v, item, schema) for v in values]
        if len(typed) < 2:
            raise SweepError(f"--grid {item!r}: one value is not an axis; use --set {key}={values[0]}")
        if len(set(map(repr, typed))) < len(typed):
            raise SweepError(f"--grid {item!r}: a value is repeated")
        axes[key] = typed
    return axes


def _typed_value(key: str, text: str, item: str, schema: Any) -> Any:
    from t2s_ray.schema import ConfigError, parse_override

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
