"""The SynthSign evaluator: a GlossClassifier trained once per data config, cached, and loaded by trials.

`fvd_synthsign` measures Fréchet distances in its feature space and `text_alignment` compares
the glosses it recognises with the prompt's. Training is seeded (same seed on CPU => same
weights) and happens once per cache: the result lives in
`<cache>/evaluator/<key>/{model.pt,report.json}`, written atomically under a file lock so that
Ray trials starting together train it once while the others wait and load it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from t2s_ray.config import DataConfig
from t2s_ray.data import build_dataset
from t2s_ray.data.cache import locked
from t2s_ray.data.synthsign import Style, cache_root, render_clip, sentences_of, vocabulary
from t2s_ray.data.synthsign import cache_key as synthsign_key
from t2s_ray.data.video import to_model_input
from t2s_ray.io import atomic_path
from t2s_ray.metrics.text_alignment import gloss_accuracy, text_alignment
from t2s_ray.models.gloss_classifier import GlossClassifier, GlossClassifierArch, ctc_decode, ctc_loss
from t2s_ray.training import lr_factor

log = logging.getLogger(__name__)

EVALUATOR_VERSION = 1
"""Bump whenever the network, its training or the file format change: it invalidates every cache."""

MAX_GLOSSES = 3
"""SynthSign sentences have 1-3 glosses."""

ProgressFn = Callable[[dict[str, Any]], None]


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
            f"corpus whose glosses it is trained to recognise; got {data_cfg.spec!r}")
    if data_cfg.frames < MAX_GLOSSES:
        raise EvaluatorUnavailable(f"the SynthSign evaluator reads one gloss per frame at least, so it needs "
                                   f"data.frames >= {MAX_GLOSSES}; got {data_cfg.frames}")


def content_fields(data_cfg: DataConfig) -> dict[str, Any]:
    """The data fields that change the clips (not how many are rendered, nor where they are cached)."""
    return {"spec": data_cfg.spec, "frames": data_cfg.frames, "height": data_cfg.height,
            "width": data_cfg.width, "seed": data_cfg.seed, "synthsign_key": synthsign_key(data_cfg)}


def evaluator_key(data_cfg: DataConfig, ecfg: EvaluatorConfig) -> str:
    """Hash of the data content, the EvaluatorConfig and EVALUATOR_VERSION."""
    fields = {"version": EVALUATOR_VERSION, "data": content_fields(data_cfg), "evaluator": asdict(ecfg)}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def evaluator_dir(data_cfg: DataConfig, ecfg: EvaluatorConfig) -> Path:
    """`<cache>/evaluator/<key>/`, the cache root being the data cache's."""
    return cache_root(data_cfg) / "evaluator" / evaluator_key(data_cfg, ecfg)


def build_classifier(data_cfg: DataConfig, ecfg: EvaluatorConfig, num_glosses: int) -> GlossClassifier:
    """An untrained classifier for clips of `data_cfg`'s shape, initialised from `ecfg.seed`."""
    arch = GlossClassifierArch(num_glosses=num_glosses, clip_shape=(data_cfg.frames, data_cfg.height, data_cfg.width),
                               widths=ecfg.widths, feature_dim=ecfg.feature_dim)
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's RNG
        torch.manual_seed(ecfg.seed)
        return GlossClassifier(arch)


# --- training and scoring ---------------------------------------------------------------------

def _draw_sentence(rng: np.random.Generator, data_cfg: DataConfig, vocab: Sequence[int],
                   held_out: set[tuple[int, ...]]) -> tuple[int, ...]:
    """A random sentence as SynthSign makes them (`vocab`, its lengths, no gloss twice in a row), not held out."""
    while True:
        length = int(rng.integers(data_cfg.min_glosses, data_cfg.max_glosses + 1))
        seq = tuple(int(vocab[g]) for g in rng.integers(len(vocab), size=length))
        if all(a != b for a, b in zip(seq, seq[1:])) and seq not in held_out:
            return seq


def training_batches(data_cfg: DataConfig, ecfg: EvaluatorConfig, epoch: int
                     ) -> Iterator[tuple[np.ndarray, list[tuple[int, ...]]]]:
    """Epoch `epoch`'s fresh training clips, uint8 `(B, T, H, W, 3)` with their glosses, batch by batch.

    Rendered on the fly from random gloss sequences (never a val/test sentence): on the fixed
    training sentences the network memorised which glosses go together instead of reading each.
    """
    sentences = sentences_of(data_cfg)
    # sentence-disjoint splits: never a val/test sentence; clip-disjoint ones share every sentence
    held_out = set(sentences["val"]) | set(sentences["test"]) if data_cfg.split_by == "sentence" else set()
    style, vocab = Style.of(data_cfg), vocabulary(data_cfg.vocabulary)
    for start in range(0, ecfg.train_clips, ecfg.batch_size):
        videos, glosses = [], []
        for i in range(start, min(start + ecfg.batch_size, ecfg.train_clips)):
            rng = np.random.default_rng([data_cfg.seed, ecfg.seed, epoch, i, 0xE7A1])
            glosses.append(_draw_sentence(rng, data_cfg, vocab, held_out))
            videos.append(render_clip(glosses[-1], data_cfg.frames, data_cfg.height, data_cfg.width, rng, style))
        yield np.stack(videos), glosses


def _fit(model: GlossClassifier, data_cfg: DataConfig, ecfg: EvaluatorConfig, device: torch.device,
         progress: ProgressFn | None) -> list[float]:
    """Train `model` in place; returns the mean loss of each epoch."""
    opt = torch.optim.AdamW(model.parameters(), lr=ecfg.lr, weight_decay=ecfg.weight_decay)
    total_steps = ecfg.epochs * math.ceil(ecfg.train_clips / ecfg.batch_size)
    warmup = max(1, total_steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, total_steps, "cosine", 0.0))
    model.train()
    losses, t0 = [], time.perf_counter()
    for epoch in range(ecfg.epochs):
        total = 0.0
        for videos, glosses in training_batches(data_cfg, ecfg, epoch):
            loss = ctc_loss(model(to_model_input(videos, device)), glosses, model.blank)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(glosses)
        losses.append(total / ecfg.train_clips)
        if progress is not None:
            progress({"epoch": epoch + 1, "epochs": ecfg.epochs, "train_loss": losses[-1],
                      "elapsed_s": time.perf_counter() - t0})
    return losses


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], model: GlossClassifier, videos: np.ndarray,
             batch_size: int) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        return torch.cat([fn(to_model_input(videos[i:i + batch_size], device)).cpu()
                          for i in range(0, len(videos), batch_size)])


def clip_features(model: GlossClassifier, videos: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Features `(N, feature_dim)` float64 of uint8 clips `(N, T, H, W, 3)`: the `fvd_synthsign` space."""
    return _batched(model.features, model, videos, batch_size).double().numpy()


def recognise(model: GlossClassifier, videos: np.ndarray, batch_size: int = 64) -> list[tuple[int, ...]]:
    """The gloss sequence `model` reads in each uint8 clip `(N, T, H, W, 3)` (greedy CTC decoding)."""
    return ctc_decode(_batched(model, model, videos, batch_size), model.blank)


def position_accuracy(predicted: Sequence[tuple[int, ...]], targets: Sequence[tuple[int, ...]],
                      positions: int = 3) -> tuple[list[float], list[float]]:
    """Per gloss position p: accuracy over the clips with a p-th gloss, and always-the-commonest-gloss's."""
    acc, majority = [], []
    for p in range(positions):
        pairs = [(pred, t) for pred, t in zip(predicted, targets) if len(t) > p]
        if not pairs:
            acc.append(float("nan"))
            majority.append(float("nan"))
            continue
        acc.append(sum(len(pred) > p and pred[p] == t[p] for pred, t in pairs) / len(pairs))
        majority.append(float(np.bincount([t[p] for _, t in pairs]).max() / len(pairs)))
    return acc, majority


def score(model: GlossClassifier, videos: np.ndarray, glosses: Sequence[tuple[int, ...]]) -> dict[str, Any]:
    """Exact-sequence, per-gloss, per-position and length accuracy of `model` on labelled clips."""
    was_training = model.training
    predicted = recognise(model.eval(), videos)
    model.train(was_training)
    acc, majority = position_accuracy(predicted, glosses)
    return {"exact_accuracy": text_alignment(predicted, glosses), "gloss_accuracy": gloss_accuracy(predicted, glosses),
            "length_accuracy": float(np.mean([len(p) == len(t) for p, t in zip(predicted, glosses)])),
            "position_accuracy": tuple(acc), "majority_position_accuracy": tuple(majority)}


# --- cache I/O --------------------------------------------------------------------------------

def _save(folder: Path, model: GlossClassifier, report: EvaluatorReport) -> None:
    """Write `model.pt` then `report.json`, each atomically (the report's presence marks a complete cache)."""
    state = {"version": EVALUATOR_VERSION, "key": report.key, "arch": model.arch.to_dict(),
             "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
    with atomic_path(folder / "model.pt", ".tmp") as tmp:
        torch.save(state, tmp)
    body = {k: v for k, v in report.to_dict().items() if k not in ("path", "cached")}
    with atomic_path(folder / "report.json", ".tmp") as tmp:
        tmp.write_text(json.dumps(body, indent=2))


def _read_report(folder: Path) -> EvaluatorReport | None:
    """The cached report, or None if this evaluator has not been trained yet."""
    path = folder / "report.json"
    if not (path.exists() and (folder / "model.pt").exists()):
        return None
    try:
        body = json.loads(path.read_text())
    except ValueError as err:  # written atomically, so only a hand edit or a full disk gets here
        raise RuntimeError(f"evaluator report {path} is unreadable ({err}); delete {folder} to retrain it") from err
    tuples = {k: tuple(body[k]) for k in ("position_accuracy", "majority_position_accuracy", "train_loss")}
    return EvaluatorReport(**{**body, **tuples, "path": str(folder), "cached": True})


def _load_model(folder: Path, key: str, device: torch.device | str) -> GlossClassifier:
    """The cached classifier on `device`, frozen (eval mode, no gradients)."""
    path = folder / "model.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("key") != key or state.get("version") != EVALUATOR_VERSION:
        raise RuntimeError(f"{path} belongs to evaluator {state.get('key')!r} v{state.get('version')}, "
                           f"expected {key!r} v{EVALUATOR_VERSION}; delete {folder} to retrain it")
    model = GlossClassifier(GlossClassifierArch.from_dict(state["arch"]))
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval().requires_grad_(False)


# --- public entry points ----------------------------------------------------------------------

def _train_and_save(data_cfg: DataConfig, ecfg: EvaluatorConfig, folder: Path, device: torch.device,
                    progress: ProgressFn | None) -> EvaluatorReport:
    test = build_dataset(dataclasses.replace(data_cfg, eval_clips=ecfg.test_clips), "test")
    model = build_classifier(data_cfg, ecfg, test.num_glosses).to(device)
    t0 = time.perf_counter()
    losses = _fit(model, data_cfg, ecfg, device, progress)
    train_s = time.perf_counter() - t0
    report = EvaluatorReport(key=folder.name, path=str(folder), cached=False, train_loss=tuple(losses),
                             train_s=train_s, device=str(device), data=content_fields(data_cfg),
                             evaluator=asdict(ecfg), **score(model, test.videos, test.glosses))
    _save(folder, model, report)
    log.info("evaluator %s: trained in %.0fs on %s; test exact %.3f, per-gloss %.3f", report.key, train_s,
             device, report.exact_accuracy, report.gloss_accuracy)
    return report


def train_evaluator(data_cfg: DataConfig, ecfg: EvaluatorConfig = EvaluatorConfig(),
                    progress: ProgressFn | None = None, device: torch.device | str = "cpu") -> EvaluatorReport:
    """Train the SynthSign evaluator of `data_cfg` and cache it; a cached one is reused.

    Seeded: the same configs on CPU give the same weights. `progress` gets a dict per epoch
    (epoch, epochs, train_loss, elapsed_s). Raises `EvaluatorUnavailable` for non-SynthSign data.
    """
    check_supported(data_cfg)
    folder = evaluator_dir(data_cfg, ecfg)
    folder.mkdir(parents=True, exist_ok=True)
    with locked(folder.with_name(folder.name + ".lock")):
        cached = _read_report(folder)
        if cached is not None:
            return cached
        return _train_and_save(data_cfg, ecfg, folder, torch.device(device), progress)


def load_or_train_evaluator(data_cfg: DataConfig, device: torch.device | str,
                            ecfg: EvaluatorConfig = EvaluatorConfig()) -> tuple[GlossClassifier, dict[str, Any]]:
    """The cached evaluator of `data_cfg` on `device` (frozen, eval mode) and its report as a dict.

    Trains it first (on CPU, so every machine trains the same weights) if no cache has it; trials
    that ask at once wait on a file lock for the one that trains. Raises `EvaluatorUnavailable`
    for non-SynthSign data.
    """
    check_supported(data_cfg)
    folder = evaluator_dir(data_cfg, ecfg)
    report = _read_report(folder) or train_evaluator(data_cfg, ecfg)
    return _load_model(folder, report.key, device), report.to_dict()
