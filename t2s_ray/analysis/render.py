"""Formatting: the Markdown/CSV comparison tables and the text report, as strings."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd

from t2s_ray import stats
from t2s_ray.analysis.catalog import (
    ARROWS,
    COST,
    FRECHET,
    METRICS,
    REFERENCES,
    headline_metrics,
    metric_columns,
    metric_info,
    no_information,
    tested_values,
)
from t2s_ray.analysis.guidance import headline_note
from t2s_ray.analysis.tables import comparison_stats, summary_metrics
from t2s_ray.guidance import CURVE_METRICS, scale_text
from t2s_ray.outputs import is_baseline


def _decimals(x: float, digits: int) -> int:
    if not math.isfinite(x) or x == 0:
        return digits - 1
    return max(digits - 1 - math.floor(math.log10(abs(x))), 0)


def column_decimals(summary: pd.DataFrame, metric: str, digits: int = 4) -> int:
    """Decimals shared by a metric's column: `digits` significant digits of its largest mean,
    none when every mean is a whole number with zero/unknown std (counts)."""
    means, stds = summary[f"{metric}_mean"].dropna(), summary[f"{metric}_std"].dropna()
    if means.empty or (means.map(float.is_integer).all() and (stds == 0).all()):
        return 0
    return _decimals(means.abs().max(), digits)


def mean_std_text(mean: float, std: float, decimals: int) -> str:
    """`mean ± std` with fixed decimals; just the mean when std is NaN; "n/a" when mean is."""
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{decimals}f}"
    return text if math.isnan(std) else f"{text} ± {std:.{decimals}f}"


def _cell(row: pd.Series, m: str, decimals: int) -> str:
    n = row[f"{m}_n"]
    if n == 0:
        return "n/a"
    text = mean_std_text(row[f"{m}_mean"], row[f"{m}_std"], decimals)
    return text if n >= row["n_seeds"] else f"{text} (n={n}/{row['n_seeds']})"


def _delta_cell(row: pd.Series, m: str, baseline: str) -> str:
    if is_baseline(row["ablation"], baseline):
        return "—"
    d = row[f"{m}_delta_pct"]
    return "n/a" if math.isnan(d) else f"{round(d, 1) + 0.0:+.1f}%"  # no "-0.0%"


def _seeds_cell(row: pd.Series) -> str:
    missing = row.get("n_incomplete", 0)
    return f"{row['n_seeds']}" + (f" ({missing} not finished)" if missing else "")


def header_label(metric: str) -> str:
    """Table header for a metric: its label and an arrow saying which direction is better."""
    info = metric_info(metric)
    return f"{info.label} {ARROWS[info.better]}" if info.better else info.label


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


MARKS = {
    stats.BETTER: "✓",
    stats.WORSE: "✗",
    stats.NO_DIFFERENCE: "≈",
    stats.TOO_FEW: "·",
    stats.BETTER + stats.EXPLORATORY: "(✓)",
    stats.WORSE + stats.EXPLORATORY: "(✗)",
    stats.LOSS: "–",
}
LEGEND = (
    "Δ vs baseline: paired by seed, mean difference [95 % CI] (in % of the baseline mean where a "
    "metric has one; of |log r| for ratios; of |value − real clips' value| for →real metrics), then "
    "✓ better / ✗ worse on the arm's primary metric(s) (interval excludes 0 and the Holm-adjusted p < 0.05, "
    "Holm over the primary comparisons), (✓)/(✗) the same on a secondary metric (exploratory: its own Holm "
    "family), ≈ no detectable difference (with the Holm p when the unadjusted interval excludes 0), "
    "– a loss (compared, never ranked), · fewer than 3 seeds (no inference); p-values and the minimum "
    "detectable effect (mde) in comparison_stats.csv."
)


def _verdict_cell(
    row: pd.Series, m: str, baseline: str, comparisons: pd.DataFrame, uninformative: frozenset = frozenset()
) -> str:
    if is_baseline(row["ablation"], baseline):
        return "—"
    if m in uninformative:
        return "no information"
    c = comparisons[(comparisons["ablation"] == row["ablation"]) & (comparisons["metric"] == m)]
    if c.empty:
        return "n/a"
    c = c.iloc[0]
    pct = math.isfinite(c["delta_pct"])
    d, lo, hi = (
        (c["delta_pct"], c["delta_ci_low"], c["delta_ci_high"]) if pct else (c["diff"], c["ci_low"], c["ci_high"])
    )
    if not math.isfinite(d):
        return f"n/a {MARKS[c['verdict']]}"
    fmt = (lambda x: f"{x:+.1f}%") if pct else (lambda x: f"{x:+.3g}")
    interval = f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) else ""
    mark = MARKS[c["verdict"]]
    if c["verdict"] == stats.NO_DIFFERENCE and math.isfinite(lo) and (lo > 0 or hi < 0):
        mark += f" (Holm p {c['p_holm']:.2g})"  # the interval is unadjusted: say why it is no verdict
    return f"{fmt(d)}{interval} {mark}".replace("-0.0%", "+0.0%")


def table_cells(
    summary: pd.DataFrame,
    metrics: list[str] | None = None,
    baseline: str = "baseline",
    digits: int = 4,
    comparisons: pd.DataFrame | None = None,
    uninformative: frozenset = frozenset(),
) -> tuple[list[str], list[list[str]]]:
    """`(header, rows)` of the comparison table as text cells (see `to_markdown`); the first two
    columns are Ablation and Seeds, each metric column may be followed by its Δ column. A metric in
    `uninformative` (`catalog.no_information`) is headed "(no information)" and its Δ cells say so."""
    metrics = summary_metrics(summary) if metrics is None else metrics
    decimals = {m: column_decimals(summary, m, digits) for m in metrics}

    def has_delta(m: str) -> bool:
        if comparisons is None:
            return f"{m}_delta_pct" in summary
        return m in uninformative or bool((comparisons["metric"] == m).any())

    header = ["Ablation", "Seeds"]
    for m in metrics:
        header.append(header_label(m) + (" (no information)" if m in uninformative else ""))
        if has_delta(m):
            header.append("Δ%" if comparisons is None else "Δ vs baseline")
    rows = []
    for _, row in summary.iterrows():
        cells = [str(row["ablation"]), _seeds_cell(row)]
        for m in metrics:
            cells.append(_cell(row, m, decimals[m]))
            if has_delta(m):
                cells.append(
                    _delta_cell(row, m, baseline)
                    if comparisons is None
                    else _verdict_cell(row, m, baseline, comparisons, uninformative)
                )
        rows.append(cells)
    return header, rows


def to_markdown(
    summary: pd.DataFrame,
    metrics: list[str] | None = None,
    baseline: str = "baseline",
    digits: int = 4,
    comparisons: pd.DataFrame | None = None,
) -> str:
    """Paper-style pipe table: one row per ablation, `mean ± std` per metric, Δ columns.

    A column shows `digits` significant digits of its largest mean, with the same decimals
    in every row (see column_decimals); a metric with fewer values than finished seeds
    shows `(n=k/N)`; arrows say which direction is better. Without `comparisons` a Δ% column
    (vs the baseline's mean) follows each metric that has one; with them (`comparison_stats`)
    a "Δ vs baseline" column follows each ranked metric: the paired difference, its 95 % CI
    and the verdict mark (see LEGEND).
    """
    return _markdown_table(table_cells(summary, metrics, baseline, digits, comparisons))


QUALITY_COLUMNS = 4
"""Quality metrics in the Markdown quality table (each with its Δ column: 2 + 2 x 4 = 10 columns)."""


def comparison_parts(
    selected: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame, baseline: str = "baseline"
) -> dict:
    """What the comparison shows, as data: `quality` and `cost` tables (`table_cells`, None when empty),
    `legend`, `frechet` (the sample count note or None), `guidance` (the guidance scale of the tables when a
    list was evaluated, else None), `more` (quality metrics only in the CSVs), `missing` (the all-NaN metrics
    with their reason) and `no_information` (the metrics `catalog.no_information` flags, with why)."""
    present = [m for m in summary_metrics(summary) if summary[f"{m}_mean"].notna().any()]
    quality = [m for m in headline_metrics() if m in present and metric_info(m).kind == "quality"]
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    uninformative = no_information(done)
    more = [
        m
        for m in present
        if metric_info(m).kind == "quality" and m not in quality[:QUALITY_COLUMNS] and metric_info(m).better is not None
    ]
    cost = [m for m in COST if m in present]
    return {
        "quality": table_cells(
            summary,
            quality[:QUALITY_COLUMNS],
            baseline,
            comparisons=comparisons,
            uninformative=frozenset(uninformative),
        ),
        "cost": table_cells(summary, cost, baseline, comparisons=comparisons.iloc[0:0]) if cost else None,
        "legend": LEGEND,
        "frechet": _frechet_n(selected) if any(m in FRECHET for m in quality[:QUALITY_COLUMNS]) else None,
        "guidance": headline_note(selected),
        "more": more,
        "missing": all_nan_notes(selected),
        "undirected": undirected_note(present),
        "no_information": [f"- {m}: {why}" for m, why in uninformative.items()],
    }


def undirected_note(metrics: list[str]) -> str | None:
    """Why the quality metrics among `metrics` that have no direction get no verdict, and the fix; None when
    every one has a direction."""
    # the study's own evaluation metrics: the catalog's unranked ones (sample counts, the real clips' reference
    # values, memory) are unranked on purpose
    none = [
        m
        for m in metrics
        if m.startswith(("eval/", "params/"))
        and m not in METRICS
        and not m.endswith("_real")
        and metric_info(m).better is None
    ]
    if not none:
        return None
    return (
        f"Shown without a verdict (no direction: neither t2s-ray's metric catalog nor the study says whether "
        f'higher or lower is better): {", ".join(none)}; give each one in Study(metrics={{name: "lower" | '
        f'"higher" | "real"}}).'
    )


def _markdown_table(cells: tuple[list[str], list[list[str]]]) -> str:
    header, rows = cells
    align = [":---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return "\n".join(lines + ["| " + " | ".join([_md_escape(r[0]), *r[1:]]) + " |" for r in rows])


def comparison_markdown(
    selected: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame, baseline: str = "baseline"
) -> str:
    """The quality table (headline quality metrics with paired Δ, CI and verdict), the cost table,
    and the metrics left out: those with values (in the CSVs) and the all-NaN ones with their reason."""
    c = comparison_parts(selected, summary, comparisons, baseline)
    parts = ["Quality", "", _markdown_table(c["quality"]), "", c["legend"]]
    if c["guidance"]:
        parts.append(c["guidance"])
    if c["frechet"]:
        parts.append(c["frechet"])
    if c["more"]:
        parts += ["", "More quality metrics (comparison_table.csv, comparison_stats.csv): " + ", ".join(c["more"])]
    if c["cost"]:
        parts += ["", "Cost", "", _markdown_table(c["cost"])]
    power = [
        f"- {r['ablation']}, {r['metric']}: no detectable difference{power_note(r)}"
        for _, r in comparisons.iterrows()
        if r.get("primary") and power_note(r)
    ]
    if power:
        parts += ["", "Primary comparisons without a verdict (minimum detectable effect at 80 % power):", *power]
    if c["undirected"]:
        parts += ["", c["undirected"]]
    if c["no_information"]:
        parts += ["", "Left out of the verdicts, no information (the same value in every arm and seed):"]
        parts += c["no_information"]
    if c["missing"]:
        parts += ["", "Not computed (NaN in every finished trial):", *c["missing"]]
    damaged = damaged_notes(selected)
    if damaged:
        parts += ["", "Damaged files:", *damaged]
    return "\n".join(parts)


def damaged_notes(selected: pd.DataFrame) -> list[str]:
    """One line per trial whose result.json was damaged: the file, and what was recovered."""
    if "damaged" not in selected:
        return []
    return [
        f"- ({r['ablation']}, seed {r['seed']}): {r['damaged']}"
        for _, r in selected.iterrows()
        if isinstance(r["damaged"], str)
    ]


def _frechet_n(selected: pd.DataFrame) -> str:
    """The sample count behind the Fréchet distances (they are biased by it)."""
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    counts = sorted(done["eval/num_videos"].dropna().unique()) if "eval/num_videos" in done else []
    if len(counts) == 1:
        return f"Fréchet distances at N = {counts[0]:g} generated vs {counts[0]:g} real clips (compare at equal N)."
    if not counts:
        return "Fréchet distances: the sample count N was not reported; compare them only at equal N."
    return f"Fréchet distances at UNEQUAL N ({', '.join(f'{c:g}' for c in counts)}): do not compare them."


def all_nan_notes(selected: pd.DataFrame) -> list[str]:
    """`- metric: reason` for each metric that is NaN in every finished trial."""
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    lines = []
    for m in metric_columns(done):
        if len(done) and done[m].isna().all():
            status = f"{m}_status"
            reasons = done[status].dropna().astype(str).unique() if status in done else []
            lines.append(f"- {m}: {'; '.join(reasons) if len(reasons) else 'no status given'}")
    return lines


def to_csv(summary: pd.DataFrame) -> str:
    """The summary as CSV text, full float precision (machine-readable)."""
    return summary.to_csv(index=False)


# --------------------------------------------------------------------------- report


def _trials_section(selected: pd.DataFrame) -> list[str]:
    counts = selected["status"].value_counts()
    lines = [
        f"(ablation, seed) pairs: {len(selected)}: finished {counts.get('finished', 0)}, "
        f"errored {counts.get('errored', 0)}, unfinished {counts.get('unfinished', 0)}"
    ]
    for _, r in selected[selected["status"] != "finished"].iterrows():
        reason = f"\n      {r['error']}" if isinstance(r.get("error"), str) else ""
        lines.append(f"  {r['status'].upper()}: ({r['ablation']}, seed {r['seed']}) in {r['trial_dir']}{reason}")
    for _, r in selected[selected["n_attempts"] > 1].iterrows():
        lines.append(
            f"  RESTARTED: ({r['ablation']}, seed {r['seed']}) had {r['n_attempts']} "
            f"attempts; kept {r['trial_dir']}\n      other attempts: {r['other_dirs']}"
        )
    errors = selected["error"] if "error" in selected else pd.Series(None, index=selected.index, dtype=object)
    recovered = selected[(selected["status"] == "finished") & errors.map(lambda e: isinstance(e, str))]
    for _, r in recovered.iterrows():  # Ray retried it in the same folder (--max-failures); error.txt is the crash
        crash = r["error"].strip().splitlines()[-1] if r["error"].strip() else "see error.txt"
        lines.append(
            f"  RECOVERED: ({r['ablation']}, seed {r['seed']}) crashed, was retried from its last "
            f"checkpoint and finished ({r['trial_dir']}/error.txt: {crash})"
        )
    lines += [f"  DAMAGED: {line[2:]}" for line in damaged_notes(selected)]
    return lines


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _verdict_section(comparisons: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """Per ranked metric: the best ablation by mean, then every ablation's verdict against the baseline."""
    if comparisons.empty:
        return ["  nothing to compare: no ablation besides the baseline has a finished seed with a value"]
    lines = []
    for m, cells in comparisons.groupby("metric", sort=False):
        info = metric_info(m)
        by_ablation = summary.set_index("ablation")
        means = by_ablation[[c for c in (f"{m}_mean", f"{m}_real_mean") if c in by_ablation]]
        means.columns = [m, f"{m}_real"][: len(means.columns)]
        key = {"lower": means[m], "higher": -means[m]}.get(info.better, tested_values(m, means))
        key = key.dropna().sort_values(kind="stable")
        tested = {"one": " (tested on |log r|)", "real": " (tested on |value − real clips' value|)"}.get(
            info.better, ""
        )
        lines.append(f"  {header_label(m)} [{m}]{tested}: best by mean {key.index[0] if len(key) else 'n/a'}")
        for _, c in cells.iterrows():
            dropped = f", {c['dropped']} unpaired seed(s) dropped" if c["dropped"] else ""
            lines.append(
                f"    {c['ablation']} − baseline: {_num(c['diff'])} [{_num(c['ci_low'])}, "
                f"{_num(c['ci_high'])}], p {_num(c['p'])} ({c['test']}), Holm p {_num(c['p_holm'])}, "
                f"n {c['n']}{dropped} → {c['verdict']}{power_note(c)}"
            )
    return lines


def power_note(c: pd.Series) -> str:
    """`; differences below X cannot be seen with n seeds; ~k seeds would see X/2` for a no-detectable-difference
    comparison (X: its minimum detectable effect), "" otherwise."""
    if c["verdict"] != stats.NO_DIFFERENCE or not math.isfinite(c.get("mde", math.nan)):
        return ""
    k = stats.seeds_for(c["mde"] / 2, c["sd_diff"], c["alpha"])
    half = _num(c["mde"] / 2)
    more = f"~{k} seeds would see {half}" if k else f"no seed count up to 1000 would see {half}"
    return f"; differences below {_num(c['mde'])} cannot be seen with {c['n']} seeds; {more}"


def _reference_section(selected: pd.DataFrame) -> list[str]:
    """What real clips score on the same prompts: the floors, ceilings and targets of the metrics."""
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    lines = [f"  {what}: {done[key].mean():.4g}" for key, what in REFERENCES if key in done and done[key].notna().any()]
    if "eval/motion_ratio" in done and done["eval/motion_ratio"].notna().any():
        lines.append("  motion ratio of the real clips: 1 (by definition; ranked by |log r|)")
    return lines or ["  none reported (the gloss evaluator exists for SynthSign only)"]


def nan_notes(selected: pd.DataFrame) -> list[str]:
    """One line per metric that is NaN in some finished trials, with its status strings."""
    done = selected[selected["status"] == "finished"]
    lines = []
    for m in metric_columns(done):
        missing = done[done[m].isna()]
        if missing.empty:
            continue
        status = f"{m}_status"
        reasons = missing[status] if status in missing else pd.Series(index=missing.index, dtype=object)
        lines.append(f"  {m}: NaN in {len(missing)}/{len(done)} finished trials")
        for reason, n in reasons.astype(object).fillna("no status given").value_counts(sort=False).items():
            lines.append(f"      {n}x {reason}")
    return lines or ["  none: every finished trial reported every metric"]


def _sample_count_section(selected: pd.DataFrame) -> list[str]:
    lines = [
        "  Fréchet distances (FVD and variants) are biased by the number of generated",
        "  videos: compare them only between rows with equal sample count (eval/num_videos).",
    ]
    done = selected[selected["status"] == "finished"]
    if "eval/num_videos" not in done or done["eval/num_videos"].isna().all():
        return lines + ["  eval/num_videos was not reported: check the sample count yourself."]
    counts = done.groupby("ablation", sort=False)["eval/num_videos"].unique()
    listed = ", ".join(f"{a}: {'/'.join(f'{v:g}' for v in vals)}" for a, vals in counts.items())
    equal = done["eval/num_videos"].nunique(dropna=False) == 1
    verdict = "equal" if equal else "UNEQUAL: do not compare Fréchet distances across them"
    return lines + [f"  Here: {listed} ({verdict})."]


def _notes_section(selected: pd.DataFrame, summary: pd.DataFrame, baseline: str) -> list[str]:
    lines = []
    base = summary[summary["ablation"].map(lambda a: is_baseline(a, baseline))]
    if base.empty or (base["n_seeds"] == 0).any():
        lines.append(f"  Baseline '{baseline}' has no finished seed: every Δ% is n/a.")
    done = selected[selected["status"] == "finished"]
    if "eval/text_alignment_chance" in done and done["eval/text_alignment_chance"].notna().any():
        chance = done["eval/text_alignment_chance"].max()
        lines.append(
            f"  Text alignment chance level: {chance:.3f} (what a caption-blind generator can expect: "
            "the share of the commonest prompt sentence)."
        )
    single = summary.loc[summary["n_seeds"] == 1, "ablation"].tolist()
    if single:
        lines.append(
            f"  One finished seed only (no std, and no inference: a verdict needs 3 seeds): {', '.join(single)}."
        )
    present = [m for m in summary_metrics(summary) if summary[f"{m}_mean"].notna().any()]
    if (note := undirected_note(present)) is not None:
        lines.append(f"  {note}")
    settings = {c: sorted(selected[c].dropna().astype(str).unique()) for c in ("scale", "data") if c in selected}
    for c, vals in settings.items():
        if len(vals) > 1:
            lines.append(f"  Trials mix several {c} values ({', '.join(vals)}): rows may not be comparable.")
    return lines


def render_report(
    exp_dir: str | os.PathLike,
    selected: pd.DataFrame,
    summary: pd.DataFrame,
    baseline: str = "baseline",
    comparisons: pd.DataFrame | None = None,
) -> str:
    """ABLATION_RESULTS_REPORT.txt text from select_trials(), summarize() and comparison_stats() outputs
    (the last computed with t-intervals when not given)."""
    comparisons = comparison_stats(selected, baseline) if comparisons is None else comparisons
    scales = ", ".join(sorted(selected["scale"].dropna().astype(str).unique())) if "scale" in selected else "?"
    parts = [
        "ABLATION RESULTS REPORT",
        "=" * 23,
        f"Experiment: {Path(exp_dir).resolve()}",
        f"Scale: {scales or '?'}    Baseline: {baseline}",
        "",
        "1. TRIALS",
        *_trials_section(selected),
        "",
        "2. RESULTS (mean ± std over finished seeds; Δ% vs the baseline's mean)",
        to_markdown(summary, baseline=baseline),
        *filter(None, [headline_note(selected)]),
        "",
        "3. VERDICTS AGAINST THE BASELINE (paired by seed: mean difference [95 % CI], p, Holm-adjusted p)",
        *_verdict_section(comparisons, summary),
        "",
        "4. REFERENCE: REAL CLIPS ON THE SAME PROMPTS",
        *_reference_section(selected),
        "",
        "5. METRICS WITH NaN VALUES",
        *nan_notes(selected),
        "",
        "6. SAMPLE COUNT",
        *_sample_count_section(selected),
    ]
    notes = _notes_section(selected, summary, baseline)
    return "\n".join(parts + (["", "7. NOTES", *notes] if notes else [])) + "\n"


# --------------------------------------------------------------------------- guidance curve


def guidance_cells(curve: pd.DataFrame, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    """`(header, rows)` of the guidance table from `guidance_curve`: one row per ablation with its headline scale,
    then per scale (increasing) each curve metric's `mean ± std` over seeds (`(n=k)` when fewer seeds than the
    row's most; "—" where the ablation did not list that scale)."""
    scales = sorted(curve["scale"].unique())
    decimals = {m: _decimals(curve[f"{m}_mean"].abs().max(), digits) for m in CURVE_METRICS}
    header = ["Ablation", "Headline scale"] + [
        f"{header_label(f'eval/{m}')} @ {scale_text(s)}" for s in scales for m in CURVE_METRICS
    ]
    rows = []
    for ablation, g in curve.groupby("ablation", sort=False):
        by_scale = g.set_index("scale")
        most = int(max(g[f"{m}_n"].max() for m in CURVE_METRICS))
        head = g.loc[g["headline"].astype(bool), "scale"]
        cells = [str(ablation), scale_text(head.iloc[0]) if len(head) else "?"]
        for s in scales:
            for m in CURVE_METRICS:
                cells.append(_curve_cell(by_scale.loc[s], m, decimals[m], most) if s in by_scale.index else "—")
        rows.append(cells)
    return header, rows


def _curve_cell(row: pd.Series, metric: str, decimals: int, most: int) -> str:
    n = int(row[f"{metric}_n"])
    if n == 0:
        return "n/a"
    text = mean_std_text(row[f"{metric}_mean"], row[f"{metric}_std"], decimals)
    return text if n == most else f"{text} (n={n})"
