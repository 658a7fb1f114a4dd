"""Where a SynthSign gloss evaluator is cached and what its report says, without torch.

A sweep's driver checks here that each data config's evaluator is in the cache before the trials start; only
when one is missing does it import `t2s_ray.t2s.gloss_evaluator` (torch: ~3 s of a CPU-only driver's start)
to copy in the shipped one or train it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from t2s_ray.data.synthsign import cache_key as synthsign_key
from t2s_ray.data.synthsign import cache_root
from t2s_ray.io import content_hash
from t2s_ray.t2s.config import DataConfig

EVALUATOR_VERSION = 1
"""Bump whenever the network, its training or the file format change: it invalidates every cache
(and every shipped evaluator: rerun `scripts/ship_evaluators.py`)."""

MAX_GLOSSES = 3
"""SynthSign sentences have 1-3 glosses."""


class EvaluatorUnavailable(ValueError):
    """The data config has no gloss labels to train an evaluator on (only `synthsign` has them)."""


@dataclass(frozen=True)
class EvaluatorConfig:
    """How the SynthSign gloss classifier is trained; every field is part of the cache key."""

    train_clips: int = 4096
    """Training clips rendered afresh each epoch (random gloss sequences; see `training_batches`)."""
    test_clips: int = 512
    """SynthSign test clips its accuracy is reported on."""
    epochs: int = 8
    """Epochs of `train_clips` fresh clips each."""
    batch_size: int = 8
    """Clips per optimizer step."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warm-up over the first 5% of steps, then cosine to 0)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    seed: int = 0
    """Seeds the initial weights and the training clips."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Channels of the conv blocks (each halves H and W)."""
    feature_dim: int = 128
    """Size of the feature space of `fvd_synthsign`."""

    def __post_init__(self) -> None:
        for name in ("train_clips", "test_clips", "epochs", "batch_size", "feature_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"EvaluatorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"EvaluatorConfig needs lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")


@dataclass(frozen=True)
class EvaluatorReport:
    """What training produced and how well the classifier reads the SynthSign test split."""

    key: str
    """Cache key (hash of data content fields, EvaluatorConfig and EVALUATOR_VERSION)."""
    path: str
    """Cache directory holding `model.pt` and `report.json`."""
    cached: bool
    """True when this call loaded a cached classifier instead of training one."""
    source: str
    """Where this call got it: "cache" (already there), "shipped" (package data copied in) or "trained"."""
    exact_accuracy: float
    """Test clips whose whole gloss sequence is recognised (= `text_alignment` of real clips)."""
    gloss_accuracy: float
    """Mean fraction of each test clip's glosses recognised at the right position."""
    length_accuracy: float
    """Test clips read with the right number of glosses."""
    position_accuracy: tuple[float, ...]
    """Per gloss position: test clips with a gloss there whose gloss there is read correctly."""
    majority_position_accuracy: tuple[float, ...]
    """Chance baseline per position: always guessing the position's most frequent test gloss."""
    train_loss: tuple[float, ...]
    """Mean training loss of each epoch."""
    train_s: float
    """Seconds spent training (rendering its clips included)."""
    device: str
    """Where it was trained."""
    data: dict[str, Any]
    """The data fields that fix the clips' content."""
    evaluator: dict[str, Any]
    """The EvaluatorConfig."""
    version: int = EVALUATOR_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict."""
        return asdict(self)


# --- cache layout -----------------------------------------------------------------------------


def evaluator_config(eval_cfg) -> EvaluatorConfig:
    """The evaluator settings a trial's `EvalConfig` asks for (defaults elsewhere)."""
    return EvaluatorConfig(train_clips=eval_cfg.evaluator_clips, epochs=eval_cfg.evaluator_epochs)


def check_supported(data_cfg: DataConfig) -> None:
    """Raise `EvaluatorUnavailable` unless `data_cfg` is SynthSign with enough frames for 3 glosses."""
    if data_cfg.spec != "synthsign":
        raise EvaluatorUnavailable(
            f"the SynthSign evaluator (fvd_synthsign, text_alignment) needs data.spec='synthsign', the only "
            f"corpus whose glosses it is trained to recognise; got {data_cfg.spec!r}"
        )
    if data_cfg.frames < MAX_GLOSSES:
        raise EvaluatorUnavailable(
            f"the SynthSign evaluator reads one gloss per frame at least, so it needs "
            f"data.frames >= {MAX_GLOSSES}; got {data_cfg.frames}"
        )


def content_fields(data_cfg: DataConfig) -> dict[str, Any]:
    """The data fields that change the clips (not how many are rendered, nor where they are cached)."""
    return {
        "spec": data_cfg.spec,
        "frames": data_cfg.frames,
        "height": data_cfg.height,
        "width": data_cfg.width,
        "seed": data_cfg.seed,
        "synthsign_key": synthsign_key(data_cfg),
    }


def evaluator_key(data_cfg: DataConfig, ecfg: EvaluatorConfig) -> str:
    """Hash of the data content, the EvaluatorConfig and EVALUATOR_VERSION."""
    fields = {"version": EVALUATOR_VERSION, "data": content_fields(data_cfg), "evaluator": asdict(ecfg)}
    return content_hash(fields)


def evaluator_dir(data_cfg: DataConfig, ecfg: EvaluatorConfig) -> Path:
    """`<cache>/evaluator/<key>/`, the cache root being the data cache's."""
    return cache_root(data_cfg) / "evaluator" / evaluator_key(data_cfg, ecfg)


def cached_report(folder: Path, source: str = "cache") -> EvaluatorReport | None:
    """The cached report, or None if this evaluator has not been trained yet."""
    path = folder / "report.json"
    if not (path.exists() and (folder / "model.pt").exists()):
        return None
    try:
        body = json.loads(path.read_text())
    except ValueError as err:  # written atomically, so only a hand edit or a full disk gets here
        raise RuntimeError(f"evaluator report {path} is unreadable ({err}); delete {folder} to retrain it") from err
    tuples = {k: tuple(body[k]) for k in ("position_accuracy", "majority_position_accuracy", "train_loss")}
    return EvaluatorReport(**{**body, **tuples, "path": str(folder), "cached": True, "source": source})
