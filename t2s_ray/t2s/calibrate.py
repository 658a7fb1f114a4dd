"""The tool's own known-effect check: can a study detect that the text matters?

`t2s-ray calibrate` runs `baseline` against the `no_text` control (captions always dropped) at
the `small` scale, x 3 seeds, as an ordinary sweep, then tests the per-seed difference in
`eval/text_alignment`. The effect is known to exist; if the paired 95 % interval does not
exclude 0, the chain of training, sampling and metrics cannot see an effect that large, and no
other verdict of the tool at that scale is worth reading.

Beside it a graded control of a small known effect, `few_sampling_steps` (baseline's weights sampled with 5
DDIM steps; it shares baseline's training): whether it is detected, and the minimum detectable effect at this
n, say how sensitive the study is. PASS still requires only the big effect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from t2s_ray.analysis import load_trials, select_trials
from t2s_ray.io import write_text_atomic
from t2s_ray.stats import BETTER, Paired, by_seed, mde, paired, verdict
from t2s_ray.t2s.ablations import CALIBRATION_ARM as ARM
from t2s_ray.t2s.ablations import CALIBRATION_CONTROL as CONTROL
from t2s_ray.t2s.ablations import CALIBRATION_GRADED as GRADED

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
    graded: dict[int, float] | None = None
    """Per-seed text alignment of the graded control (None when it was not run)."""
    graded_result: Paired | None = None
    """baseline − graded control."""
    graded_verdict: str = ""

    @property
    def passed(self) -> bool:
        return self.verdict == BETTER

    @property
    def graded_detected(self) -> bool:
        return self.graded_verdict == BETTER

    @property
    def graded_mde(self) -> float:
        """The smallest text-alignment loss the graded comparison finds with 80 % power at its n (NaN if none)."""
        return mde(self.graded_result) if self.graded_result is not None else math.nan

    def to_dict(self) -> dict[str, Any]:
        body = {
            "metric": METRIC,
            "arm": ARM,
            "control": CONTROL,
            "per_seed": {ARM: self.arm, CONTROL: self.control},
            "chance": self.chance,
            **self.result.to_dict(),
            "verdict": self.verdict,
            "mde": mde(self.result),
            "passed": self.passed,
        }
        if self.graded_result is not None:
            body["graded"] = {
                "control": GRADED,
                "per_seed": self.graded,
                **self.graded_result.to_dict(),
                "verdict": self.graded_verdict,
                "detected": self.graded_detected,
                "mde": self.graded_mde,
            }
        return body


def judge(trials: pd.DataFrame) -> Calibration:
    """The calibration verdict from one row per (ablation, seed) of finished trials (see analysis.select_trials)."""
    done = trials[trials["status"] == "finished"] if "status" in trials else trials
    if METRIC not in done:
        raise ValueError(f"no trial reported {METRIC}: the gloss evaluator is needed (data.spec=synthsign)")
    side = {name: done[done["ablation"] == name] for name in (ARM, CONTROL)}
    values = {name: by_seed(rows["seed"], rows[METRIC]) for name, rows in side.items()}
    chance = float(done[CHANCE].max()) if CHANCE in done else math.nan
    result = paired(values[ARM], values[CONTROL])
    graded = done[done["ablation"] == GRADED]
    if graded.empty:
        return Calibration(values[ARM], values[CONTROL], chance, result, verdict(result))
    graded_values = by_seed(graded["seed"], graded[METRIC])
    graded_result = paired(values[ARM], graded_values)
    return Calibration(
        values[ARM],
        values[CONTROL],
        chance,
        result,
        verdict(result),
        graded_values,
        graded_result,
        verdict(graded_result),
    )


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
        f"{r.test} p = {r.p:.2g}, n = {r.n} seeds"
        + (f", {r.dropped} unpaired dropped" if r.dropped else "")
        + f"); chance level {cell(cal.chance)}",
        f"verdict: {r.n} paired seeds → {cal.verdict}",
        "",
        (
            "**PASS**: the study detects the known effect of the text."
            if cal.passed
            else "**FAIL**: the known effect of the text was not detected; no other verdict at this scale is worth "
            "reading (train longer: --set training.steps=..., or check the samples)."
        ),
    ]
    g = cal.graded_result
    if g is not None:
        lines += [
            "",
            f"graded control ({GRADED}, a small known effect): {ARM} − {GRADED} = {cell(g.mean_diff)} (95 % CI "
            f"[{cell(g.ci_low)}, {cell(g.ci_high)}], {g.test} p = {g.p:.2g}, n = {g.n}) → {cal.graded_verdict}; "
            f"minimum detectable effect at this n (80 % power, α = 0.05 for this one comparison; the analysis's "
            f"tables correct α over their primary comparisons): {cell(cal.graded_mde)} "
            + (
                "(detected)"
                if cal.graded_detected
                else "(not detected: effects this small need more seeds or clips; see --effect)"
            ),
        ]
    return "\n".join(lines)


def write(cal: Calibration, exp_dir: Path) -> tuple[Path, Path]:
    """`calibration.json` and `calibration.md` in the experiment folder."""
    md, js = exp_dir / RESULT_MD, exp_dir / RESULT_JSON
    write_text_atomic(md, "# Calibration: baseline vs no_text\n\n" + render(cal) + "\n")
    write_text_atomic(js, json.dumps(cal.to_dict(), indent=2, default=str))
    return md, js
