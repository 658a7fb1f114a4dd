"""A sweep of a user's `Study` (`t2s-ray sweep --study pkg.mod:study`): the same grid, resources, storage,
failures, resume and tables as the bundled study, with the study's own config, ablations, scales and `train`.

The study's code reaches every trial through Ray's runtime_env (`py_modules`: its top-level package or
module), so it need not be installed on the cluster's nodes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Optional

from t2s_ray.ablations import TrainingGroup
from t2s_ray.study import Study, StudyError, load_study, study_root
from t2s_ray.sweep import SweepError, SweepSpec, _resources, _validate_gpus, _validate_storage

DEFAULT_STUDY_SEEDS = 3
"""Seeds per ablation of a study sweep that names none: a paired verdict needs 3."""


@dataclass
class StudySweepSpec(SweepSpec):
    """A `SweepSpec` whose trials run `study`'s `train` (see `t2s_ray.runner.study_trial`)."""

    study: str = ""
    """`package.module:attr` of the `Study`, importable from the current directory."""

    def __post_init__(self) -> None:
        study = self.study_obj
        if self.scale is None:
            self.scale = study.scale_names[0]
        if self.scale not in study.scale_names:
            raise SweepError(f"--scale {self.scale}: study {study.name!r} has the scales "
                             f"{', '.join(study.scale_names)}")
        if self.seeds is None:
            self.seeds = DEFAULT_STUDY_SEEDS
        if not self.ablations:
            self.ablations = tuple(study.ablations)
        super().__post_init__()

    @functools.cached_property
    def study_obj(self) -> Study:
        try:
            return load_study(self.study)
        except StudyError as e:
            raise SweepError(str(e)) from None

    @property
    def all_overrides(self) -> list[str]:
        return list(self.overrides)

    @property
    def grid_axes(self) -> dict[str, list]:
        if self.grid:
            raise SweepError("--grid is not available for a --study sweep yet; add the values as ablations")
        return {}

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        return {"study": self.study, "ablation": tune.grid_search(list(self.ablations)),
                "seed": tune.grid_search(list(range(self.seeds))), "scale": self.scale,
                "overrides": self.all_overrides, "baseline": self.study_obj.baseline}

    def training_groups(self) -> list[TrainingGroup]:
        return [TrainingGroup(a, (a,)) for a in self.ablations]

    def plan_lines(self) -> list[str]:
        s = self.study_obj
        return [f"plan: study {s.name!r} ({self.study}): {len(self.ablations)} ablation(s) x {self.seeds} seed(s) = "
                f"{len(self.ablations) * self.seeds} trial(s) at scale {self.scale}",
                "  every ablation trains its own weights"]

    def validate(self, available_gpus: Optional[float] = None) -> list:
        """The study's ablations, scale and `--set` overrides resolve; GPUs and storage as for any sweep.
        Returns no configs: the driver has no data of the study's to prepare."""
        if self.seeds < 1:
            raise SweepError(f"--seeds {self.seeds}: must be >= 1 (seeds 0..K-1 are run)")
        study = self.study_obj
        if study.baseline not in self.ablations:
            raise SweepError(f"--ablations must include the baseline {study.baseline!r} (every verdict is a "
                             f"comparison with it)")
        try:
            for ablation in self.ablations:
                study.resolve(ablation, self.scale, self.all_overrides)
        except StudyError as e:
            raise SweepError(str(e)) from None
        _validate_gpus(self, available_gpus)
        if self.log_to:
            raise SweepError("--log-to is not available for a --study sweep yet")
        _validate_storage(self)
        return []

    def runtime_env(self) -> Optional[dict]:
        return study_runtime_env(self.study)

    def trainable(self):
        return study_trainable(_resources(self))

    def sweep_record(self) -> dict[str, Any]:
        s = self.study_obj
        return {"study": self.study, "study_root": str(study_root(self.study)), "baseline": s.baseline,
                "metrics": dict(s.metrics or {})}


def study_runtime_env(ref: str) -> dict:
    """Ray's runtime_env that ships the (imported) study's top-level package or module to every worker."""
    module = ref.partition(":")[0]
    top = study_root(ref) / module.split(".")[0]
    return {"py_modules": [str(top if top.is_dir() else top.with_suffix(".py"))]}


def study_trainable(resources: dict[str, float]):
    from ray import tune

    from t2s_ray.runner import study_trial

    return tune.with_resources(study_trial, resources)
