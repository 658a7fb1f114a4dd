"""Experiment dir -> DataFrames -> comparison tables and a text report.

The reading layer (`read`) opens the trial folders Ray Tune wrote (params.json, result.json,
error.txt) directly, so `t2s-ray analyze` needs neither Ray nor a running cluster. The rest are
pure pandas functions of their arguments: the metric catalogue (`catalog`), the statistics
tables (`tables`), the guidance curve (`guidance`), their formatting and the text report (`render`);
`write` writes the files.
Each module imports only those before it in that order. The package exports what its callers use;
the rest is imported from the module that defines it.

The exports load on first use (PEP 562): `t2s-ray sweep` imports the reading layer to resume, and importing
the whole package there cost its driver ~0.5 s of scipy before Ray could start.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from t2s_ray import stats
    from t2s_ray.analysis.catalog import metric_columns
    from t2s_ray.analysis.guidance import guidance_curve
    from t2s_ray.analysis.read import load_history, load_trials, select_trials
    from t2s_ray.analysis.render import comparison_markdown, render_report, to_markdown
    from t2s_ray.analysis.tables import comparison_stats, summarize, summary_metrics, training_curves
    from t2s_ray.analysis.write import headline_markdown, parse_effect, seeds_needed, write_outputs
    from t2s_ray.outputs import COMPARISON_STATS_CSV, CURVES_CSV, FORMATS, REPORT_TXT, TABLE_CSV, TABLE_MD

_SOURCES = {
    "stats": "t2s_ray",
    "metric_columns": "t2s_ray.analysis.catalog",
    "guidance_curve": "t2s_ray.analysis.guidance",
    **dict.fromkeys(("load_history", "load_trials", "select_trials"), "t2s_ray.analysis.read"),
    **dict.fromkeys(("comparison_markdown", "render_report", "to_markdown"), "t2s_ray.analysis.render"),
    **dict.fromkeys(("comparison_stats", "summarize", "summary_metrics", "training_curves"), "t2s_ray.analysis.tables"),
    **dict.fromkeys(("headline_markdown", "parse_effect", "seeds_needed", "write_outputs"), "t2s_ray.analysis.write"),
    **dict.fromkeys(
        ("COMPARISON_STATS_CSV", "CURVES_CSV", "FORMATS", "REPORT_TXT", "TABLE_CSV", "TABLE_MD"), "t2s_ray.outputs"
    ),
}
"""Each export -> the module that defines it."""


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_SOURCES[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})


__all__ = [
    "COMPARISON_STATS_CSV",
    "CURVES_CSV",
    "FORMATS",
    "REPORT_TXT",
    "TABLE_CSV",
    "TABLE_MD",
    "comparison_markdown",
    "comparison_stats",
    "guidance_curve",
    "headline_markdown",
    "load_history",
    "load_trials",
    "metric_columns",
    "parse_effect",
    "render_report",
    "seeds_needed",
    "select_trials",
    "stats",
    "summarize",
    "summary_metrics",
    "to_markdown",
    "training_curves",
    "write_outputs",
]
