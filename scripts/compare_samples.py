"""Real clips and several ablations' samples side by side, for the same captions and noise, from a finished experiment.

    python scripts/compare_samples.py results/<name> --ablations baseline,no_text --seed 0 \
        -o docs/calibration_samples.gif

One row per caption (one caption per gloss of the validation split, up to --n): the real clip,
then each ablation's sample from the newest checkpoint of its finished (ablation, seed) trial.
A thin wrapper over `t2s_ray.t2s.sample` (what `t2s-ray sample EXPERIMENT --text ...` does for your own
sentences), adding the real clip of each caption: EMA weights when enabled, the evaluation's
guidance and DDIM steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from t2s_ray.checkpoint import read_meta
from t2s_ray.data import build_dataset
from t2s_ray.data.synthsign import GLOSSES
from t2s_ray.t2s.config import Config
from t2s_ray.t2s.sample import Column, SampleError, experiment_checkpoints, sample_checkpoint, write


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", type=Path)
    p.add_argument("--ablations", default="baseline,no_text")
    p.add_argument("--seed", type=int, default=0, help="trial seed")
    p.add_argument("--n", type=int, default=8, help="captions (one per gloss)")
    p.add_argument("--noise-seed", type=int, default=0)
    p.add_argument("-o", "--out", type=Path, required=True)
    args = p.parse_args()
    names = args.ablations.split(",")
    try:
        found = dict(experiment_checkpoints(args.experiment, args.seed)[0])
    except SampleError as e:
        raise SystemExit(f"error: {e}") from None
    missing = [name for name in names if name not in found]
    if missing:
        raise SystemExit(f"error: no finished trial of seed {args.seed} for {', '.join(missing)} in {args.experiment}")
    val = build_dataset(Config.from_dict(read_meta(found[names[0]])["config"]).data, "val")
    first: dict[tuple[int, ...], int] = {}
    for i, g in enumerate(val.glosses):
        first.setdefault(tuple(g), i)
    idx = list(first.values())[: args.n]
    real, texts = val.get_batch(idx)
    columns = [Column("real", real)]
    for name in names:
        column = sample_checkpoint(found[name], texts, args.noise_seed, ["device=cpu"])
        column.name = name
        columns.append(column)
    labels = [f"{' '.join(GLOSSES[g] for g in val.glosses[i])} ({text!r})" for i, text in zip(idx, texts)]
    write(args.out, columns, labels)
    print(f"wrote {args.out}: {len(texts)} captions x (real, {', '.join(names)})")


if __name__ == "__main__":
    main()
