"""Statistics tables: pure pandas functions of a selected trials frame or a history frame."""

from __future__ import annotations

import functools
import math

import pandas as pd

from t2s_ray import stats
from t2s_ray.analysis.catalog import arm_primary, is_loss, metric_columns, metric_info, no_information, tested_values
from t2s_ray.outputs import GRID_JOIN


def _ablation_order(ablations: pd.Series, baseline: str) -> list[str]:
    order = list(dict.fromkeys(ablations))
    return ([baseline] + [a for a in order if a != baseline]) if baseline in order else order


def delta_pct(mean: float, base: float) -> float:
    """100·(mean − base)/|base|; NaN when base is NaN or zero."""
    if base is None or math.isnan(base) or base == 0:
        return math.nan
    return 100.0 * (mean - base) / abs(base)


def _check_unique(trials: pd.DataFrame) -> None:
    dup = trials[trials.duplicated(["ablation", "seed"], keep=False)]
    if len(dup):
        pairs = sorted(set(zip(dup["ablation"], dup["seed"])))
        raise ValueError(
            f"Several rows for (ablation, seed) {pairs}: pass the trials through "
            "select_trials() first (a restarted trial has several folders)."
        )


def by_grid_point(fn):
    """`fn(trials, baseline, ...)` once per `--grid` point of `trials` (its `grid` column), each against the
    baseline at that point, the frames concatenated with a leading `grid` column; `fn` itself without grid."""

    @functools.wraps(fn)
    def per_point(trials: pd.DataFrame, baseline: str = "baseline", *args, **kwargs) -> pd.DataFrame:
        if "grid" not in trials or not trials["grid"].notna().any():
            return fn(trials, baseline, *args, **kwargs)
        parts = []
        for point, sub in trials.groupby("grid", sort=False):
            part = fn(sub, baseline + GRID_JOIN + point, *args, **kwargs)
            parts.append(part.assign(grid=point)[["grid", *part.columns]])
        return pd.concat(parts, ignore_index=True)

    return per_point


@by_grid_point
def summarize(trials: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """One row per ablation (baseline first, then first appearance) with per-metric statistics.

    `trials` has one row per (ablation, seed) (see select_trials); when it has a `status`
    column only finished rows enter the statistics. Columns: ablation, n_seeds (finished),
    n_incomplete (seeds without a finished attempt), trained_with (when `trials` has it), then per
    metric `<m>_mean`, `<m>_std` (ddof=1, NaN for one value), `<m>_n` (non-NaN values) and, for quality/cost metrics,
    `<m>_delta_pct` vs the baseline's mean (NaN when the baseline is missing, zero or NaN).
    """
    _check_unique(trials)
    metrics = metric_columns(trials)
    done = trials[trials["status"] == "finished"] if "status" in trials else trials
    base = done[done["ablation"] == baseline]
    rows = []
    for ablation in _ablation_order(trials["ablation"], baseline):
        vals = done[done["ablation"] == ablation]
        row = {
            "ablation": ablation,
            "n_seeds": len(vals),
            "n_incomplete": int((trials["ablation"] == ablation).sum()) - len(vals),
        }
        if "trained_with" in trials:  # the ablation whose training run produced these weights
            row["trained_with"] = ", ".join(
                dict.fromkeys(trials.loc[trials["ablation"] == ablation, "trained_with"].dropna().astype(str))
            )
        for m in metrics:
            col = vals[m]
            row |= {f"{m}_mean": col.mean(), f"{m}_std": col.std(), f"{m}_n": int(col.count())}
            if metric_info(m).delta:
                row[f"{m}_delta_pct"] = delta_pct(col.mean(), base[m].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def summary_metrics(summary: pd.DataFrame) -> list[str]:
    """The metrics a summary frame holds, in its column order."""
    return [c.removesuffix("_mean") for c in summary.columns if c.endswith("_mean")]


@by_grid_point
def comparison_stats(selected: pd.DataFrame, baseline: str = "baseline", interval: str = "t") -> pd.DataFrame:
    """Every ablation vs the baseline on every ranked metric, paired by seed (long format); in a `--grid` sweep,
    every arm vs the baseline at the same grid point (Holm within each point).

    Columns: ablation, metric, kind, primary (the arm's question is decided on it), family (`primary`,
    `secondary`: exploratory, `cost`, or `loss`: compared, no verdict), n (pairs), dropped (unpaired seeds),
    mean, std, baseline_mean, diff (mean per-seed difference; for a ratio metric the difference of |log r|),
    ci_low, ci_high, delta_pct and its interval (quality metrics that have a Δ%), p, test, p_holm (Holm within
    the family), sd_diff, alpha (0.05 / the family's size), mde (the smallest |diff| found with 80 % power at
    this n, sd_diff and alpha) and verdict. Finished trials only; a metric NaN in every finished trial is left out,
    and so is one that carries no information (`catalog.no_information`): it would only take a place in a Holm
    family.
    """
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    base = done[done["ablation"] == baseline]
    cells: list[tuple[dict, stats.Paired]] = []
    uninformative = no_information(done)
    for m in metric_columns(done):
        info = metric_info(m)
        if info.better is None or done[m].isna().all() or m in uninformative:
            continue
        ref = stats.by_seed(base["seed"], tested_values(m, base))
        for ablation in _ablation_order(done["ablation"], baseline):
            if ablation == baseline:
                continue
            arm = done[done["ablation"] == ablation]
            declared = arm["primary"].dropna().iloc[0] if "primary" in arm and arm["primary"].notna().any() else None
            primary = m in arm_primary(declared, done)
            family = "loss" if is_loss(m) else "cost" if info.kind == "cost" else "primary" if primary else "secondary"
            result = stats.paired(stats.by_seed(arm["seed"], tested_values(m, arm)), ref, interval=interval)
            row = {
                "ablation": ablation,
                "metric": m,
                "kind": info.kind,
                "primary": primary,
                "family": family,
                "mean": arm[m].mean(),
                "std": arm[m].std(),
                "baseline_mean": base[m].mean(),
            }
            cells.append((row, result))
    rows = []
    for family in FAMILIES:
        members = [(row, r) for row, r in cells if row["family"] == family]
        adjusted = stats.with_holm([r for _, r in members]) if family != "loss" else [r for _, r in members]
        alpha = stats.ALPHA / max(1, len(members))  # Holm's first step: what the MDE is sized at
        for (row, _), r in zip(members, adjusted):
            info = metric_info(row["metric"])
            ref_mean = row["baseline_mean"] if info.better not in ("one", "real") else math.nan
            delta = stats.delta_pct(r, ref_mean) if info.delta else (math.nan,) * 3
            verdict = stats.verdict(r, higher_is_better=info.better == "higher")  # else distance: lower
            if family == "loss":
                verdict = stats.LOSS
            elif family == "secondary" and verdict in (stats.BETTER, stats.WORSE):
                verdict += stats.EXPLORATORY
            rows.append(
                row
                | r.to_dict()
                | {
                    "diff": r.mean_diff,
                    "delta_pct": delta[0],
                    "delta_ci_low": delta[1],
                    "delta_ci_high": delta[2],
                    "alpha": alpha,
                    "mde": stats.mde(r, alpha=alpha) if family != "loss" else math.nan,
                    "verdict": verdict,
                }
            )
    columns = [
        "ablation",
        "metric",
        "kind",
        "primary",
        "family",
        "n",
        "dropped",
        "mean",
        "std",
        "baseline_mean",
        "diff",
        "ci_low",
        "ci_high",
        "delta_pct",
        "delta_ci_low",
        "delta_ci_high",
        "p",
        "test",
        "p_holm",
        "sd_diff",
        "alpha",
        "mde",
        "verdict",
    ]
    return pd.DataFrame(rows, columns=columns)


FAMILIES = ("primary", "secondary", "cost", "loss")
"""The Holm families of `comparison_stats`, each corrected on its own (a loss gets no verdict)."""


def training_curves(history: pd.DataFrame, metric: str = "loss") -> pd.DataFrame:
    """`metric` by step per ablation: mean, std and count over seeds.

    Where attempts of one (ablation, seed) overlap (a restart rolled back), the newest
    report of each step wins (by Tune's `timestamp`).
    """
    columns = ["ablation", "step", f"{metric}_mean", f"{metric}_std", "n_seeds"]
    if history.empty or metric not in history or "step" not in history:
        return pd.DataFrame(columns=columns)
    h = history.dropna(subset=[metric, "step"])
    if "timestamp" in h:
        h = h.sort_values("timestamp", kind="stable")
    h = h.drop_duplicates(["ablation", "seed", "step"], keep="last")
    stats = h.groupby(["ablation", "step"])[metric].agg(["mean", "std", "count"]).reset_index()
    stats.columns = columns
    order = {a: i for i, a in enumerate(dict.fromkeys(history["ablation"]))}
    stats = stats.assign(_order=stats["ablation"].map(order))
    return stats.sort_values(["_order", "step"]).drop(columns="_order").reset_index(drop=True)
