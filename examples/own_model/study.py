"""The study of `model.TextToSign`, written only against t2s-ray's public API (`t2s_ray.Study`, `Session`).

    t2s-ray sweep --study examples.own_model.study:study --gpus 0 --scale cpu     # from the repository root

Three ablations (the original study's): baseline (frozen text encoder + EMA), text_finetuned, no_ema, each x 3
seeds. Clips come from SynthSign (`t2s_ray.data`, a dataset library any study may use); everything else is this
folder's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from examples.own_model.model import EMA, TextToSign
from t2s_ray import Session, Study


@dataclass(frozen=True)
class TextConfig:
    freeze: bool = True
    """Keep the text encoder at its initial weights."""
    dim: int = 64
    """Width of the caption vector."""
    lr: float = 5e-4
    """Learning rate of the encoder when it is trained."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    """Optimiser steps."""
    batch_size: int = 8
    lr: float = 2e-3
    ema: bool = True
    """Evaluate an exponential moving average of the weights (the average is kept either way, so this field
    cannot change training: `evaluation_only`)."""
    ema_decay: float = 0.95
    checkpoint_every: int = 50


@dataclass(frozen=True)
class OwnConfig:
    frames: int = 8
    size: int = 32
    width: int = 32
    """Channels of the decoder."""
    noise_dim: int = 16
    train_clips: int = 128
    eval_clips: int = 16
    cache_dir: str = ""
    """Where SynthSign's rendered clips are cached ("" = t2s-ray's default cache)."""
    text: TextConfig = field(default_factory=TextConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.train.steps < 1 or self.train.batch_size > self.train_clips:
            raise ValueError("train.steps must be >= 1 and train.batch_size <= train_clips")


def _clips(cfg: OwnConfig, split: str):
    from t2s_ray.data import build_dataset
    from t2s_ray.t2s.config import DataConfig

    return build_dataset(
        DataConfig(
            frames=cfg.frames,
            height=cfg.size,
            width=cfg.size,
            train_clips=cfg.train_clips,
            eval_clips=cfg.eval_clips,
            cache_dir=cfg.cache_dir,
        ),
        split,
    )


def _to_model(videos: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(videos).to(device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (B, T, H, W, 3) -> BCTHW


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 4, 1).cpu().numpy()


def train(cfg: OwnConfig, session: Session) -> None:
    torch.manual_seed(session.seed)  # the same initial weights for every ablation of a seed
    t = cfg.train
    model = TextToSign(cfg.text.dim, cfg.noise_dim, cfg.width, cfg.frames, cfg.size, cfg.text.freeze)
    model = model.to(session.device)
    groups = [{"params": list(model.decoder.parameters()), "lr": t.lr}]
    if not cfg.text.freeze:
        groups.append({"params": list(model.text.parameters()), "lr": cfg.text.lr})
    opt = torch.optim.Adam(groups)
    ema = EMA(model, t.ema_decay)
    step = 0
    if (state := session.restore()) is not None:  # a crashed trial, a killed driver, `t2s-ray resume`
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step = state["step"]
    data, started = _clips(cfg, "train"), time.time()
    while step < t.steps:
        g = torch.Generator().manual_seed(session.seed * 1_000_003 + step)  # batch and noise: a function of the step
        idx = torch.randint(len(data), (t.batch_size,), generator=g).tolist()
        videos, texts = data.get_batch(idx)
        noise = torch.randn(t.batch_size, cfg.noise_dim, generator=g).to(session.device)
        loss = torch.nn.functional.mse_loss(model(texts, noise), _to_model(videos, session.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update(model)
        step += 1
        session.log_step(step, loss.item(), lr=t.lr, samples_per_s=step * t.batch_size / (time.time() - started))
        if step % t.checkpoint_every == 0 or step == t.steps:
            session.checkpoint(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "ema": ema.state_dict()}
            )  # the last one, at t.steps, is what evaluate scores


@torch.no_grad()
def evaluate(cfg: OwnConfig, state: dict, session: Session) -> None:
    """Score the trained checkpoint `state` as ablation `cfg` (its EMA or its raw weights): a clip per validation
    caption (noise from the seed) against its real clip. t2s-ray calls it for every ablation of a training run."""
    val = _clips(cfg, "val")
    real, texts = val.get_batch(list(range(len(val))))
    fake = _generate(cfg, state, texts, 10_000 + session.seed, session.device)
    session.evaluate(_to_uint8(fake), real, texts)
    mse = torch.nn.functional.mse_loss(fake, _to_model(real, session.device)).item()
    session.log_evaluation({"eval/pixel_mse": mse})
    session.log_samples(_to_uint8(fake), texts)


def sample(cfg: OwnConfig, state: dict, texts: list[str], seed: int) -> np.ndarray:
    """Clips for any captions from a trained checkpoint (`t2s-ray sample --study`): uint8, N x T x H x W x 3."""
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return _to_uint8(_generate(cfg, state, texts, seed, device))


@torch.no_grad()
def _generate(cfg: OwnConfig, state: dict, texts: list[str], seed: int, device) -> torch.Tensor:
    """The checkpoint's EMA (or, without `train.ema`, raw) weights applied to `texts`, noise drawn from `seed`."""
    model = TextToSign(cfg.text.dim, cfg.noise_dim, cfg.width, cfg.frames, cfg.size, cfg.text.freeze)
    model.load_state_dict(state["ema"] if cfg.train.ema else state["model"])
    model = model.to(device).eval()
    noise = torch.randn(len(texts), cfg.noise_dim, generator=torch.Generator().manual_seed(seed))
    return model(texts, noise.to(device))


study = Study(
    name="own-model",
    config=OwnConfig,
    train=train,
    ablations={"baseline": {}, "text_finetuned": {"text.freeze": False}, "no_ema": {"train.ema": False}},
    scales={
        "cpu": {},
        "tiny": {
            "train.steps": 40,
            "train.checkpoint_every": 10,
            "train_clips": 32,
            "eval_clips": 8,
            "frames": 4,
            "size": 16,
            "width": 16,
        },
    },
    metrics={"eval/pixel_mse": "lower"},
    evaluation_only=("train.ema",),  # baseline and no_ema differ only here: one training run per seed serves both
    evaluate=evaluate,
    sample=sample,
    steps="train.steps",
    report_every=10,
)
