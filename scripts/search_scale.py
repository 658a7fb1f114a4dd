"""Train one (ablation, seed) and evaluate it every K steps: how fast does the text start to matter?

    python scripts/search_scale.py --scale small --steps 3000 --eval-every 500 --guidance 1,3 \
        --set training.lr=1e-3 --json /tmp/run.json [--gif /tmp/samples.gif]

Prints one row per evaluation (step, wall, loss, text alignment per guidance scale, the chance
level, fvd_synthsign) and the gloss evaluator's accuracy on real clips; writes JSON. Used to find
a CPU scale at which the baseline signs the right gloss (`docs/SMALL_SCALE.md`).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from benchkit import write_results

from t2s_ray.data import build_dataset
from t2s_ray.data.video import save_gif
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.evaluation import default_evaluator_fn, evaluate
from t2s_ray.t2s.training import build_state, train_loop


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ablation", default="baseline")
    p.add_argument("--scale", default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None, help="training.steps (default: the scale's)")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--guidance", default="3", help="comma-separated CFG scales to evaluate at")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="search_scale.json")
    p.add_argument("--gif", default="", help="write the last evaluation's samples (first guidance scale)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = list(args.overrides) + ([f"training.steps={args.steps}"] if args.steps else []) + ["device=cpu"]
    cfg = resolve(args.ablation, args.scale, args.seed, overrides)
    train, val = build_dataset(cfg.data, "train"), build_dataset(cfg.data, "val")
    t0 = time.perf_counter()
    _, report = default_evaluator_fn(cfg.eval)(cfg.data, "cpu")
    print(
        f"evaluator: real test clips read exactly {report['exact_accuracy']:.3f} "
        f"({'cached' if report['cached'] else f'trained in {time.perf_counter() - t0:.0f} s'})",
        flush=True,
    )
    state = build_state(cfg)
    scales = [float(g) for g in args.guidance.split(",")]
    rows, losses, train_s = [], [], 0.0
    print(
        f"{'step':>6} {'train_s':>8} {'loss':>7} "
        + " ".join(f"{'ta@' + str(g):>8}" for g in scales)
        + f" {'chance':>7} {'fvd_ss':>8}",
        flush=True,
    )
    while state.step < cfg.training.steps:
        stop = min(cfg.training.steps, state.step + args.eval_every)
        t1 = time.perf_counter()
        train_loop(state, train, report=lambda m, _ckpt: losses.append(m["loss"]), stop_at=stop)
        train_s += time.perf_counter() - t1
        row = {"step": state.step, "train_s": train_s, "loss": losses[-1]}
        for g in scales:
            state.cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, guidance_scale=g))
            result = evaluate(state, val, lpips=(None, "not needed here"))
            m = result.metrics
            row[f"text_alignment@{g:g}"] = m["eval/text_alignment"]
            row.setdefault("chance", m["eval/text_alignment_chance"])
            row.setdefault("fvd_synthsign", m["eval/fvd_synthsign"])
            if args.gif and g == scales[0]:
                save_gif(args.gif, result.videos[:16], result.texts[:16])
        state.cfg = cfg
        rows.append(row)
        print(
            f"{row['step']:>6} {train_s:>8.0f} {row['loss']:>7.4f} "
            + " ".join(f"{row[f'text_alignment@{g:g}']:>8.3f}" for g in scales)
            + f" {row['chance']:>7.3f} {row['fvd_synthsign']:>8.1f}",
            flush=True,
        )
    write_results(
        args.json,
        "search_scale",
        rows,
        ablation=args.ablation,
        scale=args.scale,
        seed=args.seed,
        overrides=overrides,
        evaluator_exact_accuracy=report["exact_accuracy"],
    )


if __name__ == "__main__":
    main()
