"""Experiment dir -> DataFrames -> comparison tables and a text report.

The reading layer (`read`) opens the trial folders Ray Tune wrote (params.json, result.json,
error.txt) directly, so `t2s-ray analyze` needs neither Ray nor a running cluster. The rest are
pure pandas functions of their arguments: the metric catalogue (`catalog`), the statistics
tables (`tables`), the guidance curve (`guidance`), their formatting and the text report (`render`);
`write` writes the files.
Each module imports only those before it in that order.
"""

from t2s_ray import stats
from t2s_ray.analysis.catalog import (
    ARROWS,
    COST,
    HEADLINE,
    META_COLUMNS,
    METRICS,
    REFERENCES,
    MetricInfo,
    metric_columns,
    metric_info,
    tested_values,
)
from t2s_ray.analysis.guidance import guidance_curve, headline_note
from t2s_ray.analysis.read import (
    EXPERIMENT_DIR_HELP,
    STEP_KEYS,
    TUNE_KEYS,
    load_history,
    load_trials,
    select_trials,
)
from t2s_ray.analysis.render import (
    LEGEND,
    MARKS,
    QUALITY_COLUMNS,
    all_nan_notes,
    column_decimals,
    comparison_markdown,
    header_label,
    mean_std_text,
    nan_notes,
    render_report,
    to_csv,
    to_markdown,
)
from t2s_ray.analysis.tables import (
    comparison_stats,
    delta_pct,
    summarize,
    summary_metrics,
    training_curves,
)
from t2s_ray.analysis.write import headline_markdown, parse_effect, seeds_needed, write_outputs
from t2s_ray.outputs import COMPARISON_STATS_CSV, CURVES_CSV, FORMATS, REPORT_TXT, TABLE_CSV, TABLE_MD

__all__ = [
    "ARROWS",
    "COMPARISON_STATS_CSV",
    "COST",
    "CURVES_CSV",
    "EXPERIMENT_DIR_HELP",
    "FORMATS",
    "HEADLINE",
    "LEGEND",
    "MARKS",
    "META_COLUMNS",
    "METRICS",
    "QUALITY_COLUMNS",
    "REFERENCES",
    "REPORT_TXT",
    "STEP_KEYS",
    "TABLE_CSV",
    "TABLE_MD",
    "TUNE_KEYS",
    "MetricInfo",
    "all_nan_notes",
    "column_decimals",
    "comparison_markdown",
    "comparison_stats",
    "delta_pct",
    "guidance_curve",
    "header_label",
    "headline_markdown",
    "headline_note",
    "load_history",
    "load_trials",
    "mean_std_text",
    "metric_columns",
    "metric_info",
    "nan_notes",
    "render_report",
    "select_trials",
    "stats",
    "summarize",
    "summary_metrics",
    "tested_values",
    "to_csv",
    "to_markdown",
    "training_curves",
    "write_outputs",
    "parse_effect",
    "seeds_needed",
]
