"""A sweep of a user's `Study` (`t2s-ray sweep --study pkg.mod:study`): the same grid, resources, storage,
failures, resume and tables as the bundled study, with the study's own config, ablations, scales and `train`.

The study's code reaches every trial through Ray's runtime_env (`py_modules`: its top-level package or
module), so it need not be installed on the cluster's nodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from t2s_ray.outputs import ARMS_PARAM, GRID_PARAM, grid_override
from t2s_ray.plan import Probe, TrainingGroup
from t2s_ray.study import Study, StudyError, load_study, study_root
from t2s_ray.sweep.spec import SweepError, SweepSpec, parse_grid
from t2s_ray.sweep.validate import validate_options, validate_storage

DEFAULT_STUDY_SEEDS = 3
"""Seeds per ablation of a study sweep that names none: a paired verdict needs 3."""


@dataclass
class StudySweepSpec(SweepSpec):
    """A `SweepSpec` whose trials run `study`'s `train` (see `t2s_ray.runner.study_trial`)."""

    study: str = ""
    """`package.module:attr` of the `Study`, importable from the current directory."""
    ablations: tuple[str, ...] = ()
    """Empty: every ablation of the study."""
    scale: Optional[str] = None
    """None: the study's first scale."""

    def __post_init__(self) -> None:
        study = self.study_obj
        if self.scale is None:
            self.scale = study.scale_names[0]
        if self.scale not in study.scale_names:
            raise SweepError(
                f"--scale {self.scale}: study {study.name!r} has the scales {', '.join(study.scale_names)}"
            )
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

    @functools.cached_property
    def grid_axes(self) -> dict[str, list]:
        """The --grid axes, typed by the study's config dataclass."""
        return parse_grid(self.grid, self.overrides, schema=self.study_obj.config)

    def param_space(self) -> dict[str, Any]:
        from ray import tune

        groups = self.training_groups()
        space: dict[str, Any] = {
            "study": self.study,
            "ablation": tune.grid_search([g.trainer for g in groups]),
            "seed": tune.grid_search(list(range(self.seeds))),
            "scale": self.scale,
            "overrides": self.all_overrides,
            "baseline": self.study_obj.baseline,
        }
        space[ARMS_PARAM] = {a: self.study_obj.describe(a) for a in self.ablations}
        if self.grid_axes:
            space[GRID_PARAM] = {key: tune.grid_search(values) for key, values in self.grid_axes.items()}
        shared = {g.trainer: list(g.others) for g in groups if g.others}
        if shared:  # the trial of `trainer` also scores these ablations (Study.evaluate on its final checkpoint)
            space["shared"] = shared
        return space

    @functools.cached_property
    def _training_groups(self) -> list[TrainingGroup]:
        """Ablations that differ only in the study's `evaluation_only` fields train once (see
        `Study.training_groups`); a --grid point sets the same value in each, so the groups hold at every one."""
        study = self.study_obj
        configs = {a: study.resolve(a, self.scale, self.all_overrides) for a in self.ablations}
        groups = study.training_groups(configs, share=self.share_training)
        return [TrainingGroup(trainer, members) for trainer, members in groups]

    def plan_subject(self) -> str:
        return f"study {self.study_obj.name!r} ({self.study}): "

    def shared_training_how(self) -> str:
        return f"{', '.join(self.study_obj.evaluation_only)}), each scored by evaluate on the final checkpoint"

    def validate(self, available_gpus: Optional[float] = None) -> list:
        """The options every sweep has, then the study's ablations, scale, `--set` overrides and grid values resolve;
        storage last. Returns no configs: the driver has no data of the study's to prepare."""
        study = self.study_obj
        if self.ablations and study.baseline not in self.ablations:
            raise SweepError(
                f"--ablations must include the baseline {study.baseline!r} (every verdict is a comparison with it)"
            )
        validate_options(self, available_gpus)
        try:
            for ablation in self.ablations:
                study.resolve(ablation, self.scale, self.all_overrides)
            for key, values in self.grid_axes.items():  # every grid value must give a valid config
                for value in values:
                    study.resolve(study.baseline, self.scale, [*self.all_overrides, grid_override(key, value)])
        except StudyError as e:
            raise SweepError(str(e)) from None
        validate_storage(self)
        return []

    def probes(
        self, configs, device: str, say: Callable[[str], None], threads: int, probe_steps: int = 3
    ) -> dict[str, Probe]:
        """The user's `train` of each training group timed for `probe_steps` steps after one (`probe_study`)."""
        say(
            f"probing each training group's train for {probe_steps} step(s) after one on {device} "
            f"(its evaluation is not probed) ..."
        )
        study = self.study_obj
        return {
            g.trainer: probe_study(
                study, study.resolve(g.trainer, self.scale, self.all_overrides), g.trainer, probe_steps, device
            )
            for g in self.training_groups()
        }

    def trial_steps(self, configs) -> Optional[int]:
        """From the config field `Study.steps` names (the largest over the sweep's ablations); None without it."""
        study = self.study_obj
        steps = [study.steps_of(study.resolve(a, self.scale, self.all_overrides)) for a in self.ablations]
        return None if None in steps else max(steps)

    def samplings_per_member(self, configs) -> int:
        return 0  # the study's evaluation is its own: not in the estimate

    def runtime_env(self) -> Optional[dict]:
        return study_runtime_env(self.study)

    def sweep_record(self) -> dict[str, Any]:
        s = self.study_obj
        return {
            "study": self.study,
            "study_root": str(study_root(self.study)),
            "baseline": s.baseline,
            "metrics": dict(s.metrics or {}),
        }


def study_runtime_env(ref: str) -> dict:
    """Ray's runtime_env that ships the (imported) study's top-level package or module to every worker."""
    module = ref.partition(":")[0]
    top = study_root(ref) / module.split(".")[0]
    return {"py_modules": [str(top if top.is_dir() else top.with_suffix(".py"))]}


class _ProbeDone(BaseException):
    """Raised from `log_step` once the probe has timed its steps (a BaseException: `except Exception` in the
    user's loop does not swallow it)."""


class _DiscardSink:
    """The probe's sink: nothing is reported, saved or restored."""

    def report(self, metrics: dict[str, Any]) -> None:
        pass

    def save(self, state: dict[str, Any], metrics: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        pass

    def restore(self) -> None:
        return None


def probe_study(study: Study, cfg: Any, trainer: str, steps: int, device: str) -> Probe:
    """Time `steps` of the user's `train(cfg, session)` after its first one (the warm-up): the median time between
    two `log_step` calls, and the peak GPU memory on CUDA. Nothing is kept: the run stops inside `log_step`."""
    import math
    import statistics
    import tempfile
    import time

    import torch

    from t2s_ray.study import Session, with_seed

    marks: list[float] = []

    def on_step(step: int) -> dict[str, Any]:
        marks.append(time.perf_counter())
        if len(marks) > steps:
            raise _ProbeDone
        return {}

    cuda = device == "cuda"
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    with tempfile.TemporaryDirectory(prefix="t2s-probe-") as tmp:
        session = Session(
            ablation=trainer,
            seed=0,
            device=dev,
            trial_dir=Path(tmp),
            sink=_DiscardSink(),
            report_every=2**31,
            on_step=on_step,
        )
        try:
            study.train(with_seed(cfg, 0), session)
        except _ProbeDone:
            pass
        except Exception as e:  # the user's code: say whose and where, not a traceback of ours
            raise SweepError(
                f"--dry-run: train of ablation {trainer!r} raised {type(e).__name__}: {e}; run "
                f"`t2s-ray train {trainer} --study ...` to see the traceback"
            ) from None
        finally:
            session.close()
    if len(marks) < 2:
        raise SweepError(
            f"--dry-run: train of ablation {trainer!r} called session.log_step {len(marks)} time(s); "
            f"timing a step needs at least 2 (one per training step)"
        )
    step_s = statistics.median(b - a for a, b in zip(marks, marks[1:]))
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else math.nan
    total = torch.cuda.get_device_properties(dev).total_memory / 2**30 if cuda else math.nan
    return Probe(trainer, str(dev), step_s, 0.0, peak, total)
