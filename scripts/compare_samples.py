"""Samples of several ablations side by side, for the same captions and noise, from a finished experiment.

    python scripts/compare_samples.py results/<name> --ablations baseline,no_text --seed 0 \
        -o docs/calibration_samples.gif

One row per caption (one caption per gloss of the validation split, up to --n): the real clip,
then each ablation's sample from the newest checkpoint of its (ablation, seed) trial, using the
weights the ablation evaluates (EMA when enabled), DDIM with the evaluation's guidance and steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from t2s_ray.analysis import load_trials, select_trials
from t2s_ray.checkpoint import list_checkpoints, read_meta
from t2s_ray.config import Config
from t2s_ray.data import build_dataset
from t2s_ray.data.synthsign import GLOSSES
from t2s_ray.data.video import save_gif, to_uint8
from t2s_ray.evaluation import sample
from t2s_ray.training import build_state, load_state


def newest_checkpoint(trial_dir: str) -> Path:
    found = list_checkpoints(trial_dir)
    if not found:
        raise SystemExit(f"error: no checkpoint in {trial_dir}")
    return found[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--ablations", default="baseline,no_text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=8, help="captions (one per gloss)")
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args()
    trials = select_trials(load_trials(args.experiment))
    names = args.ablations.split(",")
    states = []
    for name in names:
        row = trials[(trials["ablation"] == name) & (trials["seed"] == args.seed)]
        if row.empty:
            raise SystemExit(f"error: no trial ({name}, seed {args.seed}) in {args.experiment}")
        ckpt = newest_checkpoint(row.iloc[0]["trial_dir"])
        cfg = Config.from_dict({**read_meta(ckpt)["config"], "device": "cpu"})
        state = build_state(cfg)
        load_state(state, ckpt)
        states.append(state)
    val = build_dataset(states[0].cfg.data, "val")
    first: dict[tuple[int, ...], int] = {}
    for i, g in enumerate(val.glosses):
        first.setdefault(tuple(g), i)
    idx = list(first.values())[:args.n]
    real, texts = val.get_batch(idx)
    fakes = [to_uint8(sample(s, texts, args.noise_seed)) for s in states]
    clips, captions = [], []
    for k, text in enumerate(texts):
        words = " ".join(GLOSSES[g] for g in val.glosses[idx[k]])
        clips.append(real[k])
        captions.append(f"real: {words} ({text!r})")
        for name, fake in zip(names, fakes):
            clips.append(fake[k])
            captions.append(name)
    save_gif(args.out, np.stack(clips), captions, scale=3, cols=1 + len(names))
    print(f"wrote {args.out}: {len(texts)} captions x (real, {', '.join(names)})")


if __name__ == "__main__":
    main()
