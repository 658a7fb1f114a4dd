"""Experiment trackers (`--log-to wandb`, `--log-to mlflow`): every trial's metrics through Ray's logger callbacks.

Each trial becomes one tracker run: tagged with its ablation and seed (its `--grid` point, and the ablations
that share its training), its resolved config as the run's config/params, its numeric metrics as they are reported
(strings such as `*_status` stay in Tune's own files), and at its end its samples GIF as media: a W&B video, an
MLflow artifact under `samples/`. Checkpoints and trial folders are never uploaded.

Where the runs go:

- **W&B**: project = the experiment name (`WANDB_PROJECT` overrides it), group = the experiment name. Run files
  are written under `$WANDB_DIR/wandb/` when set, else `<storage>/wandb/` next to the experiment folder (remote
  `--storage`: each trial's own folder). Online mode needs `wandb login` or `WANDB_API_KEY`; with
  `WANDB_MODE=offline` runs stay on disk as `wandb/offline-run-*` until `wandb sync <that folder>`.
- **MLflow**: experiment = the experiment name; tracking URI = `MLFLOW_TRACKING_URI` when set (e.g. a tracking
  server), else the file store `<storage>/mlruns` next to the experiment folder (view it with the full `mlflow`
  package: `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri file://<storage>/mlruns`). A remote
  `--storage` needs `MLFLOW_TRACKING_URI`.

This module stays Ray-free (`sweep.validate` calls `check_trackers` before Ray starts, and Ray reads its network
settings at import); the callbacks themselves, and `tracker_callbacks` that builds them, live in
`t2s_ray.tracker_callbacks`, which imports this module (never the other way round).
"""

from __future__ import annotations

import importlib
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from t2s_ray.outputs import GRID_PARAM, grid_override, samples_npz, shared_key, shared_members
from t2s_ray.schema import flatten


class TrackerError(ValueError):
    """A `--log-to` tracker is unknown, not installed or cannot be set up; the message names the fix."""


def local_dir(storage: str | Path) -> Path | None:
    """`storage` as a local folder (a path or a `file://` URI), or None for remote storage such as `s3://...`."""
    if isinstance(storage, Path) or "://" not in str(storage):
        return Path(storage)
    parsed = urlparse(str(storage))
    return Path(parsed.path) if parsed.scheme == "file" else None


def mlflow_tracking_uri(storage: str | Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the file store `mlruns` beside the experiment folder `storage`."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    folder = local_dir(storage)
    if folder is None:
        raise TrackerError(
            f"--log-to mlflow with remote storage {storage}: set MLFLOW_TRACKING_URI to a tracking "
            f"server (e.g. http://mlflow.example:5000), a database or a local file:// folder"
        )
    return (folder.resolve().parent / "mlruns").as_uri()


def wandb_init_options(experiment: str, storage: str | Path) -> dict[str, Any]:
    """`wandb.init` arguments for every trial of the sweep, read from the driver's environment: the logging
    actors run in Ray workers, whose environment may not be the shell's (a `ray start` cluster)."""
    options: dict[str, Any] = {"project": os.environ.get("WANDB_PROJECT") or experiment}
    folder = local_dir(storage)
    if os.environ.get("WANDB_DIR"):
        options["dir"] = os.environ["WANDB_DIR"]
    elif folder is not None:
        options["dir"] = str(folder.resolve().parent)
    for key, env in (("mode", "WANDB_MODE"), ("entity", "WANDB_ENTITY")):
        if os.environ.get(env):
            options[key] = os.environ[env]
    return options


@dataclass(frozen=True)
class Tracker:
    """One `--log-to` choice: the package it needs, the extra installing it, and how its callback is built."""

    package: str
    """Import name of the tracker's client library."""
    extra: str
    """`pip install 't2s-ray[<extra>]'` installs it."""
    callback: str
    """Class in `t2s_ray.tracker_callbacks` (a subclass of Ray's own logger callback for this tracker)."""
    options: Callable[[str, str | Path], dict[str, Any]]
    """(experiment name, experiment folder) -> the callback's constructor arguments."""


TRACKERS: dict[str, Tracker] = {
    # ray.air.integrations.wandb.WandbLoggerCallback
    "wandb": Tracker("wandb", "wandb", "WandbTracker", lambda exp, storage: {"init": wandb_init_options(exp, storage)}),
    # ray.air.integrations.mlflow.MLflowLoggerCallback
    "mlflow": Tracker(
        "mlflow",
        "mlflow",
        "MLflowTracker",
        lambda exp, storage: {"tracking_uri": mlflow_tracking_uri(storage), "experiment_name": exp},
    ),
}


def check_trackers(names: Sequence[str], storage: str | Path | None = None) -> tuple[str, ...]:
    """`names` without repeats, once each is a known tracker whose package imports; else `TrackerError`.
    With `storage` (the experiment folder), also checks that the trackers know where to write."""
    unique = tuple(dict.fromkeys(names))
    for name in unique:  # every name before any (slow) import
        if name not in TRACKERS:
            raise TrackerError(f"--log-to {name!r}: unknown tracker; choose from {', '.join(TRACKERS)}")
    for name in unique:
        tracker = TRACKERS[name]
        try:
            importlib.import_module(tracker.package)
        except ImportError:
            raise TrackerError(
                f"--log-to {name} needs the {tracker.package} package: pip install 't2s-ray[{tracker.extra}]'"
            ) from None
        if storage is not None:
            tracker.options("check", storage)
    return unique


# --------------------------------------------------------------------------- what a trial's run holds


def grid_point(params: Mapping[str, Any]) -> list[str]:
    """The trial's `--grid` coordinates as overrides (`training.lr=0.0001`); empty without `--grid`."""
    return [grid_override(k, v) for k, v in params.get(GRID_PARAM, {}).items()]


def trial_tags(params: Mapping[str, Any]) -> dict[str, str]:
    """A trial's identity as tracker tags: its ablation, seed and `--grid` point, and the ablations it shares
    training with."""
    tags = {"ablation": str(params["ablation"]), "seed": str(params["seed"])}
    if point := grid_point(params):
        tags["grid"] = ",".join(point)
    if members := shared_members(params):
        tags["shared"] = ",".join(members)
    return tags


def wandb_tags(params: Mapping[str, Any]) -> list[str]:
    """`trial_tags` as W&B labels: `ablation:<name>`, `seed:<k>`, one `grid:<key>=<value>` per axis and one
    `shared:<member>` per member."""
    return (
        [f"ablation:{params['ablation']}", f"seed:{params['seed']}"]
        + [f"grid:{p}" for p in grid_point(params)]
        + [f"shared:{m}" for m in shared_members(params)]
    )


def trial_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config a trial of `params` (its Tune config) trains with, flat (`model.size`, ...): the bundled
    study's, or the one of the study its params name (`Study.trial_config`)."""
    import dataclasses

    from t2s_ray.outputs import DEFAULT_STUDY, STUDY_PARAM
    from t2s_ray.study import load_study

    cfg = load_study(params.get(STUDY_PARAM) or DEFAULT_STUDY).trial_config(params)
    return flatten(cfg.to_dict() if hasattr(cfg, "to_dict") else dataclasses.asdict(cfg))


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a Tune result (flags, strings like `*_status` and the nested `config` left out)."""
    return {k: float(v) for k, v in result.items() if isinstance(v, numbers.Number) and not isinstance(v, bool)}


def sample_gif_names(params: Mapping[str, Any]) -> dict[str, str]:
    """Media key -> file name of the sample GIFs a finished trial keeps in its folder: `samples` for
    its own ablation, `shared/<member>/samples` for each ablation that shared its training."""
    names = {"samples": Path(samples_npz()).with_suffix(".gif").name}
    names.update(
        {shared_key(m, "samples"): Path(samples_npz(m)).with_suffix(".gif").name for m in shared_members(params)}
    )
    return names
