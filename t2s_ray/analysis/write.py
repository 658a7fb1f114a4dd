"""Writing an experiment's analysis: the tables, report, curves and figures, each atomically."""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

from t2s_ray import stats
from t2s_ray.analysis.catalog import primary_metrics, study_directions
from t2s_ray.analysis.guidance import guidance_curve
from t2s_ray.analysis.html import render_html, report_figures
from t2s_ray.analysis.read import _history_frame, _scan, _trials_frame, select_trials
from t2s_ray.analysis.render import comparison_markdown, render_report, to_csv
from t2s_ray.analysis.tables import comparison_stats, summarize, training_curves
from t2s_ray.guidance import GUIDANCE_CSV
from t2s_ray.io import write_bytes_atomic, write_text_atomic
from t2s_ray.outputs import (
    COMPARISON_STATS_CSV,
    CURVES_CSV,
    FORMATS,
    REPORT_HTML,
    REPORT_TXT,
    SWEEP_FILE,
    TABLE_CSV,
    TABLE_MD,
)


def _study_record(exp_dir: str | os.PathLike) -> dict:
    """What a user study's sweep recorded in `t2s_sweep.json` (baseline, metric directions); {} otherwise."""
    try:
        record = json.loads((Path(exp_dir) / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _with_study(fn):
    """Run `fn(exp_dir, ...)` with the study's baseline (unless one is passed), metric directions and primary
    metrics: `primary=` (analyze --primary), else the sweep's recorded --primary, else what each arm declares,
    else a user study's first metric."""

    @functools.wraps(fn)
    def wrapper(exp_dir, *args, **kwargs):
        record = _study_record(exp_dir)
        if record.get("baseline") and "baseline" not in kwargs:
            kwargs["baseline"] = record["baseline"]
        metrics = list(record.get("metrics") or {})
        with (
            study_directions(record.get("metrics") or {}),
            primary_metrics(tuple(kwargs.pop("primary", None) or record.get("primary") or ()), tuple(metrics[:1])),
        ):
            return fn(exp_dir, *args, **kwargs)

    return wrapper


@_with_study
def headline_markdown(exp_dir: str | os.PathLike, baseline: str = "baseline", interval: str = "t") -> str:
    """The quality and cost tables for the terminal (the files hold every metric)."""
    selected = select_trials(_trials_frame(_scan(exp_dir)))
    summary = summarize(selected, baseline)
    return comparison_markdown(selected, summary, comparison_stats(selected, baseline, interval), baseline)


def parse_effect(text: str) -> tuple[float, bool]:
    """`--effect`: `0.02` (in the metric's units) -> (0.02, False); `1%` (of the baseline's mean) -> (1.0, True)."""
    raw = text.strip()
    pct = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        raise ValueError(
            f"--effect {text!r}: expected a number (0.02, in the metric's units) or a percentage of "
            f"the baseline's mean (1%)"
        ) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"--effect {text!r}: must be > 0")
    return value, pct


@_with_study
def seeds_needed(exp_dir: str | os.PathLike, effect: str, baseline: str = "baseline") -> list[str]:
    """Per primary comparison of the pilot experiment `exp_dir`: the seeds the paired t-test needs to find
    `effect` (`parse_effect`) with 80 % power at its family's alpha, from the sd of its per-seed differences."""
    value, pct = parse_effect(effect)
    selected = select_trials(_trials_frame(_scan(exp_dir)))
    stats_ = comparison_stats(selected, baseline)
    rows = stats_[stats_["primary"]] if stats_["primary"].any() else stats_[stats_["family"] == "secondary"]
    if rows.empty:
        raise ValueError(f"--pilot {exp_dir}: no comparison with a finished baseline to take the variance from")
    lines = []
    for _, r in rows.iterrows():
        target = value * abs(r["baseline_mean"]) / 100 if pct else value
        shown = f"{value:g}% ({target:.3g})" if pct else f"{target:.3g}"
        if not math.isfinite(r["sd_diff"]) or not math.isfinite(target) or target == 0:
            lines.append(f"  {r['ablation']}, {r['metric']}: n/a (no variance of the differences at n = {r['n']})")
            continue
        k = stats.seeds_for(target, r["sd_diff"], r["alpha"])
        need = f"~{k} seeds" if k else "more than 1000 seeds"
        lines.append(
            f"  {r['ablation']}, {r['metric']}: {need} find {shown} with 80 % power at alpha "
            f"{r['alpha']:.3g} (sd of the per-seed differences {r['sd_diff']:.3g} over {r['n']} seeds)"
        )
    return lines


@_with_study
def write_outputs(
    exp_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    fmt: str = "both",
    baseline: str = "baseline",
    interval: str = "t",
    source: str | None = None,
) -> dict[str, Path]:
    """Analyze an experiment dir and write its tables and report into out_dir (default exp_dir).

    Writes comparison_table.csv (fmt csv/both), comparison_table.md (fmt md/both),
    and comparison_stats.csv (fmt csv/both), ABLATION_RESULTS_REPORT.txt, training_curves.csv, the report's
    figures training_curves.png (raw and smoothed) and metrics.png (95 % t-interval whiskers), and the
    self-contained page report.html, each atomically; with a guidance curve (`eval.guidance_scale` a list)
    also guidance_curve.csv and .png. Returns {"csv", "stats", "md", "report", "curves", "html", "curves_png",
    "metrics_png"[, "guidance", "guidance_png"]} -> path for the files written. `interval`: the paired
    differences' 95 % interval, `t` or `bootstrap`.
    `source`: where the experiment lives when `exp_dir` is a local copy of it (a storage URI), for the report.
    """
    fmt = getattr(fmt, "value", fmt)  # a str Enum from the CLI
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    attempts = _scan(exp_dir)
    selected = select_trials(_trials_frame(attempts))
    summary = summarize(selected, baseline)
    out = Path(exp_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparisons = comparison_stats(selected, baseline, interval)
    texts = {}
    if fmt in ("csv", "both"):
        texts["csv"] = (TABLE_CSV, to_csv(summary))
        texts["stats"] = (COMPARISON_STATS_CSV, comparisons.to_csv(index=False))
    if fmt in ("md", "both"):
        texts["md"] = (TABLE_MD, comparison_markdown(selected, summary, comparisons, baseline) + "\n")
    texts["report"] = (REPORT_TXT, render_report(exp_dir, selected, summary, baseline, comparisons))
    history = _history_frame(attempts)
    curves = training_curves(history)
    texts["curves"] = (CURVES_CSV, curves.to_csv(index=False))
    guidance = guidance_curve(selected)
    if not guidance.empty:  # some ablation evaluated a list of guidance scales
        texts["guidance"] = (GUIDANCE_CSV, guidance.to_csv(index=False))
    figures = report_figures(history, summary, selected, guidance)  # drawn once: inlined and written as PNGs
    texts["html"] = (
        REPORT_HTML,
        render_html(
            exp_dir,
            attempts,
            selected,
            summary,
            comparisons,
            history,
            out,
            baseline,
            source=source,
            curve=guidance,
            figures=figures,
        ),
    )
    paths = {key: write_text_atomic(out / name, text) for key, (name, text) in texts.items()}
    pngs = {key: (name, figures[figure]) for key, (name, figure) in PNG_FILES.items() if figure in figures}
    return {**paths, **{key: write_bytes_atomic(out / name, png) for key, (name, png) in pngs.items()}}


PNG_FILES = {
    "curves_png": ("training_curves.png", "curves"),
    "metrics_png": ("metrics.png", "metrics"),
    "guidance_png": ("guidance_curve.png", "guidance"),
}
"""`write_outputs`' PNG files: key -> (file name, the report figure it holds), each written when drawn."""
