"""The tool's own known-effect check: can a study detect that the text matters?

`t2s-ray calibrate` runs `baseline` against the `no_text` control (captions always dropped) at
the `small` scale, x 3 seeds, as an ordinary sweep, then tests the per-seed difference in
`eval/text_alignment`. The effect is known to exist; if the paired 95 % interval does not
exclude 0, the chain of training, sampling and metrics cannot see an effect that large, and no
other verdict of the tool at that scale is worth reading.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from t2s_ray.ablations import CALIBRATION_ARM as ARM
from t2s_ray.ablations import CALIBRATION_CONTROL as CONTROL
from t2s_ray.analysis import load_trials, select_trials
from t2s_ray.io import write_text_atomic
from t2s_ray.stats import BETTER, Paired, by_seed, paired, verdict

METRIC = "eval/text_alignment"
CHANCE = "eval/text_alignment_chance"
RESULT_JSON, RESULT_MD = "calibration.json", "calibration.md"


@dataclass(frozen=True)
class Calibration:
    """The calibration's numbers and its verdict (`passed` iff the interval lies above 0)."""

    arm: dict[int, float]
    """Per-seed text alignment of the baseline."""
    control: dict[int, float]
    """Per-seed text alignment of `no_text`."""
    chance: float
    """What a caption-blind generator can expect (share of the commonest prompt sentence)."""
    result: Paired
    verdict: str

    @property
    def passed(self) -> bool:
        return self.verdict == BETTER

    def to_dict(self) -> dict[str, Any]:
        return {"metric": METRIC, "arm": ARM, "control": CONTROL, "per_seed": {ARM: self.arm, CONTROL: self.control},
                "chance": self.chance, **self.result.to_dict(), "verdict": self.verdict,
                "passed": self.passed}


def judge(trials: pd.DataFrame) -> Calibration:
    """The calibration verdict from one row per (ablation, seed) of finished trials (see analysis.select_trials)."""
    done = trials[trials["status"] == "finished"] if "status" in trials else trials
    if METRIC not in done:
        raise ValueError(f"no trial reported {METRIC}: the gloss evaluator is needed (data.spec=synthsign)")
    side = {name: done[done["ablation"] == name] for name in (ARM, CONTROL)}
    values = {name: by_seed(rows["seed"], rows[METRIC]) for name, rows in side.items()}
    chance = float(done[CHANCE].max()) if CHANCE in done else math.nan
    result = paired(values[ARM], values[CONTROL])
    return Calibration(values[ARM], values[CONTROL], chance, result, verdict(result))


def judge_experiment(exp_dir: Path) -> Calibration:
    """`judge` on an experiment folder's trials (one row per (ablation, seed), restarts counted once)."""
    return judge(select_trials(load_trials(exp_dir)))


def render(cal: Calibration) -> str:
    """The per-seed table, the paired difference with its interval, and PASS/FAIL, as Markdown."""
    seeds = sorted(set(cal.arm) | set(cal.control))
    cell = lambda v: "—" if v is None or not math.isfinite(v) else f"{v:.3f}"  # noqa: E731
    lines = [f"| seed | {ARM} | {CONTROL} | difference |", "|---:|---:|---:|---:|"]
    for s in seeds:
        a, c = cal.arm.get(s), cal.control.get(s)
        diff = a - c if a is not None and c is not None else None
        lines.append(f"| {s} | {cell(a)} | {cell(c)} | {cell(diff)} |")
    r = cal.result
    lines += [
        "",
        f"{METRIC}: {ARM} − {CONTROL} = {cell(r.mean_diff)} (95 % CI [{cell(r.ci_low)}, {cell(r.ci_high)}], "
        f"{r.test} p = {r.p:.2g}, n = {r.n} seeds" + (f", {r.dropped} unpaired dropped" if r.dropped else "")
        + f"); chance level {cell(cal.chance)}",
        f"verdict: {r.n} paired seeds → {cal.verdict}",
        "",
        ("**PASS**: the study detects the known effect of the text." if cal.passed else
         "**FAIL**: the known effect of the text was not detected; no other verdict at this scale is worth "
         "reading (train longer: --set training.steps=..., or check the samples)."),
    ]
    return "\n".join(lines)


def write(cal: Calibration, exp_dir: Path) -> tuple[Path, Path]:
    """`calibration.json` and `calibration.md` in the experiment folder."""
    md, js = exp_dir / RESULT_MD, exp_dir / RESULT_JSON
    write_text_atomic(md, "# Calibration: baseline vs no_text\n\n" + render(cal) + "\n")
    write_text_atomic(js, json.dumps(cal.to_dict(), indent=2, default=str))
    return md, js
