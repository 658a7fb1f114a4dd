"""What a user's code touches: `Study` (their config, their `train`, their ablations) and `Session` (what `train`
is handed: where it runs, and where its losses, checkpoints, metrics and samples go).

A study's `train(cfg, session)` is the user's own loop. The same `Session` runs inside a Ray Tune trial
(`t2s_ray.runner`, forwarding to Tune every `report_every` steps) and in one process without Ray (`t2s-ray
train --study`, `AblationRunner`); only the `Sink` behind it differs. Nothing here imports Ray.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from t2s_ray.config import ConfigError, build, merge, nest_value, parse_override
from t2s_ray.io import atomic_path

__all__ = ["DIRECTIONS", "Session", "Sink", "Study", "StudyError", "load_study"]

DIRECTIONS = ("lower", "higher", "real")
"""How a study's metric is ranked: lower, higher, or closer to the real clips' value (`<metric>_real`)."""

STEP_CSV = "training_metrics.csv"
STEP_JSON = "training_metrics.jsonl"


class StudyError(ValueError):
    """A study, its config or its `train` is not usable; the message names the input and the fix."""


def _frozen_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp.__dataclass_params__.frozen


@dataclasses.dataclass(frozen=True)
class Study:
    """An ablation study of the user's own model.

    `config` is the user's frozen dataclass type (nested dataclasses allowed): the schema of `--set`, `--grid`
    and `t2s-ray config`. `ablations` and `scales` map a name to overrides `{"key.path": value}` (a string
    value is parsed as `--set` parses it). `metrics` maps the study's metric names to a direction in
    `DIRECTIONS`; a metric without one is shown without a verdict.
    """

    name: str
    """The study's name (the default experiment name)."""
    config: type
    """The user's frozen dataclass type; its defaults are the baseline before any scale."""
    train: Callable[[Any, Session], None]
    """`train(cfg, session)`: trains one (ablation, seed) and ends with `session.log_evaluation`/`evaluate`."""
    ablations: Mapping[str, Mapping[str, Any]]
    """Ablation name -> overrides; must hold `baseline`."""
    scales: Mapping[str, Mapping[str, Any]] | None = None
    """Scale name -> overrides applied before the ablation's (None: one scale, `default`)."""
    baseline: str = "baseline"
    """The ablation every other one is compared with."""
    metrics: Mapping[str, str] | None = None
    """The study's own metric names -> "lower" | "higher" | "real"."""
    evaluation_only: tuple[str, ...] = ()
    """Config fields (dotted) that cannot change the trained weights."""
    evaluate: Callable | None = None
    """`evaluate(cfg, checkpoint_state, session)`: scores a trained checkpoint (for shared training)."""
    sample: Callable | None = None
    """`sample(cfg, checkpoint_state, texts, seed) -> clips` (uint8, clips x frames x H x W x 3)."""
    report_every: int = 10
    """`Session.log_step` calls between two reports to Tune (every call is written to the trial's files)."""

    def __post_init__(self) -> None:
        if not _frozen_dataclass_type(self.config):
            raise StudyError(f"study {self.name!r}: config must be a frozen dataclass type (@dataclass(frozen=True) "
                             f"class MyConfig: ...), got {self.config!r}")
        self._check_train()
        if self.baseline not in self.ablations:
            raise StudyError(f"study {self.name!r}: ablations lack the baseline {self.baseline!r} "
                             f"(have {', '.join(self.ablations) or 'none'}); add it, e.g. {self.baseline!r}: {{}}")
        bad = {m: d for m, d in (self.metrics or {}).items() if d not in DIRECTIONS}
        if bad:
            m, d = next(iter(bad.items()))
            raise StudyError(f"study {self.name!r}: metric {m!r} has direction {d!r}; use one of {DIRECTIONS}")
        if self.report_every < 1:
            raise StudyError(f"study {self.name!r}: report_every must be >= 1, got {self.report_every}")
        for scale in self.scale_names:
            base = self.resolve(self.baseline, scale)
            for ablation in self.ablations:
                if ablation != self.baseline and self.resolve(ablation, scale) == base:
                    raise StudyError(f"study {self.name!r}: ablation {ablation!r} resolves to the same config as "
                                     f"the baseline {self.baseline!r} at scale {scale!r}; give it overrides that "
                                     f"change something")

    def _check_train(self) -> None:
        if not callable(self.train):
            raise StudyError(f"study {self.name!r}: train must be a function train(cfg, session), got {self.train!r}")
        try:
            inspect.signature(self.train).bind(None, None)
        except TypeError:
            raise StudyError(f"study {self.name!r}: train{inspect.signature(self.train)} must take two arguments, "
                             f"train(cfg, session)") from None

    @property
    def scale_names(self) -> list[str]:
        """The study's scales (`default` when it defines none)."""
        return list(self.scales) if self.scales else ["default"]

    def resolve(self, ablation: str, scale: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> Any:
        """The user's config for (ablation, scale): defaults <- scale <- ablation <- `--set` overrides."""
        if ablation not in self.ablations:
            raise StudyError(f"study {self.name!r} has no ablation {ablation!r}; it has {', '.join(self.ablations)}")
        scale = scale or self.scale_names[0]
        if scale not in self.scale_names:
            raise StudyError(f"study {self.name!r} has no scale {scale!r}; its scales: {', '.join(self.scale_names)}")
        d = dataclasses.asdict(self.config())
        layers = [((self.scales or {}).get(scale, {}), f"scale {scale!r}"),
                  (self.ablations[ablation], f"ablation {ablation!r}")]
        try:
            for mapping, where in layers:
                for key, value in mapping.items():
                    try:
                        d = merge(d, nest_value(key, value, self.config, f"{key}={value}"))
                    except ConfigError as e:
                        raise StudyError(f"study {self.name!r}, {where}: {e}") from None
            for item in overrides:
                d = merge(d, parse_override(item, self.config))
            return build(self.config, d)
        except ConfigError as e:
            raise StudyError(str(e)) from None

    def direction(self, metric: str) -> str | None:
        """The direction the study gives `metric`, else None."""
        return (self.metrics or {}).get(metric)


def load_study(ref: str) -> Study:
    """The `Study` named by `package.module:attr`, imported from the current directory (as `uvicorn main:app`)."""
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise StudyError(f"--study {ref!r}: expected package.module:attr, e.g. my_pkg.study:study")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise StudyError(f"--study {ref}: cannot import {module_name!r} from {os.getcwd()} ({e}); run from the "
                         f"folder that holds it, or install it") from None
    if not hasattr(module, attr):
        raise StudyError(f"--study {ref}: module {module_name!r} has no attribute {attr!r}")
    study = getattr(module, attr)
    if not isinstance(study, Study):
        raise StudyError(f"--study {ref}: {attr!r} is a {type(study).__name__}, not a t2s_ray.Study")
    return study


def study_root(ref: str) -> Path:
    """The folder that holds the study's top-level package or module (what trials need on their path)."""
    module = sys.modules[ref.partition(":")[0]]
    depth = ref.partition(":")[0].count(".") + (1 if Path(module.__file__).name == "__init__.py" else 0)
    return Path(module.__file__).resolve().parents[depth]


class Sink(Protocol):
    """Where a `Session` sends what it does not write itself: Tune in a trial, nothing more without Ray."""

    def report(self, metrics: dict[str, Any]) -> None: ...
    def save(self, state: dict[str, Any], metrics: dict[str, Any]) -> None: ...
    def restore(self) -> dict[str, Any] | None: ...


def _scalar(value: Any, key: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StudyError(f"session.log_step: {key}={value!r} is not a number") from None


class Session:
    """What `train(cfg, session)` is handed. Attributes: `ablation`, `seed`, `device` (the GPU Ray assigned, else
    CPU), `trial_dir`. See each method."""

    def __init__(self, *, ablation: str, seed: int, device: Any, trial_dir: Path, sink: Sink, report_every: int,
                 on_step: Callable[[int], dict[str, Any]] | None = None):
        self.ablation, self.seed, self.device, self.trial_dir = ablation, seed, device, Path(trial_dir)
        self._sink, self._every, self._on_step = sink, report_every, on_step
        self._steps = 0
        self._last: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self._started = time.time()
        self._writer = None
        self.trial_dir.mkdir(parents=True, exist_ok=True)

    # --- per step -------------------------------------------------------------------------------

    def log_step(self, step: int, loss: float, **scalars: float) -> None:
        """One training step: written to the trial's `training_metrics.csv`/`.jsonl` and TensorBoard at every call,
        reported to Tune every `report_every` calls (and at the end). The GPU-memory sampler runs on its own."""
        row = {"step": int(step), "loss": _scalar(loss, "loss"),
               **{k: _scalar(v, k) for k, v in scalars.items()}, "elapsed_s": time.time() - self._started}
        if not math.isfinite(row["loss"]):
            raise StudyError(f"loss became {row['loss']} at step {step} (ablation {self.ablation}, seed {self.seed}); "
                             f"lower the learning rate or resume from the last checkpoint")
        self._write_row(row)
        self._last = {**row, **(self._on_step(row["step"]) if self._on_step else {})}
        self._steps += 1
        if self._steps % self._every == 0:
            self._sink.report(dict(self._last))

    def _write_row(self, row: dict[str, Any]) -> None:
        path = self.trial_dir / STEP_CSV
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        with open(self.trial_dir / STEP_JSON, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.trial_dir), filename_suffix=".steps")
        for k, v in row.items():
            if k != "step":
                self._writer.add_scalar(f"train/{k}", v, global_step=row["step"])

    # --- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, state: dict[str, Any]) -> None:
        """Save `state` (a dict of tensors and plain values: weights, optimiser, EMA, RNG, step ...) atomically,
        with its checksum, into the experiment's storage; `restore()` gives the newest valid one back."""
        if not isinstance(state, dict):
            raise StudyError(f"session.checkpoint: expected a dict of tensors and plain values, got "
                             f"{type(state).__name__}")
        self._sink.save(state, {**self._last, "step": self._last.get("step", 0)})

    def restore(self) -> dict[str, Any] | None:
        """The newest valid checkpoint's state after a crashed trial, a killed driver or `t2s-ray resume`; None on
        a fresh start. Damaged checkpoints are set aside, never returned."""
        return self._sink.restore()

    # --- the end --------------------------------------------------------------------------------

    def log_evaluation(self, metrics: Mapping[str, Any]) -> None:
        """The trial's final metrics under any names (numbers, or `<name>_status` strings saying why one is NaN).
        The catalog's names (`eval/fvd`, `eval/lpips`, `params/total_m` ...) get their labels and directions."""
        bad = [k for k, v in metrics.items() if not isinstance(v, (int, float, str, np.floating, np.integer))]
        if bad:
            raise StudyError(f"session.log_evaluation: {bad[0]}={metrics[bad[0]]!r} is not a number or a string")
        clean = {k: (float(v) if not isinstance(v, str) else v) for k, v in metrics.items()}
        self.final = {**(self.final or {}), **clean}

    def evaluate(self, generated: np.ndarray, real: np.ndarray, texts: list[str] | None = None,
                 **options: Any) -> dict[str, Any]:
        """t2s-ray's metrics on the user's clips (uint8, clips x frames x height x width x 3): FVD (with
        `fvd_detector=` StyleGAN-V's I3D), LPIPS, temporal consistency and motion ratio against the real clips,
        NaN with a `*_status` where one cannot be computed; logged as `log_evaluation` does. Returns them."""
        from t2s_ray.metrics.clips import clip_metrics

        metrics = clip_metrics(generated, real, **options)
        self.log_evaluation(metrics)
        return metrics

    def log_samples(self, videos: np.ndarray, texts: list[str]) -> None:
        """Generated clips (uint8, clips x frames x H x W x 3) and their captions: `samples.gif` and `samples.npz`,
        which report.html shows side by side."""
        from t2s_ray.data.video import save_gif
        from t2s_ray.outputs import SAMPLES_KEPT, samples_npz

        videos = np.asarray(videos)
        if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8 or len(videos) != len(texts):
            raise StudyError(f"session.log_samples: expected uint8 clips x frames x H x W x 3 and one caption per "
                             f"clip, got {videos.dtype} {videos.shape} with {len(texts)} captions")
        n = min(SAMPLES_KEPT, len(texts))
        npz = self.trial_dir / samples_npz(None)
        save_gif(npz.with_suffix(".gif"), videos[:n], list(texts[:n]))
        with atomic_path(npz, suffix=".npz") as tmp:
            np.savez_compressed(tmp, fake=videos[:n], texts=np.array(texts[:n]))

    def final_metrics(self) -> dict[str, Any]:
        """What the trial's final report holds; raises when `train` never logged an evaluation."""
        if self.final is None:
            raise StudyError(f"train returned without session.log_evaluation or session.evaluate (ablation "
                             f"{self.ablation}, seed {self.seed}); end train with the trial's final metrics")
        return {**self._last, "final": 1, "final_loss": self._last.get("loss", math.nan),
                "train_time_h": (time.time() - self._started) / 3600, **self.final}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
