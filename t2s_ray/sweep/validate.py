"""Every option checked before Ray starts: a bad option costs nothing and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

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
    """Check every option of `spec` before Ray starts (its study's spec says how); return the resolved configs the
    driver prepares for. Raises `SweepError`/`ConfigError`."""
    return spec.validate(available_gpus)


def validate_options(spec: SweepSpec, available_gpus: Optional[float] = None) -> None:
    """The checks every study's sweep shares: seeds, ablations, resources, failures, concurrency, GPUs, trackers.
    Storage is checked last, by `validate_storage`, once the study's own checks have passed."""
    if spec.seeds < 1:
        raise SweepError(f"--seeds {spec.seeds}: must be >= 1 (seeds 0..K-1 are run)")
    if not spec.ablations:
        raise SweepError("--ablations is empty; e.g. --ablations baseline,no_ema")
    if spec.gpus_per_trial <= 0 or (spec.gpus_per_trial > 1 and not float(spec.gpus_per_trial).is_integer()):
        raise SweepError(
            f"--gpus-per-trial {spec.gpus_per_trial:g}: use a fraction in (0, 1] (e.g. 0.5 packs two "
            f"trials per GPU) or a whole number; for CPU trials use --gpus 0"
        )
    if spec.cpus_per_trial is not None and spec.cpus_per_trial <= 0:
        raise SweepError(f"--cpus-per-trial {spec.cpus_per_trial}: must be > 0")
    if spec.max_failures < -1:
        raise SweepError("--max-failures must be >= 0 (or -1 for unlimited retries)")
    if spec.max_concurrent is not None and spec.max_concurrent < 1:
        raise SweepError("--max-concurrent must be >= 1")
    _validate_gpus(spec, available_gpus)
    if spec.log_to:
        from t2s_ray.trackers import check_trackers

        check_trackers(spec.log_to, storage=spec.experiment_dir)


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


def validate_storage(spec: SweepSpec) -> None:
    """--storage is writable (a folder, or a URI that takes a probe object) and holds no experiment of that name."""
    if spec.remote:
        _validate_remote_storage(spec)
        return
    exp = spec.experiment_dir
    if exp.exists():
        raise SweepError(
            f"experiment {exp} already exists; continue it with `t2s-ray resume {exp}` or choose another --name"
        )
    anchor = _nearest_existing(spec.storage)
    if not anchor.is_dir() or not os.access(anchor, os.W_OK | os.X_OK):
        raise SweepError(
            f"--storage {spec.storage} is not writable ({anchor} is not a writable folder); choose another --storage"
        )


def _validate_remote_storage(spec: SweepSpec) -> None:
    """A URI: reachable and writable (a probe object is written and deleted), and no experiment of that name."""
    try:
        check_writable(spec.storage)
        taken = exists(spec.experiment_dir)
    except StorageError as e:
        raise SweepError(str(e)) from None
    if taken:
        raise SweepError(
            f"experiment {spec.experiment_dir} already exists; continue it with "
            f"`t2s-ray resume {spec.experiment_dir}` or choose another --name"
        )
