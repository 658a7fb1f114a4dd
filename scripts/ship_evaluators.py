"""Regenerate, or verify, the SynthSign gloss evaluators shipped with the package for the built-in scales.

    python scripts/ship_evaluators.py             # train afresh, rewrite t2s_ray/t2s/evaluator_weights/
    python scripts/ship_evaluators.py --verify    # retrain, compare with the shipped weights and reports

Each scale's evaluator (the one `resolve("baseline", scale, 0, [])` asks for) is trained on CPU
in a fresh temp cache, never from the shipped copy. Writing replaces the package folder whole:
`<key>/{model.pt,report.json}` plus `manifest.json` (key -> scale, sha256 of each file), which
`t2s_ray.t2s.gloss_evaluator` checks before copying a shipped evaluator into a user's cache. Rerun it after
any change to the evaluator's key (EVALUATOR_VERSION, EvaluatorConfig, a scale's data or eval
fields, SynthSign's rendering): `tests/test_evaluator.py` fails until the manifest covers the new keys.
`--verify` exits 1 if a retrained evaluator reads the test clips differently from the shipped one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchkit import write_results

from t2s_ray.io import atomic_dir
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.gloss_evaluator import (
    EVALUATOR_FILES,
    EVALUATOR_VERSION,
    SHIPPED_DIR,
    EvaluatorReport,
    evaluator_config,
    evaluator_key,
    shipped_evaluators,
    train_evaluator,
)

SHIPPED_SCALES = ("smoke", "small")
"""Built-in scales whose evaluator ships. `full` (16x64x64 clips) is not: ~8x smoke's compute, over
half an hour on a laptop CPU, and a full-scale run on GPUs trains it in minutes of its hours."""

ACCURACIES = ("exact_accuracy", "gloss_accuracy", "length_accuracy")


def train(scale: str, cache_dir: str) -> tuple[EvaluatorReport, Path]:
    """Train `scale`'s evaluator afresh in `cache_dir`; its report and cache folder."""
    cfg = resolve("baseline", scale, 0, [])
    data = dataclasses.replace(cfg.data, cache_dir=cache_dir)
    log = lambda p: print(
        f"  [{scale}] epoch {p['epoch']}/{p['epochs']} loss {p['train_loss']:.4g} "  # noqa: E731
        f"({p['elapsed_s']:.0f} s)",
        flush=True,
    )
    print(f"{scale}: training evaluator {evaluator_key(data, evaluator_config(cfg.eval))}", flush=True)
    report = train_evaluator(data, evaluator_config(cfg.eval), progress=log, use_shipped=False)
    return report, Path(report.path)


def ship(scales: list[str]) -> list[dict]:
    """Train every scale's evaluator, then replace `SHIPPED_DIR` with them and their manifest."""
    rows, manifest = [], {}
    with tempfile.TemporaryDirectory(prefix="ship-evaluators-") as tmp:
        trained = [(scale, *train(scale, tmp)) for scale in scales]
        with atomic_dir(SHIPPED_DIR) as out:  # a stale key's folder goes with the old one
            for scale, report, folder in trained:
                (out / report.key).mkdir()
                for name in EVALUATOR_FILES:
                    shutil.copyfile(folder / name, out / report.key / name)
                files = {name: (out / report.key / name).read_bytes() for name in EVALUATOR_FILES}
                manifest[report.key] = {
                    "scale": scale,
                    "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in files.items()},
                }
                rows.append(
                    {
                        "scale": scale,
                        "key": report.key,
                        "train_s": report.train_s,
                        "bytes": {n: len(b) for n, b in files.items()},
                        **{k: getattr(report, k) for k in ACCURACIES},
                    }
                )
            body = {
                "written_by": "scripts/ship_evaluators.py",
                "evaluator_version": EVALUATOR_VERSION,
                "torch": torch.__version__,
                "evaluators": manifest,
            }
            (out / "manifest.json").write_text(json.dumps(body, indent=2) + "\n")
    for r in rows:
        print(
            f"shipped {r['scale']}: {SHIPPED_DIR / r['key']} ({sum(r['bytes'].values()) / 1e6:.2f} MB), "
            f"exact accuracy {r['exact_accuracy']:.3f}, trained in {r['train_s']:.0f} s"
        )
    return rows


def verify(scales: list[str]) -> list[dict]:
    """Retrain every scale's evaluator and compare it with the shipped one."""
    shipped, rows = shipped_evaluators(), []
    with tempfile.TemporaryDirectory(prefix="verify-evaluators-") as tmp:
        for scale in scales:
            cfg = resolve("baseline", scale, 0, [])
            key = evaluator_key(cfg.data, evaluator_config(cfg.eval))
            if key not in shipped:
                print(f"{scale}: evaluator {key} is not shipped (its key changed?); run scripts/ship_evaluators.py")
                rows.append({"scale": scale, "key": key, "ok": False, "why": "not shipped"})
                continue
            report, folder = train(scale, tmp)
            rows.append(compare(scale, report, folder, SHIPPED_DIR / key))
    return rows


def compare(scale: str, report: EvaluatorReport, folder: Path, shipped: Path) -> dict:
    """Accuracies, first-epoch loss and weights of a retrained evaluator against the shipped one."""
    ref = json.loads((shipped / "report.json").read_text())
    new = torch.load(folder / "model.pt", weights_only=True)["state_dict"]
    old = torch.load(shipped / "model.pt", weights_only=True)["state_dict"]
    max_diff = max((new[k].float() - old[k].float()).abs().max().item() for k in old)
    one_clip = 1 / report.evaluator["test_clips"]
    ok = all(abs(getattr(report, k) - ref[k]) <= one_clip for k in ACCURACIES)  # float drift may flip a clip
    row = {
        "scale": scale,
        "key": report.key,
        "ok": ok,
        "weights_max_abs_diff": max_diff,
        "train_loss_0": report.train_loss[0],
        "shipped_train_loss_0": ref["train_loss"][0],
        "train_s": report.train_s,
        **{k: getattr(report, k) for k in ACCURACIES},
        **{f"shipped_{k}": ref[k] for k in ACCURACIES},
    }
    print(
        f"{scale}: {'OK' if ok else 'MISMATCH'}; exact accuracy {report.exact_accuracy:.4f} "
        f"(shipped {ref['exact_accuracy']:.4f}), per-gloss {report.gloss_accuracy:.4f} "
        f"(shipped {ref['gloss_accuracy']:.4f}), first-epoch loss {report.train_loss[0]:.10g} "
        f"(shipped {ref['train_loss'][0]:.10g}), weights max |diff| {max_diff:.3g}"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="retrain and compare with the shipped evaluators")
    parser.add_argument(
        "--scales",
        nargs="+",
        choices=SHIPPED_SCALES,
        default=list(SHIPPED_SCALES),
        help="with --verify: the scales to check (shipping always trains every one of them)",
    )
    parser.add_argument("--out", default="bench_ship_evaluators.json", help="where to write the JSON results")
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = verify(args.scales) if args.verify else ship(list(SHIPPED_SCALES))
    write_results(
        args.out,
        "ship_evaluators",
        rows,
        mode="verify" if args.verify else "ship",
        evaluator_version=EVALUATOR_VERSION,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        wall_s=time.perf_counter() - t0,
    )
    if args.verify and not all(r["ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
