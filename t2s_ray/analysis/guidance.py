"""The guidance curve of an experiment: each ablation's curve metrics at every listed guidance scale.

Trials evaluated with `eval.guidance_scale` a list report `eval/guidance/<scale>/<metric>` beside their headline
metrics (see `t2s_ray.guidance`); these pure functions of a selected trials frame average them over seeds and
say at which scale the headline tables were computed. The comparison tables never hold these columns
(`catalog.metric_columns` leaves them out).
"""

from __future__ import annotations

import pandas as pd

from t2s_ray.analysis.catalog import guidance_columns
from t2s_ray.guidance import CURVE_METRICS, HEADLINE_SCALE_KEY, parse_guidance_key, scale_text

CURVE_COLUMNS = ["ablation", "scale", "headline", *(f"{m}_{s}" for m in CURVE_METRICS for s in ("mean", "std", "n"))]
"""Columns of `guidance_curve`: per ablation and scale, each curve metric's mean, std (ddof=1) and count."""


def _finished(selected: pd.DataFrame) -> pd.DataFrame:
    return selected[selected["status"] == "finished"] if "status" in selected else selected


def curve_points(selected: pd.DataFrame) -> pd.DataFrame:
    """One row per finished trial and listed scale: ablation, seed, scale and each curve metric (NaN where the
    trial could not compute it). Empty when no trial reported a curve."""
    done = _finished(selected)
    keys = [(c, parse_guidance_key(c)) for c in guidance_columns(done)]
    keys = [(c, parsed) for c, parsed in keys if parsed is not None]
    rows: dict[tuple, dict] = {}
    for _, r in done.iterrows():
        for column, (scale, metric) in keys:
            if pd.notna(r[column]):  # NaN: not computed (see the metric's status) or not one of this trial's scales
                point = rows.setdefault(
                    (r["ablation"], int(r["seed"]), scale),
                    {"ablation": r["ablation"], "seed": int(r["seed"]), "scale": scale},
                )
                point[metric] = r[column]
    columns = ["ablation", "seed", "scale", *CURVE_METRICS]
    return pd.DataFrame(list(rows.values()), columns=columns)


def headline_scales(selected: pd.DataFrame) -> dict[str, float]:
    """Each ablation's headline guidance scale, for the ablations whose finished trials reported a curve."""
    done = _finished(selected)
    if HEADLINE_SCALE_KEY not in done:
        return {}
    scales = done.dropna(subset=[HEADLINE_SCALE_KEY]).groupby("ablation", sort=False)[HEADLINE_SCALE_KEY].first()
    return {str(a): float(s) for a, s in scales.items()}


def guidance_curve(selected: pd.DataFrame) -> pd.DataFrame:
    """Per ablation (first appearance) and scale (increasing): mean, std and count over finished seeds of each
    curve metric, and whether it is the ablation's headline scale (`CURVE_COLUMNS`)."""
    points = curve_points(selected)
    if points.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    stats = points.groupby(["ablation", "scale"], sort=False)[list(CURVE_METRICS)].agg(["mean", "std", "count"])
    stats.columns = [f"{m}_{'n' if s == 'count' else s}" for m, s in stats.columns]
    stats = stats.reset_index()
    order = {a: i for i, a in enumerate(dict.fromkeys(points["ablation"]))}
    stats = stats.sort_values(["ablation", "scale"], key=lambda c: c.map(order) if c.name == "ablation" else c)
    headline = headline_scales(selected)
    stats["headline"] = [headline.get(a) == s for a, s in zip(stats["ablation"], stats["scale"])]
    return stats[CURVE_COLUMNS].reset_index(drop=True)


def headline_note(selected: pd.DataFrame) -> str | None:
    """Which guidance scale the headline tables are at, when some ablation evaluated a list of scales."""
    scales = headline_scales(selected)
    if not scales:
        return None
    by_scale: dict[float, list[str]] = {}
    for ablation, scale in scales.items():
        by_scale.setdefault(scale, []).append(ablation)
    if len(by_scale) == 1:
        at = f"guidance {scale_text(next(iter(by_scale)))}"
    else:
        at = "guidance " + "; ".join(f"{scale_text(s)} ({', '.join(names)})" for s, names in by_scale.items())
    others = [a for a in dict.fromkeys(_finished(selected)["ablation"]) if a not in scales]
    rest = f"; {', '.join(others)} at their single eval.guidance_scale" if others else ""
    return (
        f"Evaluated at {at} (eval.guidance_scale's first value){rest}; every listed scale: the guidance curve "
        f"(report.html, guidance_curve.csv)."
    )


def missing_curves(selected: pd.DataFrame) -> list[str]:
    """`ablation: reason` for each ablation that evaluated a list of scales but has no curve value (e.g. no
    gloss evaluator outside SynthSign), the reason from its `eval/<metric>_status`."""
    done, plotted = _finished(selected), set(curve_points(selected)["ablation"])
    lines = []
    for ablation in headline_scales(selected):
        if ablation in plotted:
            continue
        rows = done[done["ablation"] == ablation]
        statuses = [f"eval/{m}_status" for m in CURVE_METRICS if f"eval/{m}_status" in rows]
        reasons = list(dict.fromkeys(str(v) for c in statuses for v in rows[c].dropna()))
        lines.append(f"{ablation}: {'; '.join(reasons) or 'no status given'}")
    return lines
