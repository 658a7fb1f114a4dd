"""Resuming an experiment (a folder or a URI): `Tuner.restore` of its unfinished and errored trials with the
resources and study its sweep recorded."""

from __future__ import annotations

import json
import math
import os
import pickle
import pickletools
import time
from pathlib import Path
from typing import Callable, Optional

from t2s_ray import storage
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


STATE_FILES = ("experiment_state-", "basic-variant-state-")
"""Tune's files of one driver run, `<prefix><start time>.json`: the trials and the searcher's place in the grid."""


def set_aside_cut_state(exp: Location, say: Callable[[str], None]) -> None:
    """Tune restores from the newest driver run's state files (`STATE_FILES`). One cut by a killed driver (empty,
    or a JSON document or a pickle that ends early: copied in place by an earlier t2s-ray) cannot be read, and
    Tune then starts the grid over, which fails. Set aside each newer run whose files are not all whole (renamed
    `<name>.corrupt`, never deleted) so that Tune restores from the newest whole one; `SweepError`, before
    anything is renamed, when none is whole or when there is no state at all."""
    names = storage.names(exp)
    runs = sorted(n.removeprefix(STATE_FILES[0]) for n in names if n.startswith(STATE_FILES[0]) and n.endswith(".json"))
    if not runs:
        raise SweepError(
            f"cannot resume {exp}: it holds no {STATE_FILES[0]}*.json, Tune's record of which trials exist (the "
            "driver stopped before Tune first saved it); start the sweep again under a new --name"
        )

    def files(run: str) -> list[str]:
        return [f"{prefix}{run}" for prefix in STATE_FILES if f"{prefix}{run}" in names]

    def whole(name: str) -> bool:
        try:
            return _whole_state(read_bytes(join(exp, name)))
        except OSError:
            return False

    newer = []
    for run in reversed(runs):
        if not (damaged := [name for name in files(run) if not whole(name)]):
            break
        newer.append((run, damaged))
    else:
        raise SweepError(
            f"cannot resume {exp}: Tune's state files {', '.join(newer[0][1])} are cut short (a driver killed "
            "while they were copied) and no earlier ones are whole; the trial folders and their checkpoints are "
            "intact, but which trials the grid holds cannot be read: start the sweep again under a new --name"
        )
    if newer and not isinstance(exp, Path):  # object stores replace files whole: Tune did not cut these
        raise SweepError(
            f"cannot resume {exp}: {', '.join(newer[0][1])} cannot be read; move it out of the experiment to "
            "resume from the state saved before it"
        )
    for run, damaged in newer:
        for name in files(run):
            os.replace(exp / name, exp / f"{name}.corrupt")
        say(
            f"{exp / damaged[0]} is cut short (a driver killed while it was copied): set aside, with "
            f"{len(files(run)) - 1} other state file(s) of that driver run, as .corrupt; resuming from the state "
            "saved before it"
        )


def _whole_state(data: bytes) -> bool:
    """True for a JSON document (the experiment state) or a whole pickle (the searcher's state, despite its .json
    name), told by walking its opcodes to the final STOP without running any of them."""
    try:
        json.loads(data)
        return True
    except ValueError:
        pass
    try:
        for _ in pickletools.genops(data):
            pass
        return bool(data)
    except ValueError:
        return False


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
    set_aside_cut_state(exp, say)
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
