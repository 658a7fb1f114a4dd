"""Experiment dir -> DataFrames -> comparison tables and a text report.

The reading layer opens the trial folders Ray Tune wrote (params.json, result.json,
error.txt) directly, so `t2s-ray analyze` needs neither Ray nor a running cluster.
Everything after it is a pure pandas function of its arguments.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from t2s_ray import stats
from t2s_ray.io import write_text_atomic
from t2s_ray.outputs import CURVES_CSV, FORMATS, REPORT_TXT, TABLE_CSV, TABLE_MD


@dataclass(frozen=True)
class MetricInfo:
    """How one final metric is labelled and compared."""

    label: str
    """Column header in the Markdown table."""
    better: str | None = None
    """"lower", "higher", "one" (a ratio: closer to 1 is better, tested on |log r|), "real" (closer to the
    real clips' value `<metric>_real` is better, tested on |value - real|) or None (not ranked)."""
    delta: bool = False
    """Whether the summary gets a Δ% vs baseline column for it."""
    kind: str = "quality"
    """`quality` or `cost`: the quality table or the cost table, and the Holm family it is tested in."""


# Known final metrics, in display order; any other numeric final key follows, sorted.
METRICS: dict[str, MetricInfo] = {
    "eval/fvd": MetricInfo("FVD", "lower", True),
    "eval/fvd_synthsign": MetricInfo("FVD-SynthSign", "lower", True),
    "eval/fvd_synthsign_real": MetricInfo("FVD-SynthSign real vs real"),
    "eval/lpips": MetricInfo("LPIPS", "lower", True),
    "eval/temporal_consistency": MetricInfo("Temporal cons.", "real", True),
    "eval/temporal_consistency_ssim": MetricInfo("Temporal cons. (SSIM)", "real", True),
    "eval/temporal_consistency_real": MetricInfo("Temporal cons. of real clips"),
    "eval/temporal_consistency_ssim_real": MetricInfo("Temporal cons. (SSIM) of real clips"),
    "eval/gloss_accuracy": MetricInfo("Gloss acc.", "higher", True),
    "eval/gloss_wer": MetricInfo("Gloss WER", "lower", True),
    "eval/motion_ratio": MetricInfo("Motion ratio", "one"),
    "eval/text_alignment": MetricInfo("Text align.", "higher", True),
    "eval/text_alignment_chance": MetricInfo("Text align. chance"),
    "eval/text_alignment_real": MetricInfo("Text align. of real clips"),
    "final_loss": MetricInfo("Final loss", "lower"),
    "val_loss": MetricInfo("Val loss", "lower"),
    "train_time_h": MetricInfo("Train time (h)", "lower", True, "cost"),
    "mem/gpu_peak_gb": MetricInfo("GPU peak (GB)", "lower", True, "cost"),
    "mem/cpu_rss_peak_gb": MetricInfo("CPU RSS peak (GB)", "lower", kind="cost"),
    "eval/inference_ms_per_video": MetricInfo("Inference (ms/video)", "lower", kind="cost"),
    "eval/inference_peak_mem_gb": MetricInfo("Inference mem. (GB)", "lower", kind="cost"),
    "params/total_m": MetricInfo("Params (M)", kind="cost"),
    "params/trainable_m": MetricInfo("Trainable (M)", kind="cost"),
    "params/text_encoder_change": MetricInfo("Encoder change (rel. L2)"),
    "eval/num_videos": MetricInfo("N videos"),
}
ARROWS = {"lower": "↓", "higher": "↑", "one": "→1", "real": "→real"}

# Keys of the final row that are Tune bookkeeping or per-step snapshots, not final metrics.
TUNE_KEYS = frozenset({
    "training_iteration", "trial_id", "timestamp", "time_this_iter_s", "time_total_s",
    "time_since_restore", "iterations_since_restore", "timesteps_total", "episodes_total",
    "timesteps_since_restore", "done", "pid", "hostname", "node_ip", "date", "config",
    "experiment_id", "experiment_tag", "checkpoint_dir_name", "should_checkpoint",
})
STEP_KEYS = frozenset({
    "final", "step", "epoch", "loss", "lr", "samples_per_s", "step_time_ms", "data_time_ms",
    "mem/gpu_allocated_gb", "mem/gpu_reserved_gb", "mem/gpu_util", "mem/cpu_rss_gb",
    "elapsed_s",
})
# Columns of load_trials/select_trials that describe a trial rather than measure it.
META_COLUMNS = frozenset({
    "ablation", "seed", "trial_dir", "status", "trial_id", "last_time", "n_reports", "error",
    "scale", "data", "n_attempts", "other_dirs",
})

EXPERIMENT_DIR_HELP = (
    "An experiment dir is the folder Ray Tune wrote for one sweep (<storage>/<name>/): "
    "it holds tuner.pkl, experiment_state-*.json and one sub-folder per trial with "
    "params.json and result.json."
)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Attempt:
    folder: Path
    params: dict
    rows: list[dict]
    error: str | None


def _trial_folders(exp_dir: Path) -> list[Path]:
    """Sub-folders holding params.json; raises when there are none."""
    if not exp_dir.is_dir():
        what = ("is a file, expected an experiment folder written by t2s-ray sweep" if exp_dir.exists()
                else "does not exist")
        raise ValueError(f"Experiment dir {exp_dir} {what}. {EXPERIMENT_DIR_HELP}")
    folders = sorted(p for p in exp_dir.iterdir() if (p / "params.json").is_file())
    if folders:
        return folders
    nested = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and _trial_like(p))
    hint = f" It contains experiment dirs: {', '.join(nested)}; pass one of them." if nested else ""
    raise ValueError(f"{exp_dir} holds no trial folders (none has params.json).{hint} "
                     f"{EXPERIMENT_DIR_HELP}")


def _trial_like(folder: Path) -> bool:
    return any((p / "params.json").is_file() for p in folder.iterdir() if p.is_dir())


def _read_rows(path: Path) -> list[dict]:
    """JSON lines of result.json; a truncated last line (a killed trial) is dropped."""
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # the writer died mid-line
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON ({err}); only the last "
                             "line of result.json may be truncated") from err
    return rows


def _read_error(path: Path) -> str | None:
    """Last non-empty line of error.txt (the exception message), or None."""
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else "error.txt is empty"


def _read_attempt(folder: Path) -> _Attempt:
    try:
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / 'params.json'} is not valid JSON ({err})") from err
    missing = {"ablation", "seed"} - set(params)
    if missing:
        raise ValueError(f"{folder / 'params.json'} lacks {sorted(missing)}: expected the "
                         "param_space of `t2s-ray sweep` ({'ablation': ..., 'seed': ...}).")
    return _Attempt(folder, params, _read_rows(folder / "result.json"),
                    _read_error(folder / "error.txt"))


def _scan(exp_dir: str | os.PathLike) -> list[_Attempt]:
    attempts = [_read_attempt(f) for f in _trial_folders(Path(exp_dir))]
    # Tune's trial ids end in the grid counter: sorting by them restores the sweep's order.
    ids = [a.rows[-1].get("trial_id") if a.rows else None for a in attempts]
    order = sorted(range(len(attempts)), key=lambda i: (ids[i] is None, str(ids[i])))
    return [attempts[i] for i in order]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _final_values(row: dict) -> dict:
    """Numeric final metrics and their `*_status` strings from the final report."""
    values = {}
    for key, value in row.items():
        if key in TUNE_KEYS or key in STEP_KEYS or key in META_COLUMNS or key.startswith("node/"):
            continue  # node/* says where a trial ran, not how well
        if _is_number(value):
            values[key] = float(value)
        elif key.endswith("_status") and isinstance(value, str):
            values[key] = value
    return values


def _trial_record(att: _Attempt) -> dict:
    final = next((r for r in reversed(att.rows) if r.get("final")), None)
    status = "finished" if final else "errored" if att.error is not None else "unfinished"
    last = att.rows[-1] if att.rows else {}
    record = {
        "ablation": str(att.params["ablation"]), "seed": int(att.params["seed"]),
        "trial_dir": str(att.folder), "status": status, "trial_id": last.get("trial_id"),
        "last_time": float(last.get("timestamp", att.folder.stat().st_mtime)),
        "n_reports": len(att.rows), "error": att.error,
        "scale": att.params.get("scale"), "data": att.params.get("data"),
    }
    return record | (_final_values(final) if final else {})


def _trials_frame(attempts: list[_Attempt]) -> pd.DataFrame:
    df = pd.DataFrame([_trial_record(a) for a in attempts])
    statuses = sorted(c for c in df.columns if c.endswith("_status"))
    meta = [c for c in df.columns if c in META_COLUMNS]
    return df[meta + metric_columns(df) + statuses].reset_index(drop=True)


def _history_frame(attempts: list[_Attempt]) -> pd.DataFrame:
    records = [
        {"ablation": str(a.params["ablation"]), "seed": int(a.params["seed"]),
         "trial_dir": str(a.folder)}
        | {k: v for k, v in row.items() if _is_number(v) or isinstance(v, str)}
        for a in attempts for row in a.rows if not row.get("final")
    ]
    return pd.DataFrame(records, columns=None if records else ["ablation", "seed", "trial_dir"])


def load_trials(exp_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per trial folder (attempt) of an experiment dir.

    Columns: ablation, seed, trial_dir, status ("finished" when a final report exists,
    "errored" when error.txt exists without one, else "unfinished"), trial_id, last_time,
    n_reports, error, scale, data, then every numeric final metric and `*_status` string.
    Raises ValueError when exp_dir is missing or holds no trial folders.
    """
    return _trials_frame(_scan(exp_dir))


def load_history(exp_dir: str | os.PathLike) -> pd.DataFrame:
    """Every non-final report of every attempt, with ablation, seed and trial_dir columns."""
    return _history_frame(_scan(exp_dir))


# --------------------------------------------------------------------------- pure tables


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric metric columns of a trials frame: known ones in display order, then sorted."""
    numeric = [
        c for c in df.columns
        if c not in META_COLUMNS and not c.endswith("_status")
        and pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
    ]
    known = [m for m in METRICS if m in numeric]
    return known + sorted(set(numeric) - set(known))


def metric_info(metric: str) -> MetricInfo:
    """Display/comparison info of a metric; unknown `eval/*` metrics count as quality (Δ%)."""
    return METRICS.get(metric, MetricInfo(metric, None, metric.startswith("eval/")))


def _best_attempt(group: pd.DataFrame) -> pd.Series:
    finished = group[group["status"] == "finished"]
    pool = finished if len(finished) else group
    if "last_time" in pool and pool["last_time"].notna().any():
        return pool.loc[pool["last_time"].idxmax()]
    return pool.iloc[-1]


def select_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (ablation, seed), never per folder, in order of first appearance.

    Keeps the finished attempt (the newest by last_time if several); an (ablation, seed)
    with no finished attempt keeps its newest attempt, so errored/unfinished trials stay
    visible through `status`. Adds n_attempts and other_dirs ("; "-joined folders not kept).
    """
    rows = []
    for _, group in trials.groupby(["ablation", "seed"], sort=False):
        best = _best_attempt(group).copy()
        others = [d for d in group["trial_dir"] if d != best["trial_dir"]]
        best["n_attempts"] = len(group)
        best["other_dirs"] = "; ".join(map(str, others))
        rows.append(best)
    return pd.DataFrame(rows, columns=[*trials.columns, "n_attempts", "other_dirs"]
                        ).reset_index(drop=True)


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
        raise ValueError(f"Several rows for (ablation, seed) {pairs}: pass the trials through "
                         "select_trials() first (a restarted trial has several folders).")


def summarize(trials: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """One row per ablation (baseline first, then first appearance) with per-metric statistics.

    `trials` has one row per (ablation, seed) (see select_trials); when it has a `status`
    column only finished rows enter the statistics. Columns: ablation, n_seeds (finished),
    n_incomplete (seeds without a finished attempt), then per metric `<m>_mean`, `<m>_std`
    (ddof=1, NaN for one value), `<m>_n` (non-NaN values) and, for quality/cost metrics,
    `<m>_delta_pct` vs the baseline's mean (NaN when the baseline is missing, zero or NaN).
    """
    _check_unique(trials)
    metrics = metric_columns(trials)
    done = trials[trials["status"] == "finished"] if "status" in trials else trials
    base = done[done["ablation"] == baseline]
    rows = []
    for ablation in _ablation_order(trials["ablation"], baseline):
        vals = done[done["ablation"] == ablation]
        row = {"ablation": ablation, "n_seeds": len(vals),
               "n_incomplete": int((trials["ablation"] == ablation).sum()) - len(vals)}
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


def tested_values(metric: str, rows: pd.DataFrame) -> pd.Series:
    """What the statistics compare for `metric` in `rows`: the values; |log r| for a ratio whose ideal
    is 1; |value - real clips' value| for a metric whose reference is the real clips (NaN without one)."""
    values, better = rows[metric], metric_info(metric).better
    if better == "one":
        return values.where(values > 0).map(lambda r: abs(math.log(r)))
    if better == "real":
        real = f"{metric}_real"
        return (values - rows[real]).abs() if real in rows else values * math.nan
    return values


def comparison_stats(selected: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """Every ablation vs the baseline on every ranked metric, paired by seed (long format).

    Columns: ablation, metric, kind, n (pairs), dropped (unpaired seeds), mean, std, baseline_mean,
    diff (mean per-seed difference; for a ratio metric the difference of |log r|), ci_low,
    ci_high, delta_pct and its interval (quality metrics that have a Δ%), p, test, p_holm (Holm
    within the experiment's quality metrics, and separately within its cost metrics) and verdict.
    Finished trials only; a metric NaN in every finished trial is left out.
    """
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    base = done[done["ablation"] == baseline]
    cells: list[tuple[dict, stats.Paired]] = []
    for m in metric_columns(done):
        info = metric_info(m)
        if info.better is None or done[m].isna().all():
            continue
        ref = stats.by_seed(base["seed"], tested_values(m, base))
        for ablation in _ablation_order(done["ablation"], baseline):
            if ablation == baseline:
                continue
            arm = done[done["ablation"] == ablation]
            result = stats.paired(stats.by_seed(arm["seed"], tested_values(m, arm)), ref)
            row = {"ablation": ablation, "metric": m, "kind": info.kind, "mean": arm[m].mean(),
                   "std": arm[m].std(), "baseline_mean": base[m].mean()}
            cells.append((row, result))
    rows = []
    for kind in ("quality", "cost"):
        family = [(row, r) for row, r in cells if row["kind"] == kind]
        for (row, _), r in zip(family, stats.with_holm([r for _, r in family])):
            info = metric_info(row["metric"])
            ref_mean = row["baseline_mean"] if info.better not in ("one", "real") else math.nan
            delta = stats.delta_pct(r, ref_mean) if info.delta else (math.nan,) * 3
            rows.append(row | r.to_dict() | {
                "diff": r.mean_diff, "delta_pct": delta[0], "delta_ci_low": delta[1], "delta_ci_high": delta[2],
                "verdict": stats.verdict(r, higher_is_better=info.better == "higher")})  # else distance: lower
    columns = ["ablation", "metric", "kind", "n", "dropped", "mean", "std", "baseline_mean", "diff", "ci_low",
               "ci_high", "delta_pct", "delta_ci_low", "delta_ci_high", "p", "test", "p_holm", "verdict"]
    return pd.DataFrame(rows, columns=columns)


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


# --------------------------------------------------------------------------- formatting


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
    if row["ablation"] == baseline:
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


MARKS = {stats.BETTER: "✓", stats.WORSE: "✗", stats.NO_DIFFERENCE: "≈", stats.TOO_FEW: "·"}
LEGEND = ("Δ vs baseline: paired by seed, mean difference [95 % CI] (in % of the baseline mean where a "
          "metric has one; |log r| for ratios), then ✓ better, ✗ worse, ≈ no detectable difference, "
          "· fewer than 3 seeds (no inference); p-values in comparison_stats.csv.")


def _verdict_cell(row: pd.Series, m: str, baseline: str, comparisons: pd.DataFrame) -> str:
    if row["ablation"] == baseline:
        return "—"
    c = comparisons[(comparisons["ablation"] == row["ablation"]) & (comparisons["metric"] == m)]
    if c.empty:
        return "n/a"
    c = c.iloc[0]
    pct = math.isfinite(c["delta_pct"])
    d, lo, hi = (c["delta_pct"], c["delta_ci_low"], c["delta_ci_high"]) if pct else (c["diff"], c["ci_low"],
                                                                                   c["ci_high"])
    if not math.isfinite(d):
        return f"n/a {MARKS[c['verdict']]}"
    fmt = (lambda x: f"{x:+.1f}%") if pct else (lambda x: f"{x:+.3g}")
    interval = f" [{fmt(lo)}, {fmt(hi)}]" if math.isfinite(lo) else ""
    return f"{fmt(d)}{interval} {MARKS[c['verdict']]}".replace("-0.0%", "+0.0%")


def to_markdown(summary: pd.DataFrame, metrics: list[str] | None = None,
                baseline: str = "baseline", digits: int = 4, comparisons: pd.DataFrame | None = None) -> str:
    """Paper-style pipe table: one row per ablation, `mean ± std` per metric, Δ columns.

    A column shows `digits` significant digits of its largest mean, with the same decimals
    in every row (see column_decimals); a metric with fewer values than finished seeds
    shows `(n=k/N)`; arrows say which direction is better. Without `comparisons` a Δ% column
    (vs the baseline's mean) follows each metric that has one; with them (`comparison_stats`)
    a "Δ vs baseline" column follows each ranked metric: the paired difference, its 95 % CI
    and the verdict mark (see LEGEND).
    """
    metrics = summary_metrics(summary) if metrics is None else metrics
    decimals = {m: column_decimals(summary, m, digits) for m in metrics}

    def has_delta(m: str) -> bool:
        if comparisons is None:
            return f"{m}_delta_pct" in summary
        return bool((comparisons["metric"] == m).any())

    header, align = ["Ablation", "Seeds"], [":---", "---:"]
    for m in metrics:
        header.append(header_label(m))
        align.append("---:")
        if has_delta(m):
            header.append("Δ%" if comparisons is None else "Δ vs baseline")
            align.append("---:")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for _, row in summary.iterrows():
        cells = [_md_escape(row["ablation"]), _seeds_cell(row)]
        for m in metrics:
            cells.append(_cell(row, m, decimals[m]))
            if has_delta(m):
                cells.append(_delta_cell(row, m, baseline) if comparisons is None
                             else _verdict_cell(row, m, baseline, comparisons))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


QUALITY_COLUMNS = 4
"""Quality metrics in the Markdown quality table (each with its Δ column: 2 + 2 x 4 = 10 columns)."""


def comparison_markdown(selected: pd.DataFrame, summary: pd.DataFrame, comparisons: pd.DataFrame,
                        baseline: str = "baseline") -> str:
    """The quality table (headline quality metrics with paired Δ, CI and verdict), the cost table,
    and the metrics left out: those with values (in the CSVs) and the all-NaN ones with their reason."""
    present = [m for m in summary_metrics(summary) if summary[f"{m}_mean"].notna().any()]
    quality = [m for m in HEADLINE if m in present and metric_info(m).kind == "quality"]
    more = [m for m in present if metric_info(m).kind == "quality" and m not in quality[:QUALITY_COLUMNS]
            and metric_info(m).better is not None]
    cost = [m for m in COST if m in present]
    parts = ["Quality", "", to_markdown(summary, quality[:QUALITY_COLUMNS], baseline, comparisons=comparisons), "",
             LEGEND]
    if more:
        parts += ["", "More quality metrics (comparison_table.csv, comparison_stats.csv): " + ", ".join(more)]
    if cost:
        parts += ["", "Cost", "", to_markdown(summary, cost, baseline, comparisons=comparisons.iloc[0:0])]
    missing = all_nan_notes(selected)
    if missing:
        parts += ["", "Not computed (NaN in every finished trial):", *missing]
    return "\n".join(parts)


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
    lines = [f"(ablation, seed) pairs: {len(selected)}: finished {counts.get('finished', 0)}, "
             f"errored {counts.get('errored', 0)}, unfinished {counts.get('unfinished', 0)}"]
    for _, r in selected[selected["status"] != "finished"].iterrows():
        reason = f"\n      {r['error']}" if isinstance(r.get("error"), str) else ""
        lines.append(f"  {r['status'].upper()}: ({r['ablation']}, seed {r['seed']}) "
                     f"in {r['trial_dir']}{reason}")
    for _, r in selected[selected["n_attempts"] > 1].iterrows():
        lines.append(f"  RESTARTED: ({r['ablation']}, seed {r['seed']}) had {r['n_attempts']} "
                     f"attempts; kept {r['trial_dir']}\n      other attempts: {r['other_dirs']}")
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
        means.columns = [m, f"{m}_real"][:len(means.columns)]
        key = {"lower": means[m], "higher": -means[m]}.get(info.better, tested_values(m, means))
        key = key.dropna().sort_values(kind="stable")
        tested = {"one": " (tested on |log r|)",
                  "real": " (tested on |value − real clips' value|)"}.get(info.better, "")
        lines.append(f"  {header_label(m)} [{m}]{tested}: best by mean {key.index[0] if len(key) else 'n/a'}")
        for _, c in cells.iterrows():
            dropped = f", {c['dropped']} unpaired seed(s) dropped" if c["dropped"] else ""
            lines.append(f"    {c['ablation']} − baseline: {_num(c['diff'])} [{_num(c['ci_low'])}, "
                         f"{_num(c['ci_high'])}], p {_num(c['p'])} ({c['test']}), Holm p {_num(c['p_holm'])}, "
                         f"n {c['n']}{dropped} → {c['verdict']}")
    return lines


REFERENCES = (
    ("eval/fvd_synthsign_real", "FVD-SynthSign between real val and real test clips (the floor at this N)"),
    ("eval/text_alignment_real", "text alignment of the real clips as the gloss evaluator reads them (the ceiling)"),
    ("eval/text_alignment_chance", "text alignment a caption-blind generator can expect (chance)"),
    ("eval/temporal_consistency_real", "temporal consistency of the real clips (the target)"),
    ("eval/temporal_consistency_ssim_real", "temporal consistency (SSIM) of the real clips (the target)"),
)


def _reference_section(selected: pd.DataFrame) -> list[str]:
    """What real clips score on the same prompts: the floors, ceilings and targets of the metrics."""
    done = selected[selected["status"] == "finished"] if "status" in selected else selected
    lines = [f"  {what}: {done[key].mean():.4g}" for key, what in REFERENCES
             if key in done and done[key].notna().any()]
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
        reasons = (missing[status] if status in missing else pd.Series(index=missing.index, dtype=object))
        lines.append(f"  {m}: NaN in {len(missing)}/{len(done)} finished trials")
        for reason, n in reasons.astype(object).fillna("no status given").value_counts(sort=False).items():
            lines.append(f"      {n}x {reason}")
    return lines or ["  none: every finished trial reported every metric"]


def _sample_count_section(selected: pd.DataFrame) -> list[str]:
    lines = ["  Fréchet distances (FVD and variants) are biased by the number of generated",
             "  videos: compare them only between rows with equal sample count (eval/num_videos)."]
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
    base = summary[summary["ablation"] == baseline]
    if base.empty or base["n_seeds"].iloc[0] == 0:
        lines.append(f"  Baseline '{baseline}' has no finished seed: every Δ% is n/a.")
    done = selected[selected["status"] == "finished"]
    if "eval/text_alignment_chance" in done and done["eval/text_alignment_chance"].notna().any():
        chance = done["eval/text_alignment_chance"].max()
        lines.append(f"  Text alignment chance level: {chance:.3f} (what a caption-blind generator can expect: "
                     "the share of the commonest prompt sentence).")
    single = summary.loc[summary["n_seeds"] == 1, "ablation"].tolist()
    if single:
        lines.append(f"  One finished seed only (no std, and no inference: a verdict needs 3 seeds): "
                     f"{', '.join(single)}.")
    settings = {c: sorted(selected[c].dropna().astype(str).unique())
                for c in ("scale", "data") if c in selected}
    for c, vals in settings.items():
        if len(vals) > 1:
            lines.append(f"  Trials mix several {c} values ({', '.join(vals)}): rows may not "
                         "be comparable.")
    return lines


def render_report(exp_dir: str | os.PathLike, selected: pd.DataFrame, summary: pd.DataFrame,
                  baseline: str = "baseline") -> str:
    """ABLATION_RESULTS_REPORT.txt text from select_trials() and summarize() outputs."""
    scales = ", ".join(sorted(selected["scale"].dropna().astype(str).unique())) \
        if "scale" in selected else "?"
    parts = [
        "ABLATION RESULTS REPORT", "=" * 23, f"Experiment: {Path(exp_dir).resolve()}",
        f"Scale: {scales or '?'}    Baseline: {baseline}", "",
        "1. TRIALS", *_trials_section(selected), "",
        "2. RESULTS (mean ± std over finished seeds; Δ% vs the baseline's mean)",
        to_markdown(summary, baseline=baseline), "",
        "3. VERDICTS AGAINST THE BASELINE (paired by seed: mean difference [95 % CI], p, Holm-adjusted p)",
        *_verdict_section(comparison_stats(selected, baseline), summary), "",
        "4. REFERENCE: REAL CLIPS ON THE SAME PROMPTS", *_reference_section(selected), "",
        "5. METRICS WITH NaN VALUES", *nan_notes(selected), "",
        "6. SAMPLE COUNT", *_sample_count_section(selected),
    ]
    notes = _notes_section(selected, summary, baseline)
    return "\n".join(parts + (["", "7. NOTES", *notes] if notes else [])) + "\n"


# --------------------------------------------------------------------------- writing

HEADLINE = ("eval/fvd", "eval/fvd_synthsign", "eval/text_alignment", "eval/lpips", "eval/temporal_consistency",
            "eval/temporal_consistency_ssim", "eval/motion_ratio", "val_loss", "train_time_h", "mem/gpu_peak_gb",
            "params/trainable_m")
"""The metrics of the plots and, in this order, the candidates for the quality table."""
COST = ("train_time_h", "mem/gpu_peak_gb", "eval/inference_ms_per_video", "eval/inference_peak_mem_gb",
        "params/total_m", "params/trainable_m")
"""The columns of the cost table."""
COMPARISON_STATS_CSV = "comparison_stats.csv"


def headline_markdown(exp_dir: str | os.PathLike, baseline: str = "baseline") -> str:
    """The quality and cost tables for the terminal (the files hold every metric)."""
    selected = select_trials(_trials_frame(_scan(exp_dir)))
    summary = summarize(selected, baseline)
    return comparison_markdown(selected, summary, comparison_stats(selected, baseline), baseline)


def write_outputs(exp_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                  fmt: str = "both", baseline: str = "baseline") -> dict[str, Path]:
    """Analyze an experiment dir and write its tables and report into out_dir (default exp_dir).

    Writes comparison_table.csv (fmt csv/both), comparison_table.md (fmt md/both),
    and comparison_stats.csv (fmt csv/both), ABLATION_RESULTS_REPORT.txt, training_curves.csv and
    the figures training_curves.png and metrics.png, each atomically. Returns {"csv", "stats", "md",
    "report", "curves", "curves_png", "metrics_png"} -> path for the files written.
    """
    fmt = getattr(fmt, "value", fmt)  # a str Enum from the CLI
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    attempts = _scan(exp_dir)
    selected = select_trials(_trials_frame(attempts))
    summary = summarize(selected, baseline)
    out = Path(exp_dir if out_dir is None else out_dir)
    out.mkdir(parents=True, exist_ok=True)
    comparisons = comparison_stats(selected, baseline)
    texts = {}
    if fmt in ("csv", "both"):
        texts["csv"] = (TABLE_CSV, to_csv(summary))
        texts["stats"] = (COMPARISON_STATS_CSV, comparisons.to_csv(index=False))
    if fmt in ("md", "both"):
        texts["md"] = (TABLE_MD, comparison_markdown(selected, summary, comparisons, baseline) + "\n")
    texts["report"] = (REPORT_TXT, render_report(exp_dir, selected, summary, baseline))
    curves = training_curves(_history_frame(attempts))
    texts["curves"] = (CURVES_CSV, curves.to_csv(index=False))
    paths = {key: write_text_atomic(out / name, text) for key, (name, text) in texts.items()}
    return {**paths, **_write_plots(curves, summary, out)}


def _write_plots(curves: pd.DataFrame, summary: pd.DataFrame, out: Path) -> dict[str, Path]:
    """training_curves.png and metrics.png (each only when there is something to draw)."""
    from t2s_ray.plots import plot_metrics, plot_training_curves

    labels = {m: header_label(m) for m in HEADLINE}
    plots = {"curves_png": plot_training_curves(curves, out / "training_curves.png"),
             "metrics_png": plot_metrics(summary, list(HEADLINE), labels, out / "metrics.png")}
    return {k: v for k, v in plots.items() if v is not None}
