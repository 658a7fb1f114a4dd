"""Benchmark the SynthSign evaluator: train time, test accuracy, and a sanity check of its feature space.

    python scripts/bench_evaluator.py --shapes smoke full --out bench_evaluator.json

For each shape it trains the evaluator with the default EvaluatorConfig (in a fresh cache unless
`--cache-dir`), then reports the SynthSign test split's exact-sequence, per-gloss and per-position
accuracy, and Fréchet distances in its feature space between two disjoint halves of the real test
clips (small), and between one half and the other half with its frames shuffled or frozen (larger).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np
import torch
from benchkit import write_results

from t2s_ray.data import build_dataset
from t2s_ray.metrics.frechet import frechet_from_features
from t2s_ray.t2s.config import DataConfig
from t2s_ray.t2s.gloss_evaluator import (
    EVALUATOR_VERSION,
    EvaluatorConfig,
    clip_features,
    load_or_train_evaluator,
    train_evaluator,
)

SHAPES = {"smoke": (8, 32, 32), "full": (16, 64, 64)}  # (frames, height, width) of the scales


def shuffled_frames(videos: np.ndarray, seed: int = 0) -> np.ndarray:
    """Each clip `(N, T, H, W, 3)` with its frames in a random order (same pixels, broken motion)."""
    rng = np.random.default_rng(seed)
    return np.stack([clip[rng.permutation(len(clip))] for clip in videos])


def frozen_frames(videos: np.ndarray) -> np.ndarray:
    """Each clip's first frame held for the whole clip (no motion at all)."""
    return np.repeat(videos[:, :1], videos.shape[1], axis=1)


def feature_sanity(model, videos: np.ndarray) -> dict[str, float]:
    """Fréchet distances between half A of `videos` and half B as is, shuffled and frozen."""
    half = len(videos) // 2
    a, b = videos[:half], videos[half : 2 * half]
    fa = clip_features(model, a)
    return {
        "n_per_set": half,
        "fd_real_vs_real": frechet_from_features(fa, clip_features(model, b)),
        "fd_real_vs_shuffled": frechet_from_features(fa, clip_features(model, shuffled_frames(b))),
        "fd_real_vs_frozen": frechet_from_features(fa, clip_features(model, frozen_frames(b))),
    }


def bench_shape(name: str, shape: tuple[int, int, int], ecfg: EvaluatorConfig, cache_dir: str) -> dict:
    """Train (or load) the evaluator of one shape and score it."""
    frames, height, width = shape
    cfg = DataConfig(frames=frames, height=height, width=width, cache_dir=cache_dir)
    log = lambda p: print(
        f"  [{name}] epoch {p['epoch']}/{p['epochs']} loss {p['train_loss']:.3f} "  # noqa: E731
        f"({p['elapsed_s']:.0f}s)",
        flush=True,
    )
    t0 = time.perf_counter()
    report = train_evaluator(cfg, ecfg, progress=log)
    wall_s = time.perf_counter() - t0
    model, _ = load_or_train_evaluator(cfg, "cpu", ecfg)
    test = build_dataset(dataclasses.replace(cfg, eval_clips=ecfg.test_clips), "test")
    return {
        "shape": name,
        "frames": frames,
        "height": height,
        "width": width,
        "wall_s": wall_s,
        **{k: v for k, v in report.to_dict().items() if k not in ("data", "evaluator")},
        **feature_sanity(model, test.videos),
    }


def print_table(rows: list[dict]) -> None:
    print(
        f"{'shape':<6} {'T x H x W':<10} {'train s':>8} {'exact':>6} {'gloss':>6} {'pos 1/2/3':>16} "
        f"{'chance 1/2/3':>16} {'FD real':>8} {'FD shuf':>8} {'FD frozen':>9}"
    )
    for r in rows:
        pos = "/".join(f"{a:.2f}" for a in r["position_accuracy"])
        chance = "/".join(f"{a:.2f}" for a in r["majority_position_accuracy"])
        print(
            f"{r['shape']:<6} {r['frames']}x{r['height']}x{r['width']:<5} {r['train_s']:>8.0f} "
            f"{r['exact_accuracy']:>6.3f} {r['gloss_accuracy']:>6.3f} {pos:>16} {chance:>16} "
            f"{r['fd_real_vs_real']:>8.2f} {r['fd_real_vs_shuffled']:>8.2f} {r['fd_real_vs_frozen']:>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES), help="shapes to bench")
    parser.add_argument("--cache-dir", default="", help="reuse this cache (default: a fresh temp dir, so it trains)")
    parser.add_argument("--out", default="bench_evaluator.json", help="where to write the JSON results")
    args = parser.parse_args()
    ecfg = EvaluatorConfig()
    with tempfile.TemporaryDirectory(prefix="bench-evaluator-") as tmp:
        rows = [bench_shape(name, SHAPES[name], ecfg, args.cache_dir or tmp) for name in args.shapes]
    print_table(rows)
    write_results(
        args.out,
        "evaluator",
        rows,
        evaluator_version=EVALUATOR_VERSION,
        config=dataclasses.asdict(ecfg),
        torch_threads=torch.get_num_threads(),
        torch=torch.__version__,
        note="chance = always the commonest test gloss at that position",
    )


if __name__ == "__main__":
    main()
