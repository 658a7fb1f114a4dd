"""The scheduler's own cost: the same training inside a Ray Tune trial vs bare, and the fixed costs of a sweep.

    python scripts/bench_overhead.py --steps 100 --out bench_overhead.json

P1  median step_time_ms (and samples/s) of one (ablation, seed) trained by `t2s-ray sweep` (one trial) ÷ the
    same trained by `t2s-ray train` in one process, both with one CPU thread (a trial gets as many threads as
    the CPUs it reserves: 1 here); goal <= 1.03.
P2  seconds from starting `t2s-ray sweep` to the trial's first reported step (the first report comes after
    step 1); goal <= 10 s on a 2-core machine. Measured with the data cache built, with and without the
    caption encodings of the frozen text encoder in it (with them, a trial never loads the encoder). Split
    into the driver's part (from the command to the trial function starting: CLI, validation, data and
    evaluator preparation, Ray start-up, Tune, the worker) and the trial's (to its first report), and broken
    down by timing each piece alone in a fresh process (`--p2-only` runs just this): Ray's import and start,
    the worker's imports, the caption prefill with a cold and with a warm caption store (the first includes
    the encoder's load), the encoder's load alone, the first step.
P3  wall of a 3-trial smoke sweep (3 ablations, separate training) ÷ its longest trial (time_total_s).
Also: the wall of the three seed ablations with and without shared training (`--[no-]share-training`).
Every command runs with the machine otherwise idle; the JSON keeps each run's numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from benchkit import write_results

T2S = str(Path(sys.executable).with_name("t2s-ray"))


def _run(args: list[str], env: dict | None = None) -> float:
    """Run a t2s-ray command; its wall seconds. Output goes to a log beside nothing (shown on failure)."""
    t0 = time.time()
    proc = subprocess.run([T2S, *args], capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.time() - t0


def _rows(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


def _trials(exp: Path) -> list[Path]:
    return sorted(p for p in exp.iterdir() if (p / "result.json").is_file())


def bare(root: Path, steps: int, report_every: int) -> dict:
    out = root / "bare"
    wall = _run(
        [
            "train",
            "baseline",
            "--scale",
            "smoke",
            "--steps",
            str(steps),
            "--out",
            str(out),
            "--set",
            f"training.report_every={report_every}",
        ],
        env={"OMP_NUM_THREADS": "1"},
    )
    m = pd.read_csv(out / "training_metrics.csv").iloc[1:]  # the first window holds start-up work
    return {
        "run": "bare (t2s-ray train)",
        "wall_s": wall,
        "step_time_ms": float(m["step_time_ms"].median()),
        "samples_per_s": float(m["samples_per_s"].median()),
    }


def in_ray(root: Path, steps: int, report_every: int, env: dict | None = None) -> dict:
    t0 = time.time()
    wall = _run(
        [
            "sweep",
            "--gpus",
            "0",
            "--ablations",
            "baseline",
            "--seeds",
            "1",
            "--scale",
            "smoke",
            "--steps",
            str(steps),
            "--cpus-per-trial",
            "1",
            "--storage",
            str(root),
            "--name",
            "one",
            "--quiet",
            "--no-dashboard",
            "--set",
            f"training.report_every={report_every}",
        ],
        env,
    )
    (trial,) = _trials(root / "one")
    rows = [r for r in _rows(trial) if not r.get("final")]
    first = rows[0]
    steps_rows = pd.DataFrame(rows[1:])
    return {
        "run": "one trial (t2s-ray sweep)",
        "wall_s": wall,
        "step_time_ms": float(steps_rows["step_time_ms"].median()),
        "samples_per_s": float(steps_rows["samples_per_s"].median()),
        "to_first_report_s": first["node/started_at"] + first["time_total_s"] - t0,
        "to_trial_start_s": first["node/started_at"] - t0,
        "trial_to_first_report_s": first["time_total_s"],
        "first_report_step": first["step"],
    }


_TRIAL_SETUP = """import torch
torch.set_num_threads(1)  # as a trial reserving one CPU
from t2s_ray.data import build_dataset
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.models.text_encoder import TextEncoder
from t2s_ray.t2s.training import Prefetcher, build_state, train_inputs_step
cfg = resolve("baseline", "smoke", 0, ["device=cpu", "data.cache_dir=" + os.environ["P2_CACHE"]])
"""
"""What both piece scripts do after their imports: a one-thread baseline config on the cache under test."""

_PIECES = """
import json, os, time
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
t = {}
t0 = time.time(); import ray; t["ray import"] = time.time() - t0
t0 = time.time(); ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
t["ray start"] = time.time() - t0
ray.shutdown()
t0 = time.time(); import t2s_ray.runner, t2s_ray.t2s.bundled, t2s_ray.t2s.training
t["worker imports"] = time.time() - t0
%(setup)s
data = build_dataset(cfg.data, "train")
store = os.path.join(os.environ["P2_CACHE"], "captions")
t0 = time.time(); TextEncoder(); t["text encoder load (transformers' import included)"] = time.time() - t0
t0 = time.time(); TextEncoder(store=store).prefill(data.texts)
t["caption prefill, encoded and stored (weights loaded again)"] = time.time() - t0
t0 = time.time(); enc = TextEncoder(store=store); enc.prefill(data.texts)
t["caption prefill, from the store"] = time.time() - t0
t0 = time.time(); state = build_state(cfg, text_encoder=enc); t["build state"] = time.time() - t0
with Prefetcher(state, data, 1) as inputs:
    t0 = time.time(); train_inputs_step(state, inputs.next()); t["first step"] = time.time() - t0
print(json.dumps(t))
"""


_WARM_TRIAL = """
import json, os, time
t = {}
t0 = time.time(); import t2s_ray.runner, t2s_ray.t2s.bundled, t2s_ray.t2s.training
t["warm trial: imports"] = time.time() - t0
%(setup)s
t0 = time.time(); data = build_dataset(cfg.data, "train"); t["warm trial: data from the cache"] = time.time() - t0
t0 = time.time(); enc = TextEncoder(store=os.path.join(os.environ["P2_CACHE"], "captions")); enc.prefill(data.texts)
t["warm trial: caption prefill from the store"] = time.time() - t0
t0 = time.time(); state = build_state(cfg, text_encoder=enc)
t["warm trial: build state (torch's optimizer imports torch._dynamo)"] = time.time() - t0
with Prefetcher(state, data, 1) as inputs:
    t0 = time.time(); train_inputs_step(state, inputs.next()); t["warm trial: first step"] = time.time() - t0
print(json.dumps(t))
"""


def p2_pieces(root: Path) -> dict:
    """The pieces of P2, each timed alone in a fresh process (smoke scale, one CPU thread); then a warm trial's
    own pieces in another fresh process, its caption encodings stored by the first (the encoder never loads)."""
    pieces = {}
    for script in (_PIECES % {"setup": _TRIAL_SETUP}, _WARM_TRIAL % {"setup": _TRIAL_SETUP}):
        proc = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "P2_CACHE": str(root)}
        )
        if proc.returncode != 0:
            sys.exit(f"the P2 pieces failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        pieces.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    return pieces


def p2(root: Path, runs: int) -> dict:
    """P2 over sweeps sharing one fresh cache (`T2S_RAY_CACHE`): a first sweep that renders the data and trains
    the gloss evaluator (not counted), one with the data cache but no caption encodings (a first sweep on data
    already rendered), then `runs` with everything cached (a later sweep, or a later trial on the same kind of
    device); and the pieces."""
    cache = root / "cache"
    env = {"T2S_RAY_CACHE": str(cache)}
    sweeps = [{**in_ray(root / "p2-fresh", 10, 5, env), "cache": "fresh (data rendered, evaluator trained)"}]
    shutil.rmtree(cache / "captions")
    sweeps.append({**in_ray(root / "p2-cold", 10, 5, env), "cache": "data cached, no caption encodings"})
    sweeps += [{**in_ray(root / f"p2-{i}", 10, 5, env), "cache": "warm"} for i in range(runs)]
    return {"sweeps": sweeps, "pieces": p2_pieces(root / "cache-pieces")}


def print_p2(result: dict) -> None:
    for r in result["sweeps"]:
        print(
            f"P2, cache {r['cache']}: {r['to_first_report_s']:.1f} s to the first report (step "
            f"{r['first_report_step']}): {r['to_trial_start_s']:.1f} s until the trial starts + "
            f"{r['trial_to_first_report_s']:.1f} s in it"
        )
    print("P2 pieces, each alone: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["pieces"].items()))


def three_trials(root: Path, steps: int, share: bool, name: str, scale: str = "smoke") -> dict:
    wall = _run(
        [
            "sweep",
            "--gpus",
            "0",
            "--seeds",
            "1",
            "--scale",
            scale,
            "--steps",
            str(steps),
            "--storage",
            str(root),
            "--name",
            name,
            "--quiet",
            "--no-dashboard",
            "--share-training" if share else "--no-share-training",
        ]
    )
    totals = [_rows(t)[-1]["time_total_s"] for t in _trials(root / name)]
    return {
        "run": f"3 seed ablations, {'shared' if share else 'separate'} training",
        "wall_s": wall,
        "trials": len(totals),
        "longest_trial_s": max(totals),
        "trial_s_sum": sum(totals),
        "wall_over_longest": wall / max(totals),
    }


def same_results(root: Path) -> dict:
    """The quality metrics of every ablation, shared vs separate training: equal (timings left out)?"""
    from t2s_ray.analysis import load_trials, select_trials

    shared, separate = (select_trials(load_trials(root / n)).set_index("ablation") for n in ("shared", "separate"))
    keys = [
        k
        for k in separate.columns
        if (k.startswith("eval/") or k in ("val_loss", "final_loss"))
        and not k.endswith("_status")
        and "inference" not in k
    ]

    def equal(x, y) -> bool:
        return x == y or (pd.isna(x) and pd.isna(y))

    diffs = {
        f"{a}:{k}": (separate.loc[a, k], shared.loc[a, k])
        for a in separate.index
        for k in keys
        if not equal(separate.loc[a, k], shared.loc[a, k])
    }
    return {
        "metrics_compared": len(keys) * len(separate.index),
        "differing": {k: list(v) for k, v in diffs.items()},
        "trained_with": shared["trained_with"].to_dict(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--report-every", type=int, default=10)
    p.add_argument("--out", default="bench_overhead.json")
    p.add_argument(
        "--sharing-only",
        action="store_true",
        help="only the shared vs separate comparison, at --scale (training-dominated at small)",
    )
    p.add_argument("--scale", default="smoke", help="scale of the shared vs separate comparison")
    p.add_argument("--p2-only", action="store_true", help="only P2 (3 sweeps of one trial) and its pieces")
    a = p.parse_args()
    if a.p2_only:
        with tempfile.TemporaryDirectory() as tmp:
            result = p2(Path(tmp), 3)
        print_p2(result)
        best = min(r["to_first_report_s"] for r in result["sweeps"] if r["cache"] == "warm")
        cold = result["sweeps"][1]["to_first_report_s"]
        print(f"P2 (best of 3, cache warm): {best:.1f} s; no caption encodings cached: {cold:.1f} s (goal <= 10 s)")
        write_results(a.out, "p2", result["sweeps"], pieces=result["pieces"], p2_best_s=best)
        return
    if a.sharing_only:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            sep = three_trials(root, a.steps, share=False, name="separate", scale=a.scale)
            shared = three_trials(root, a.steps, share=True, name="shared", scale=a.scale)
            same = same_results(root)
        for row in (sep, shared):
            print(
                f"{row['run']:<42} wall {row['wall_s']:.1f} s, {row['trials']} trial(s), trial-seconds "
                f"{row['trial_s_sum']:.1f}"
            )
        print(
            f"shared / separate at {a.scale}, {a.steps} steps: trial-seconds "
            f"{shared['trial_s_sum'] / sep['trial_s_sum']:.2f}, wall {shared['wall_s'] / sep['wall_s']:.2f}; "
            f"{same['metrics_compared']} quality values compared, {len(same['differing'])} differ"
        )
        write_results(a.out, "sharing", [sep, shared], scale=a.scale, steps=a.steps, same_results=same)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        b = bare(root, a.steps, a.report_every)
        r = in_ray(root, a.steps, a.report_every)
        sep = three_trials(root, a.steps, share=False, name="separate")
        shared = three_trials(root, a.steps, share=True, name="shared")
        same = same_results(root)
    p1 = r["step_time_ms"] / b["step_time_ms"]
    print(f"{'run':<42} {'wall s':>8} {'ms/step':>9} {'samples/s':>10}")
    for row in (b, r):
        print(f"{row['run']:<42} {row['wall_s']:>8.1f} {row['step_time_ms']:>9.1f} {row['samples_per_s']:>10.1f}")
    print(f"P1 step time inside Ray / bare: {p1:.3f} (goal <= 1.03)")
    print(f"P2 sweep start -> first reported step: {r['to_first_report_s']:.1f} s (goal <= 10 s)")
    for row in (sep, shared):
        print(
            f"{row['run']:<42} wall {row['wall_s']:.1f} s, {row['trials']} trial(s), longest trial "
            f"{row['longest_trial_s']:.1f} s, trial-seconds {row['trial_s_sum']:.1f}, wall/longest "
            f"{row['wall_over_longest']:.2f}"
        )
    print(f"P3 3-trial sweep wall / longest trial: {sep['wall_over_longest']:.2f}")
    print(
        f"shared / separate: trial-seconds {shared['trial_s_sum'] / sep['trial_s_sum']:.2f}, "
        f"wall {shared['wall_s'] / sep['wall_s']:.2f}; trained_with {same['trained_with']}"
    )
    print(
        f"results: {same['metrics_compared']} quality values compared, {len(same['differing'])} differ"
        + (f": {same['differing']}" if same["differing"] else " (identical)")
    )
    write_results(
        a.out,
        "overhead",
        [b, r, sep, shared],
        steps=a.steps,
        p1=p1,
        p2_s=r["to_first_report_s"],
        p3=sep["wall_over_longest"],
        shared_over_separate_trial_s=shared["trial_s_sum"] / sep["trial_s_sum"],
        same_results=same,
    )


if __name__ == "__main__":
    main()
