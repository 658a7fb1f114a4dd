"""Every option checked before Ray starts: a bad option costs nothing and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from t2s_ray.ablations import grid_override, resolve
from t2s_ray.config import diff
from t2s_ray.storage import (
    StorageError,
    check_writable,
    exists,
)
from t2s_ray.sweep.spec import SweepError, SweepSpec


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
