"""`t2s-ray train`: one (ablation, seed) in this process, no Ray, same checkpoint format as a sweep.

Output folder layout:

    OUT/config.json                 the resolved config
    OUT/training_metrics.csv        one row per report
    OUT/checkpoints/checkpoint_000020/{state.pt,meta.json}
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from t2s_ray.checkpoint import prune_checkpoints
from t2s_ray.io import atomic_path, write_text_atomic
from t2s_ray.t2s.config import Config, ConfigError
from t2s_ray.t2s.training import TrainState, build_state, restore_latest, save_state, train_loop


@dataclass
class LocalRun:
    """What a local training run ended with."""

    out: Path
    resumed_from: Optional[str]
    start_step: int
    state: TrainState
    last_metrics: dict[str, Any]


def prepare_out_dir(out: Path, cfg: Config) -> None:
    """Create `out` (or accept an existing run of the same config); write `config.json` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ConfigError(f"--out {out} is not writable; choose another folder")
    cfg_file = out / "config.json"
    if cfg_file.exists():
        saved = Config.from_dict(json.loads(cfg_file.read_text()))
        if saved != cfg:
            raise ConfigError(
                f"--out {out} holds a run with a different config (see {cfg_file}); "
                f"use the same ablation/scale/seed/--set or another --out"
            )
        return
    write_text_atomic(cfg_file, cfg.to_json())


def _append_metrics(path: Path, metrics: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(metrics))
        if new:
            w.writeheader()
        w.writerow(metrics)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows past `step` (they belong to steps the resumed checkpoint predates)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= step]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def train_local(
    cfg: Config,
    out: Path,
    stop_at: int | None = None,
    dataset=None,
    text_encoder=None,
    progress: Callable[[int], None] | None = None,
) -> LocalRun:
    """Train `cfg` into `out`, resuming from its newest valid checkpoint if there is one."""
    from t2s_ray.data import build_dataset

    prepare_out_dir(out, cfg)
    dataset = dataset if dataset is not None else build_dataset(cfg.data, "train")
    state = build_state(cfg, text_encoder=text_encoder)
    ckpt_root = out / "checkpoints"
    resumed = restore_latest(state, ckpt_root)
    start = state.step
    metrics_file = out / "training_metrics.csv"
    _truncate_metrics(metrics_file, start)
    last: dict[str, Any] = {}

    def report(metrics: dict[str, Any], checkpoint_now: bool) -> None:
        last.update(metrics)
        _append_metrics(metrics_file, metrics)
        if checkpoint_now:
            save_state(state, ckpt_root / f"checkpoint_{state.step:06d}")
            prune_checkpoints(ckpt_root, cfg.training.keep_checkpoints)

    train_loop(state, dataset, report, progress=progress, stop_at=stop_at)
    return LocalRun(out, resumed, start, state, last)


def evaluate_checkpoint(checkpoint: Path, overrides: list[str], out: Optional[Path]) -> tuple[dict, Path]:
    """Load a checkpoint (any of `t2s-ray train`'s or a sweep's), evaluate it, write the metrics as JSON."""
    from t2s_ray.checkpoint import read_meta
    from t2s_ray.data import build_dataset
    from t2s_ray.t2s.config import merge, parse_override
    from t2s_ray.t2s.evaluation import evaluate
    from t2s_ray.t2s.training import load_state

    meta = read_meta(checkpoint)
    d = meta["config"]
    for item in overrides:
        d = merge(d, parse_override(item))
    cfg = Config.from_dict(d)
    state = build_state(cfg)
    load_state(state, checkpoint)
    result = evaluate(state, build_dataset(cfg.data, "val"))
    metrics = {"ablation": cfg.ablation, "seed": cfg.seed, "step": state.step, **result.metrics}
    path = out or Path(f"eval_{cfg.ablation}_seed{cfg.seed}_step{state.step}.json")
    write_text_atomic(path, json.dumps(metrics, indent=2, default=str))
    return metrics, path
