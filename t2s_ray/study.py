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
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from t2s_ray.io import atomic_path
from t2s_ray.schema import ConfigError, build, field_type, merge, nest_value, parse_override

__all__ = [
    "DIRECTIONS",
    "Session",
    "Sink",
    "Study",
    "StudyError",
    "load_study",
    "pick_device",
    "train_and_score",
    "with_seed",
]

DIRECTIONS = ("lower", "higher", "real")
"""How a study's metric is ranked: lower, higher, or closer to the real clips' value (`<metric>_real`)."""

STEP_CSV = "training_metrics.csv"
STEP_JSON = "training_metrics.jsonl"


class StudyError(ValueError):
    """A study, its config or its `train` is not usable; the message names the input and the fix."""


def pick_device(
    requested: str | None = None,
    gpu_ids: list | None = None,
    trial: str = "this trial",
    error: type[Exception] = StudyError,
) -> Any:
    """The torch device to run on: the CPU under `requested` = `cpu`, else a GPU where there is one.

    `requested` is a config's device setting: `cpu`, `cuda` (a GPU must be there) or `auto`; None for a config
    without one (as `auto`). `gpu_ids` are the GPUs Ray assigned `trial` (the worker sees only those: cuda:0 is the
    first; none: the CPU), or None outside Ray, where any GPU CUDA sees counts. CUDA asked for and missing (a GPU
    assigned to a torch without CUDA, or `cuda` without a GPU) raises `error`, naming the fix."""
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    cuda = torch.cuda.is_available()
    build = f"torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}"
    if gpu_ids is None:
        if requested == "cuda" and not cuda:
            raise error(f"device=cuda but CUDA is not available ({build}); use --set device=cpu")
        return torch.device("cuda", 0) if cuda else torch.device("cpu")
    if gpu_ids and not cuda:
        or_cpu = " or --set device=cpu" if requested else ""  # only a config with a device setting has the key
        raise error(
            f"{trial} was assigned GPU {','.join(map(str, gpu_ids))} but CUDA is not available in the worker "
            f"({build}); install a CUDA build of torch, or run on CPU with --gpus 0{or_cpu}"
        )
    if requested == "cuda" and not gpu_ids:
        raise error("device=cuda but Ray assigned this trial no GPU; use --gpus-per-trial > 0")
    return torch.device("cuda", 0) if gpu_ids else torch.device("cpu")


def _frozen_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and tp.__dataclass_params__.frozen


@dataclasses.dataclass(frozen=True)
class Study:
    """An ablation study of the user's own model.

    Study(name, config, train, ablations, scales=None, baseline="baseline", metrics=None, evaluation_only=(),
          evaluate=None, sample=None, report_every=10, steps=None)

    - `config`: the user's frozen dataclass type (nested dataclasses allowed): the schema of `--set`, `--grid`
      and `t2s-ray config`. A field named `seed` is set to each trial's seed.
    - `train(cfg, session)`: trains one (ablation, seed) with `cfg`; see `Session`. It ends with
      `session.log_evaluation`/`session.evaluate`, or, when `evaluate` is given, with `session.checkpoint` of
      the final weights (then t2s-ray scores them with `evaluate`; a `train` that scores its own run may still
      do so, and `evaluate` then scores only the other ablations of a shared run).
    - `ablations`, `scales`: name -> overrides `{"key.path": value}` (a string value is parsed as `--set`
      parses it); `ablations` holds `baseline`. Overrides apply defaults <- scale <- ablation <- `--set`.
    - `metrics`: the study's metric names -> "lower" | "higher" | "real" (closer to the real clips' value,
      `<name>_real`); a metric with no direction here or in the catalog is shown without a verdict.
    - `evaluation_only`: dotted config fields that cannot change the trained weights (e.g. `("train.ema",)` when
      `train` keeps the EMA either way). Ablations differing only in them train once per seed.
    - `evaluate(cfg, checkpoint_state, session)`: scores the state `train` checkpointed last as the ablation
      `cfg` (called for each ablation of a shared run), ending with `session.log_evaluation`/`evaluate`.
    - `sample(cfg, checkpoint_state, texts, seed) -> clips`: uint8 clips x frames x H x W x 3, one per text
      (`t2s-ray sample`).
    - `report_every`: `session.log_step` calls between two reports to Tune.
    - `steps`: the dotted int field holding the number of training steps (`sweep --dry-run`'s estimate).

    Checkpoints: the newest 2 per trial are kept (the last one is never removed).
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
    """Config fields (dotted, e.g. `"train.ema"`) that cannot change the trained weights: ablations that differ
    only in them train once per seed and are each scored by `evaluate` (needs `evaluate`)."""
    evaluate: Callable | None = None
    """`evaluate(cfg, checkpoint_state, session)`: scores the trained checkpoint for one ablation of a shared
    training run (`cfg` is that ablation's config, `checkpoint_state` what `train` last gave
    `session.checkpoint`); it ends with `session.log_evaluation`/`evaluate`, as `train` does."""
    sample: Callable | None = None
    """`sample(cfg, checkpoint_state, texts, seed) -> clips` (uint8, clips x frames x H x W x 3)."""
    report_every: int = 10
    """`Session.log_step` calls between two reports to Tune (every call is written to the trial's files)."""
    steps: str | None = None
    """The dotted config field that holds the number of training steps (e.g. `"train.steps"`): lets
    `sweep --dry-run` turn its probe's time per step into a cost estimate."""
    back_translator: str | None = None
    """`package.module:callable`, the sign-to-text model `Session.evaluate` back-translates the clips with
    when it is given none (BLEU, chrF, ROUGE-L, WER: `t2s_ray.metrics.back_translation`); None: no text metrics."""

    def __post_init__(self) -> None:
        if not _frozen_dataclass_type(self.config):
            raise StudyError(
                f"study {self.name!r}: config must be a frozen dataclass type (@dataclass(frozen=True) "
                f"class MyConfig: ...), got {self.config!r}"
            )
        self._check_train()
        if self.baseline not in self.ablations:
            raise StudyError(
                f"study {self.name!r}: ablations lack the baseline {self.baseline!r} "
                f"(have {', '.join(self.ablations) or 'none'}); add it, e.g. {self.baseline!r}: {{}}"
            )
        bad = {m: d for m, d in (self.metrics or {}).items() if d not in DIRECTIONS}
        if bad:
            m, d = next(iter(bad.items()))
            raise StudyError(f"study {self.name!r}: metric {m!r} has direction {d!r}; use one of {DIRECTIONS}")
        self._check_evaluation_only()
        if self.steps is not None:
            try:
                tp = field_type(self.steps, self.config, self.steps)
            except ConfigError as e:
                raise StudyError(f"study {self.name!r}: steps {self.steps!r}: {str(e).split(': ', 1)[-1]}") from None
            if tp not in (int, "int"):
                raise StudyError(
                    f"study {self.name!r}: steps {self.steps!r} must name an int field of the config "
                    f"(the number of training steps), not {getattr(tp, '__name__', tp)}"
                )
        if self.report_every < 1:
            raise StudyError(f"study {self.name!r}: report_every must be >= 1, got {self.report_every}")
        for scale in self.scale_names:
            base = self.resolve(self.baseline, scale)
            for ablation in self.ablations:
                if ablation != self.baseline and self.resolve(ablation, scale) == base:
                    raise StudyError(
                        f"study {self.name!r}: ablation {ablation!r} resolves to the same config as "
                        f"the baseline {self.baseline!r} at scale {scale!r}; give it overrides that "
                        f"change something"
                    )

    def _check_train(self) -> None:
        if not callable(self.train):
            raise StudyError(f"study {self.name!r}: train must be a function train(cfg, session), got {self.train!r}")
        try:
            inspect.signature(self.train).bind(None, None)
        except TypeError:
            raise StudyError(
                f"study {self.name!r}: train{inspect.signature(self.train)} must take two arguments, "
                f"train(cfg, session)"
            ) from None

    def _check_evaluation_only(self) -> None:
        if isinstance(self.evaluation_only, str):
            raise StudyError(
                f"study {self.name!r}: evaluation_only must be a tuple of field names, e.g. ({self.evaluation_only!r},)"
            )
        if self.evaluation_only and self.evaluate is None:
            raise StudyError(
                f"study {self.name!r}: evaluation_only {list(self.evaluation_only)} needs "
                f"evaluate(cfg, checkpoint_state, session) to score each ablation of a shared training "
                f"run; give it, or drop evaluation_only to train every ablation on its own"
            )
        if self.evaluate is not None:
            try:
                inspect.signature(self.evaluate).bind(None, None, None)
            except TypeError:
                raise StudyError(
                    f"study {self.name!r}: evaluate{inspect.signature(self.evaluate)} must take three "
                    f"arguments, evaluate(cfg, checkpoint_state, session)"
                ) from None
        for key in self.evaluation_only:
            try:
                field_type(key, self.config, key)
            except ConfigError as e:
                why = str(e).split(": ", 1)[-1]
                raise StudyError(f"study {self.name!r}: evaluation_only {key!r}: {why}") from None

    def training_key(self, cfg: Any) -> str:
        """What decides `cfg`'s trained weights: the config without its `evaluation_only` fields (as JSON)."""
        d = dataclasses.asdict(cfg)
        for key in self.evaluation_only:
            *path, last = key.split(".")
            node = d
            for part in path:
                node = node[part]
            node.pop(last, None)
        return json.dumps(d, sort_keys=True, default=str)

    def training_groups(self, configs: Mapping[str, Any], share: bool = True) -> list[tuple[str, tuple[str, ...]]]:
        """(trainer, members) per training run: ablations (name -> resolved config) whose configs differ only in
        `evaluation_only` fields train once, with the first member's config; every one alone without
        `evaluation_only` or with `share=False`. In the order of each group's first member."""
        groups: dict[str, list[str]] = {}
        for name, cfg in configs.items():
            key = self.training_key(cfg) if share and self.evaluation_only else name
            groups.setdefault(key, []).append(name)
        return [(members[0], tuple(members)) for members in groups.values()]

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
        layers = [
            ((self.scales or {}).get(scale, {}), f"scale {scale!r}"),
            (self.ablations[ablation], f"ablation {ablation!r}"),
        ]
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

    def steps_of(self, cfg: Any) -> int | None:
        """The number of training steps `cfg` runs (the `steps` field), else None."""
        if self.steps is None:
            return None
        value = cfg
        for part in self.steps.split("."):
            value = getattr(value, part)
        return int(value)

    def direction(self, metric: str) -> str | None:
        """The direction the study gives `metric`, else None."""
        return (self.metrics or {}).get(metric)

    def describe(self, ablation: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """What the report says of `ablation`: a one-line description (its overrides) and its primary metrics
        (none: `t2s-ray analyze` then decides on the study's first declared metric)."""
        overrides = self.ablations.get(ablation, {})
        text = "the reference arm" if ablation == self.baseline else ", ".join(f"{k}={v}" for k, v in overrides.items())
        return {"description": text, "primary": []}

    def config_dict(self, cfg: Any) -> dict[str, Any]:
        """`cfg` as a JSON-ready nested dict (what the trial folder's `t2s_config.json` holds)."""
        return dataclasses.asdict(cfg)

    # --- how a sweep trial's params become its config and device (a study with its own ablation files or
    # device setting, as the bundled one, overrides these) ---------------------------------------------------

    def trial_config(self, params: Mapping[str, Any], ablation: str | None = None) -> Any:
        """The config of the sweep trial `params` (params.json: ablation, scale, overrides, --grid point, seed), or
        of the `ablation` that shared its training."""
        from t2s_ray.outputs import GRID_PARAM, grid_override

        grid = [grid_override(k, v) for k, v in (params.get(GRID_PARAM) or {}).items()]
        cfg = self.resolve(ablation or params["ablation"], params.get("scale"), [*params.get("overrides", []), *grid])
        return with_seed(cfg, int(params["seed"]))

    def trial_device(self, cfg: Any, gpu_ids: list) -> Any:
        """The device of a trial Ray assigned `gpu_ids`: its GPU, else CPU; a GPU without CUDA is an error."""
        return pick_device(None, gpu_ids)


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
        raise StudyError(
            f"--study {ref}: cannot import {module_name!r} from {os.getcwd()} ({e}); run from the "
            f"folder that holds it, or install it"
        ) from None
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
    """Where a `Session` sends what it does not write itself: Tune in a trial, nothing more without Ray.
    `save` writes with `write_session_checkpoint`, `restore` reads with `SessionCheckpointLoader`."""

    def report(self, metrics: dict[str, Any]) -> None: ...
    def save(
        self, state: dict[str, Any] | Path, metrics: dict[str, Any], meta: dict[str, Any] | None = None
    ) -> None: ...
    def restore(self) -> tuple[dict[str, Any] | Path, dict[str, Any]] | None: ...


RESTORED_DIR = "restored_checkpoint"
"""In the trial folder: the files of the checkpoint `Session.restore` returned, when it was given as a folder."""


def write_session_checkpoint(
    directory: Path, state: dict[str, Any] | Path, metrics: dict[str, Any], meta: dict[str, Any] | None = None
) -> Path:
    """One `Session.checkpoint`: a state dict, or a folder's files, with the last step's metrics (so that a
    trial restored at its last step still reports its final loss) and the caller's `meta` in `meta.json`."""
    from t2s_ray.checkpoint import write_checkpoint

    meta = {**(meta or {}), "step": int(metrics.get("step", 0)), "last": metrics}
    if isinstance(state, Path):
        return write_checkpoint(directory, {}, meta, files=state)
    return write_checkpoint(directory, state, meta)


class SessionCheckpointLoader:
    """`load(folder)` for `restore_newest_in`: keeps the state (or, for a folder checkpoint, a copy of its files
    in `<trial_dir>/restored_checkpoint`) and the metrics of its step."""

    def __init__(self, trial_dir: Path):
        self.trial_dir = trial_dir
        self.loaded: tuple[dict[str, Any] | Path, dict[str, Any]] | None = None

    def __call__(self, folder: Path) -> None:
        import shutil

        from t2s_ray.checkpoint import FILES_DIR, read_checkpoint

        state, meta = read_checkpoint(folder)
        if "files" in meta:
            target = self.trial_dir / RESTORED_DIR
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(folder / FILES_DIR, target)
            state = target
        self.loaded = (state, meta.get("last") or {})


def _scalar(value: Any, key: str) -> float | str:
    if isinstance(value, str) and key.endswith("_status"):
        return value  # why a number is NaN, as in log_evaluation
    try:
        return float(value)
    except (TypeError, ValueError):
        raise StudyError(f"session.log_step: {key}={value!r} is not a number") from None


class Session:
    """What `train(cfg, session)` (and `evaluate`) is handed.

    Attributes: `ablation` (str), `seed` (int), `device` (a `torch.device`: the GPU Ray assigned, else CPU),
    `trial_dir` (a local `Path` for your own files), `node` (where the trial runs, for your messages: `Ray node
    <id> (<hostname>)` in a sweep). Methods: `log_step`, `checkpoint`, `restore`,
    `log_evaluation`, `evaluate`, `log_samples`."""

    def __init__(
        self,
        *,
        ablation: str,
        seed: int,
        device: Any,
        trial_dir: Path,
        sink: Sink,
        report_every: int,
        on_step: Callable[[int], dict[str, Any]] | None = None,
        member: bool = False,
        progress: Callable[[int], None] | None = None,
        node: str | None = None,
        back_translator: Any = None,
    ):
        self.ablation, self.seed, self.device, self.trial_dir = ablation, seed, device, Path(trial_dir)
        self.back_translator = back_translator  # `evaluate`'s default (the study's `Study.back_translator`)
        self.node = node or f"host {socket.gethostname()}"  # where it runs, for messages that must say so
        self._sink, self._every, self._on_step, self._progress = sink, report_every, on_step, progress
        self._pending: dict[str, Any] | None = None  # a report due at the last log_step, sent with what follows
        self._member = member  # scoring another ablation of a shared training run: its samples get their own name
        self._state: dict[str, Any] | None = None  # the last state checkpointed or restored, and
        self._steps_since_state = 0  # the log_step calls since
        self._steps = 0
        self._last: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self._started = time.time()
        self._writer = None
        self._csv_fields: list[str] | None = None  # training_metrics.csv's columns
        self.trial_dir.mkdir(parents=True, exist_ok=True)

    # --- per step -------------------------------------------------------------------------------

    def log_step(self, step: int, loss: float, **scalars: float) -> None:
        """One training step: written to the trial's `training_metrics.csv`/`.jsonl` and TensorBoard at every call,
        reported to Tune every `report_every` calls (and at the end). The GPU-memory sampler runs on its own.
        `scalars` are numbers, or strings under `<name>_status` keys saying why a number is NaN; `elapsed_s`
        defaults to the seconds since the trial started (continued across a restore).

        A report due at this call goes to Tune with the next call, or with `checkpoint` when one follows (one
        row per step in the trial's results, the checkpoint's among them)."""
        self._flush()
        row = {
            "step": int(step),
            "loss": _scalar(loss, "loss"),
            "elapsed_s": time.time() - self._started,
            **{k: _scalar(v, k) for k, v in scalars.items()},
        }
        if not math.isfinite(row["loss"]):
            raise StudyError(
                f"loss became {row['loss']} at step {step} (ablation {self.ablation}, seed {self.seed}); "
                f"lower the learning rate or resume from the last checkpoint"
            )
        self._write_row(row)
        self._last = {**row, **(self._on_step(row["step"]) if self._on_step else {})}
        self._steps += 1
        self._steps_since_state += 1
        if self._steps % self._every == 0:
            self._pending = dict(self._last)

    def at_step(self, step: int) -> None:
        """Optional, between `log_step` calls: the step the loop is at, so that the GPU-memory sampler records
        its rows against it (nothing is written or reported)."""
        if self._progress is not None:
            self._progress(int(step))

    def _flush(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._sink.report(pending)

    def _write_row(self, row: dict[str, Any]) -> None:
        path = self.trial_dir / STEP_CSV
        if self._csv_fields is None and path.exists():  # a restored trial appends to its own file
            with open(path, newline="") as f:
                self._csv_fields = next(csv.reader(f), None)
        if self._csv_fields is None or not set(row) <= set(self._csv_fields):
            # a first row, or keys the header lacks: the file is rewritten under the union of the columns
            old_rows = []
            if self._csv_fields is not None:
                with open(path, newline="") as f:
                    old_rows = list(csv.DictReader(f))
            self._csv_fields = [*(self._csv_fields or []), *(k for k in row if k not in (self._csv_fields or []))]
            with atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._csv_fields)
                writer.writeheader()
                writer.writerows(old_rows)
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._csv_fields).writerow(row)
        with open(self.trial_dir / STEP_JSON, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is None:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(str(self.trial_dir), filename_suffix=".steps")
        for k, v in row.items():  # NaN (perf/mfu on a CPU, say) stays in the CSV: TensorBoard cannot plot it
            if k != "step" and not isinstance(v, str) and math.isfinite(v):
                self._writer.add_scalar(f"train/{k}", v, global_step=row["step"])

    # --- checkpoints ----------------------------------------------------------------------------

    def checkpoint(self, state: dict[str, Any] | str | Path, meta: Mapping[str, Any] | None = None) -> None:
        """Save `state` (a dict of tensors and plain values: weights, optimiser, EMA, RNG, step ...) atomically,
        with its checksum, into the experiment's storage; `restore()` gives the newest valid one back. `state` may
        instead be a folder in your own format (e.g. what `save_pretrained` wrote): its files are copied, each
        with a checksum, and `restore()` returns a local copy of the folder. `meta`: plain JSON values kept in
        the checkpoint's `meta.json`, readable without loading the state (e.g. your config)."""
        if self._member:
            raise StudyError(
                f"session.checkpoint in evaluate (ablation {self.ablation}): evaluate scores the "
                f"trained checkpoint it is given and saves none; checkpoint in train"
            )
        if isinstance(state, (str, os.PathLike)):
            state = Path(state)
            if not state.is_dir():
                raise StudyError(
                    f"session.checkpoint: {state} is not a folder; give a folder of checkpoint files "
                    f"or a dict of tensors and plain values"
                )
        elif not isinstance(state, dict):
            raise StudyError(
                f"session.checkpoint: expected a dict of tensors and plain values or a folder, got "
                f"{type(state).__name__}"
            )
        reserved = sorted(set(meta or {}) & {"step", "last", "files", "sha256", "format_version"})
        if reserved:
            raise StudyError(f"session.checkpoint: meta key {reserved[0]!r} is t2s-ray's own; name it otherwise")
        self._pending = None  # the checkpoint's report carries the same metrics
        self._sink.save(state, {**self._last, "step": self._last.get("step", 0)}, dict(meta or {}))
        self._state, self._steps_since_state = state, 0

    def restore(self) -> dict[str, Any] | Path | None:
        """The newest valid checkpoint after a crashed trial, a killed driver or `t2s-ray resume` (its state dict,
        or a local copy of the folder it was given as); None on a fresh start. Damaged checkpoints are set aside,
        never returned."""
        restored = self._sink.restore()
        if restored is None:
            return None
        state, last = restored
        self._state, self._steps_since_state = state, 0
        self._last = {**last, **self._last}
        self._started = time.time() - float(last.get("elapsed_s", 0.0))  # elapsed_s and train_time_h go on
        return state

    def final_state(self) -> dict[str, Any]:
        """The trained weights a shared training run's ablations are scored on: the state `train` checkpointed
        (or restored) last, after its last `log_step`; raises when there is none."""
        if self._state is None or self._steps_since_state:
            raise StudyError(
                f"ablation {self.ablation} seed {self.seed} shares its training with other ablations "
                f"(evaluation_only), which are scored on its final weights: end train with "
                f"session.checkpoint(state) after the last session.log_step"
            )
        return self._state

    def for_member(self, ablation: str) -> Session:
        """A session for scoring `ablation`, which shares this run's training: the same trial folder and device,
        its own final metrics and samples (`samples-<ablation>.*`)."""
        return Session(
            ablation=ablation,
            seed=self.seed,
            device=self.device,
            trial_dir=self.trial_dir,
            sink=self._sink,
            report_every=self._every,
            member=True,
            node=self.node,
            back_translator=self.back_translator,
        )

    # --- the end --------------------------------------------------------------------------------

    def log_evaluation(self, metrics: Mapping[str, Any]) -> None:
        """The trial's final metrics under any names (numbers, or `<name>_status` strings saying why one is NaN).
        The catalog's names (`eval/fvd`, `eval/lpips`, `params/total_m` ...) get their labels and directions."""
        bad = [k for k, v in metrics.items() if not isinstance(v, (int, float, str, np.floating, np.integer))]
        if bad:
            raise StudyError(f"session.log_evaluation: {bad[0]}={metrics[bad[0]]!r} is not a number or a string")
        clean = {k: (float(v) if not isinstance(v, str) else v) for k, v in metrics.items()}
        self.final = {**(self.final or {}), **clean}

    def evaluate(
        self,
        generated: np.ndarray,
        real: np.ndarray,
        texts: list[str] | None = None,
        back_translator: Any = None,
        language: str = "",
        generated_poses: Any = None,
        real_poses: Any = None,
        **options: Any,
    ) -> dict[str, Any]:
        """t2s-ray's metrics on the user's clips (uint8, clips x frames x height x width x 3): FVD (with
        `fvd_detector=` StyleGAN-V's I3D), LPIPS, temporal consistency and motion ratio against the real clips,
        NaN with a `*_status` where one cannot be computed; logged as `log_evaluation` does. Returns them.

        With `back_translator` (a callable or `package.module:callable`, else the study's `Study.back_translator`)
        and `texts` (what each clip should sign): BLEU-1..4, chrF, ROUGE-L and WER of its reading of the
        generated clips, and of the real ones as `<metric>_real` (`t2s_ray.metrics.back_translation`), the
        captions in `language`. With `generated_poses` and `real_poses` (one keypoint sequence, frames x joints x
        dims or a `.pose` file, per clip each): DTW-MJE and nDTW-MJE (`t2s_ray.metrics.poses`)."""
        from t2s_ray.metrics.back_translation import back_translation_metrics
        from t2s_ray.metrics.clips import clip_metrics
        from t2s_ray.metrics.poses import pose_metrics

        metrics = clip_metrics(generated, real, **options)
        translator = back_translator if back_translator is not None else self.back_translator
        if translator is not None:
            if texts is None or len(texts) != len(generated):
                raise StudyError(
                    f"session.evaluate: back-translation needs texts=, one caption per clip ({len(generated)}), "
                    f"got {'none' if texts is None else len(texts)}"
                )
            metrics.update(
                back_translation_metrics(translator, np.asarray(generated), np.asarray(real), texts, language)
            )
        if generated_poses is not None or real_poses is not None:
            try:
                metrics.update(pose_metrics(generated_poses, real_poses))
            except ValueError as e:
                raise StudyError(f"session.evaluate: {e}") from None
        self.log_evaluation(metrics)
        return metrics

    def log_samples(self, videos: np.ndarray, texts: list[str], real: np.ndarray | None = None) -> list[Path]:
        """Generated clips (uint8, clips x frames x H x W x 3) and their captions: `samples.gif`, `samples.npz`
        (with `real`, the real clips of the same captions, which report.html shows beside them) and an image in
        TensorBoard (one row per clip, its frames left to right). Returns the files written."""
        from tensorboardX import SummaryWriter

        from t2s_ray.data.video import save_gif
        from t2s_ray.outputs import SAMPLES_KEPT, samples_npz

        videos = np.asarray(videos)
        if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8 or len(videos) != len(texts):
            raise StudyError(
                f"session.log_samples: expected uint8 clips x frames x H x W x 3 and one caption per "
                f"clip, got {videos.dtype} {videos.shape} with {len(texts)} captions"
            )
        if real is not None and np.asarray(real).shape[1:] != videos.shape[1:]:
            raise StudyError(
                f"session.log_samples: real clips {np.asarray(real).shape} do not match the generated "
                f"ones {videos.shape} (one real clip per caption, same frames, size and channels)"
            )
        n = min(SAMPLES_KEPT, len(texts))
        npz = self.trial_dir / samples_npz(self.ablation if self._member else None)
        gif = npz.with_suffix(".gif")
        save_gif(gif, videos[:n], list(texts[:n]))
        arrays = {"fake": videos[:n], "texts": np.array(texts[:n])}
        if real is not None:
            arrays["real"] = np.asarray(real)[:n]
        with atomic_path(npz, suffix=".npz") as tmp:
            np.savez_compressed(tmp, **arrays)
        grid = np.concatenate([np.concatenate(list(clip), axis=1) for clip in videos[:n]], axis=0)
        tag, step = ("eval" if not self._member else f"eval/{self.ablation}"), int(self._last.get("step", 0))
        with SummaryWriter(str(self.trial_dir), filename_suffix=".samples") as writer:
            writer.add_image(f"{tag}/samples", grid, global_step=step, dataformats="HWC")
            writer.add_text(
                f"{tag}/sample_captions", "\n\n".join(f"{i}. {t}" for i, t in enumerate(texts[:n])), global_step=step
            )
        return [gif, npz]

    def final_metrics(self) -> dict[str, Any]:
        """What the trial's final report holds; raises when `train` never logged an evaluation."""
        if self.final is None:
            raise StudyError(
                f"train returned without session.log_evaluation or session.evaluate (ablation "
                f"{self.ablation}, seed {self.seed}); end train with the trial's final metrics"
            )
        self._pending = None  # the final report carries the last step's metrics
        return {
            **self._last,
            "final": 1,
            "final_loss": self._last.get("loss", math.nan),
            "train_time_h": (time.time() - self._started) / 3600,
            **self.final,
        }

    def close(self) -> None:
        """Sends a report still due (a `train` that raised) and closes the TensorBoard writer."""
        self._flush()
        if self._writer is not None:
            self._writer.close()


def with_seed(cfg: Any, seed: int) -> Any:
    """`cfg` with its `seed` field (when the user's config has one) set to the trial's seed."""
    if any(f.name == "seed" for f in dataclasses.fields(cfg)):
        return dataclasses.replace(cfg, seed=seed)
    return cfg


def write_trial_configs(study: Study, folder: Path, cfg: Any, members: Mapping[str, Any] | None = None) -> None:
    """The trial's resolved config (and each member's) as JSON in its folder (`outputs.trial_config_json`)."""
    from t2s_ray.outputs import trial_config_json

    for member, c in [(None, cfg), *(members or {}).items()]:
        text = json.dumps(study.config_dict(c), indent=2, sort_keys=True, default=str) + "\n"
        with atomic_path(folder / trial_config_json(member)) as tmp:
            tmp.write_text(text)


def train_and_score(study: Study, cfg: Any, session: Session, members: Mapping[str, Any] | None = None) -> dict:
    """Run `study.train(cfg, session)` and return the trial's final metrics. `members` (ablation -> config) share
    this training run: each is scored by `study.evaluate` on the final checkpoint, its metrics reported as
    `shared/<member>/<key>`. The trainer is scored by `evaluate` too when `train` logged no evaluation."""
    from t2s_ray.outputs import shared_key

    study.train(cfg, session)
    if session.final is None and study.evaluate is not None:
        study.evaluate(cfg, session.final_state(), session)
    final = session.final_metrics()
    for name, member_cfg in (members or {}).items():
        scored = session.for_member(name)
        study.evaluate(member_cfg, session.final_state(), scored)
        if scored.final is None:
            raise StudyError(
                f"evaluate returned without session.log_evaluation or session.evaluate (ablation "
                f"{name}, seed {session.seed}); end evaluate with the ablation's final metrics"
            )
        # the member trained the same run: its loss and training time are the trainer's unless it says otherwise
        trained = {k: final[k] for k in ("final_loss", "train_time_h") if k in final}
        final.update({shared_key(name, k): v for k, v in {**trained, **scored.final}.items()})
    return final
