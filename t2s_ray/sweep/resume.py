"""Resuming an experiment (a folder or a URI): `Tuner.restore` of its unfinished and errored trials with the
resources and study its sweep recorded."""

from __future__ import annotations

import json
import math
import pickle
import time
from pathlib import Path
from typing import Callable, Optional

from t2s_ray.analysis.read import ray_statuses
from t2s_ray.cluster import (
    RayOptions,
    start_ray,
)
from t2s_ray.outputs import SWEEP_FILE
from t2s_ray.storage import (
    Location,
    StorageError,
    check_reachable,
    filesystem,
    join,
    normalize,
    read_bytes,
)
from t2s_ray.sweep.run import SweepOutcome, _outcome, prepare_tune, trainable_with_resources
from t2s_ray.sweep.spec import SweepError


def saved_resources(exp: Location, say: Callable[[str], None]) -> dict[str, float]:
    """The resources the sweep of `exp` asked for per trial; an experiment written before they were saved gets
    1 CPU and no GPU for trials not yet started, and is told so."""
    path = join(exp, SWEEP_FILE)
    try:
        resources = json.loads(read_bytes(path))["resources"]
        return {"cpu": float(resources["cpu"]), "gpu": float(resources["gpu"])}
    except FileNotFoundError:
        say(
            f"note: {exp} has no {SWEEP_FILE} (written by an older t2s-ray): trials not started yet will get "
            "1 CPU and no GPU; started ones keep what they had"
        )
        return {"cpu": 1.0, "gpu": 0.0}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SweepError(
            f"cannot read {path} ({e}); it records each trial's CPUs and GPUs: restore it, or delete "
            "it to give trials not yet started 1 CPU and no GPU"
        ) from None


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


def _check_tuner_pkl(exp: Location) -> None:
    """Refuse a missing, truncated or corrupt `tuner.pkl` before Ray starts (Tune cannot rebuild it)."""
    try:
        data = read_bytes(join(exp, "tuner.pkl"))
    except (FileNotFoundError, IsADirectoryError):
        raise SweepError(
            f"{exp} is not a t2s-ray experiment (no tuner.pkl); pass the folder that "
            f"`t2s-ray sweep` printed, e.g. results/<name> or s3://bucket/prefix/<name>"
        ) from None
    try:
        pickle.loads(data)
    except (EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError, OSError) as e:
        raise SweepError(
            f"cannot restore {exp}: tuner.pkl is corrupt or truncated ({type(e).__name__}: "
            f"{e}); the trial folders and checkpoints are intact, start a new sweep to continue"
        ) from None


def finished_trials(exp: Location) -> Optional[int]:
    """The number of trials of `exp` when every one has finished, None otherwise: Tune's newest experiment state
    lists every trial of the grid (those not yet started too) as terminated, and each one's result.json ends with
    its final report (a trial Tune stopped on Ctrl+C is terminated too, without one)."""
    statuses = ray_statuses(exp)
    if not statuses or set(statuses.values()) != {"TERMINATED"}:
        return None
    for folder in statuses:
        try:
            lines = read_bytes(join(exp, folder, "result.json")).decode("utf-8", errors="replace").splitlines()
            last = json.loads(next(line for line in reversed(lines) if line.strip()))
        except (OSError, StopIteration, ValueError):
            return None
        if not (isinstance(last, dict) and last.get("final")):
            return None
    return len(statuses)


def resume_sweep(
    experiment_dir: str | Path,
    restart_errored: bool = False,
    quiet: bool = False,
    say: Callable[[str], None] = print,
    address: Optional[str] = None,
    dashboard: bool = True,
) -> SweepOutcome:
    """`Tuner.restore` unfinished and errored trials of an existing experiment (a folder or a URI) and run them,
    on a fresh local Ray or, with `address`, on the cluster there (as `sweep --address`); `dashboard`: start the
    Ray dashboard with a fresh local Ray (on 127.0.0.1, as `sweep`'s default)."""
    exp = _experiment_location(experiment_dir)
    _check_tuner_pkl(exp)
    resources = saved_resources(exp, say)
    study = saved_study(exp)
    runtime_env = None
    if study:
        from t2s_ray.study import StudyError, load_study
        from t2s_ray.sweep.study import study_runtime_env

        try:
            load_study(study)
        except StudyError as e:
            raise SweepError(f"cannot resume {exp}: {e}") from None
        runtime_env = study_runtime_env(study)
    t0 = time.perf_counter()
    if (n := finished_trials(exp)) is not None:
        say(f"every trial of {exp} has finished ({n} of {n}): nothing to resume, Ray not started")
        return SweepOutcome(exp, n, 0, n, time.perf_counter() - t0, math.nan)
    info = start_ray(RayOptions(address=address, quiet=quiet, dashboard=dashboard, runtime_env=runtime_env), say)
    from ray import tune  # after init_ray: Ray reads its network settings at import

    prepare_tune()
    try:
        # trials already created keep the resources stored in the experiment state; trials Ray creates after the
        # restore (pending ones, under a concurrency cap) get these: the sweep's own
        tuner = tune.Tuner.restore(
            str(exp),
            trainable=trainable_with_resources(resources),
            resume_unfinished=True,
            resume_errored=not restart_errored,
            restart_errored=restart_errored,
        )
    except (EOFError, pickle.UnpicklingError, ValueError, RuntimeError, OSError) as e:
        raise SweepError(
            f"cannot restore {exp}: {type(e).__name__}: {e} (tuner.pkl or experiment state may be corrupt)"
        ) from None
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
