"""The bundled model as a `Study`: `train(cfg, session)` runs `training.train_loop` with the session's reports and
checkpoints, and scores the trained weights; `evaluate` scores them as another ablation of a shared training run
(no_ema beside baseline). Its config is `config.Config`, its ablations the registry's (and a sweep's ablation
file, carried in the trial's params), its scales `config.SCALES`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import torch

from t2s_ray.study import Session, Study, StudyError, pick_device
from t2s_ray.t2s.ablations import ABLATIONS, get_ablation, params_ablations, resolve, resolve_params
from t2s_ray.t2s.config import SCALES, Config, ConfigError, flatten, trajectory_fields

REPORT_KEYS = ("step", "loss")
"""What `train_loop`'s report gives `Session.log_step` as its arguments; the rest are its scalars."""


def trial_device(cfg: Config, gpu_ids: list) -> torch.device:
    """The device a trial trains on: the GPU Ray assigned under `device=auto`/`cuda`, CPU under `device=cpu` or
    without one; a GPU without CUDA in the worker, or `device=cuda` without a GPU, is an error."""
    from t2s_ray.t2s.training import TrainingError

    return pick_device(cfg.device, gpu_ids, f"trial {cfg.ablation} seed {cfg.seed}", TrainingError)


_live: dict[str, Any] = {}
"""The trained state of this process's last `train`, with the dict it checkpointed last: `evaluate` scores the
members of a shared run on it instead of rebuilding the model from that dict."""


def _meta(state) -> dict[str, Any]:
    """What `meta.json` says of a checkpoint without loading it (`t2s-ray sample`/`evaluate` read the config)."""
    return {"epoch": state.epoch, "ablation": state.cfg.ablation, "seed": state.cfg.seed, "config": state.cfg.to_dict()}


def train(cfg: Config, session: Session) -> None:
    """Train (ablation, seed) from the newest checkpoint the session restores (or step 0) to `training.steps`,
    reporting every `training.report_every` steps and checkpointing every `training.checkpoint_every` and at the
    end, then score the final weights."""
    from t2s_ray.data import build_dataset, check_visible
    from t2s_ray.t2s.training import build_state, train_loop

    # on a cluster the data and its cache are read on this node: say which node when they are not here
    check_visible(cfg.data, where=session.node)
    dataset = build_dataset(cfg.data, "train")
    state = build_state(cfg, session.device)
    restored = session.restore()
    if restored is not None:
        state.load_state_dict(restored)
    _live.update(state=state, checkpointed=restored)

    def report(metrics: dict[str, Any], checkpoint_now: bool) -> None:
        scalars = {k: v for k, v in metrics.items() if k not in REPORT_KEYS}
        session.log_step(metrics["step"], metrics["loss"], **scalars)
        if checkpoint_now:
            sd = state.state_dict()
            session.checkpoint(sd, meta=_meta(state))
            _live["checkpointed"] = sd

    if state.step < cfg.training.steps:  # restored from the final checkpoint: only the scoring is left
        train_loop(state, dataset, report, progress=session.at_step)
    score(state, session)


def evaluate(cfg: Config, checkpoint_state: dict[str, Any], session: Session) -> None:
    """Score the shared training run's final weights as the ablation `cfg` (its EMA or raw weights, its
    evaluation settings)."""
    from t2s_ray.t2s.training import build_state, member_state

    if _live.get("checkpointed") is checkpoint_state:
        state = _live["state"]
    else:
        trained = Config.from_dict(json.loads(checkpoint_state["config"]))
        state = build_state(trained, session.device)
        state.load_state_dict(checkpoint_state)
    score(member_state(state, cfg), session)


def score(state, session: Session) -> None:
    """The finished trial's metrics (losses, size, time, memory and every `eval/*` metric) and its samples beside
    the real clips of the same prompts."""
    from t2s_ray.data import build_dataset
    from t2s_ray.metrics.memory import cpu_rss_peak_gb
    from t2s_ray.t2s.evaluation import evaluate as evaluate_state
    from t2s_ray.t2s.training import validation_loss

    total, trainable = state.model.parameter_counts()
    val = build_dataset(state.cfg.data, "val")
    # mem/gpu_peak_gb (training peak) is already in the last training report: evaluation resets the counter
    metrics = {
        "val_loss": validation_loss(state, val, max_clips=state.cfg.eval.num_videos * 4),
        "params/total_m": total / 1e6,
        "params/trainable_m": trainable / 1e6,
        "params/text_encoder_change": state.model.text_encoder.relative_change(),
        "train_time_h": state.train_time_s / 3600,
        "mem/gpu_peak_gb_status": "ok" if state.device.type == "cuda" else "CPU run: no GPU memory to measure",
        "mem/cpu_rss_peak_gb": cpu_rss_peak_gb(),
    }
    result = evaluate_state(state, val)
    metrics.update(result.metrics)
    session.log_evaluation(metrics)
    session.log_samples(result.videos, result.texts, real=result.real)


@dataclasses.dataclass(frozen=True)
class BundledStudy(Study):
    """The bundled study: its configs resolve through `ablations.resolve` (the registry, `config.SCALES`, and a
    sweep's ablation file carried in the trial's params), and `device=cpu` keeps a trial off its GPU."""

    def resolve(self, ablation: str, scale: str | None = None, overrides: tuple[str, ...] | list[str] = ()) -> Any:
        try:
            return resolve(ablation, scale or "smoke", 0, list(overrides))
        except ConfigError as e:
            raise StudyError(str(e)) from None

    def trial_config(self, params: Mapping[str, Any], ablation: str | None = None) -> Config:
        return resolve_params(params, ablation=ablation)

    def trial_device(self, cfg: Config, gpu_ids: list) -> torch.device:
        return trial_device(cfg, gpu_ids)

    def describe(self, ablation: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The registry's (or the sweep's ablation file's) description and primary metrics."""
        abl = get_ablation(ablation, params_ablations(params or {}))
        return {"description": abl.description, "primary": list(abl.primary)}


study = BundledStudy(
    name="t2s",
    config=Config,
    train=train,
    ablations={name: a.overrides for name, a in ABLATIONS.items()},
    scales=SCALES,
    # the fields that cannot change the raw weights (config.EVALUATION_ONLY); the sweep groups ablations by them
    # with one EMA setting per group (ablations.training_groups), and the trial's params name the members
    evaluation_only=tuple(k for k in flatten(Config().to_dict()) if k.split(".")[0] not in trajectory_fields(Config())),
    evaluate=evaluate,
    report_every=1,  # train_loop reports every training.report_every steps itself
    steps="training.steps",
)
