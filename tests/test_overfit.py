"""The whole pipeline can memorise one clip: train on it alone, then DDIM-sample it back.

A pipeline that cannot overfit one clip has a bug or a wrong target (the failure of eps/v
prediction with pixel patches wider than the model; see `diffusion.GaussianDiffusion`).
Run as a script to compare prediction targets, from the repository's root: `python -m tests.test_overfit --steps 1500`.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import pytest
import torch

from t2s_ray.data.synthsign import GLOSSES, Style, render_clip
from t2s_ray.data.video import to_model_input
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.evaluation import sample
from t2s_ray.t2s.training import build_state, next_batch, train_step
from tests.helpers import Clips

CAPTION = "A person signs MOTHER."


def one_clip(frames: int, size: int, copies: int) -> Clips:
    """One SynthSign clip (a fixed signer signing MOTHER) `copies` times: a batch sees several noise levels."""
    rng = np.random.default_rng(0)
    clip = render_clip([GLOSSES.index("MOTHER")], frames, size, size, rng, Style(signers=1))
    return Clips(np.repeat(clip[None], copies, axis=0), [CAPTION] * copies)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two clips in [-1, 1]."""
    mse = ((a - b) ** 2).mean().item() / 4  # to the [0, 1] range
    return 10 * math.log10(1 / max(mse, 1e-12))


def overfit(
    prediction: str, steps: int, text_encoder=None, lr: float = 2e-3, frames: int = 4, size: int = 16, batch: int = 8
) -> tuple[float, float]:
    """Train dit-tiny on one clip for `steps` steps: the PSNR (dB) of its DDIM sample against it, and the seconds."""
    data = one_clip(frames, size, batch)
    cfg = resolve(
        "no_ema",
        "smoke",
        0,
        [
            f"data.frames={frames}",
            f"data.height={size}",
            f"data.width={size}",
            f"diffusion.prediction={prediction}",
            "diffusion.caption_dropout=0",
            f"training.batch_size={batch}",
            f"training.steps={steps}",
            f"training.lr={lr}",
            "training.warmup_steps=10",
            "training.lr_schedule=constant",
            "device=cpu",
            "eval.sampling_steps=25",
            "eval.guidance_scale=1",
            "eval.batch_size=1",
        ],
    )
    t0 = time.perf_counter()
    state = build_state(cfg, text_encoder=text_encoder)
    for _ in range(steps):
        train_step(state, *next_batch(state, data))
    fake = sample(state, data.texts[:1], seed=0)
    return psnr(fake[0], to_model_input(data.videos[:1])[0]), time.perf_counter() - t0


@pytest.mark.slow
def test_x_prediction_memorises_one_clip(text_encoder):
    db, _ = overfit("x", steps=300, text_encoder=text_encoder)
    assert db >= 25, f"DDIM sample is {db:.1f} dB from the clip it was trained on alone (want >= 25)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--predictions", default="x,v,eps")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    for p in args.predictions.split(","):
        db, s = overfit(p, args.steps, lr=args.lr, frames=args.frames, size=args.size, batch=args.batch)
        print(
            f"prediction={p:<4} steps={args.steps:<5} lr={args.lr:g} clip={args.frames}x{args.size}x{args.size} "
            f"PSNR {db:5.1f} dB  ({s:.0f} s)",
            flush=True,
        )
