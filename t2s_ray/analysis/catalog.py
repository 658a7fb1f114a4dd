"""The metric catalogue: how each final metric is labelled, ranked and grouped.

Also which columns of a trials frame are metrics at all (`metric_columns`), and what the
statistics compare for each (`tested_values`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from types import MappingProxyType

import pandas as pd

from t2s_ray.guidance import GUIDANCE_PREFIX


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
    bounds: tuple[float, float] | None = None
    """The range the metric cannot leave, e.g. (0, 1): a metric pinned at a bound carries no information."""


# Known final metrics, in display order; any other numeric final key follows, sorted.
METRICS: dict[str, MetricInfo] = {
    "eval/fvd": MetricInfo("FVD", "lower", True),
    "eval/fvd_synthsign": MetricInfo("FVD-SynthSign", "lower", True),
    "eval/fvd_synthsign_real": MetricInfo("FVD-SynthSign real vs real"),
    "eval/kid_synthsign": MetricInfo("KID-SynthSign", "lower", True),
    "eval/kid_synthsign_sd": MetricInfo("KID-SynthSign sd"),
    "eval/kid": MetricInfo("KID", "lower", True),
    "eval/kid_sd": MetricInfo("KID sd"),
    "eval/feature_dim_synthsign": MetricInfo("SynthSign feature dim"),
    "eval/lpips": MetricInfo("LPIPS", "lower", True),
    "eval/temporal_consistency": MetricInfo("Temporal cons.", "real", True, bounds=(0.0, 1.0)),
    "eval/temporal_consistency_ssim": MetricInfo("Temporal cons. (SSIM)", "real", True, bounds=(-1.0, 1.0)),
    "eval/temporal_consistency_real": MetricInfo("Temporal cons. of real clips"),
    "eval/temporal_consistency_ssim_real": MetricInfo("Temporal cons. (SSIM) of real clips"),
    "eval/gloss_accuracy": MetricInfo("Gloss acc.", "higher", True, bounds=(0.0, 1.0)),
    "eval/gloss_wer": MetricInfo("Gloss WER", "lower", True),
    "eval/motion_ratio": MetricInfo("Motion ratio", "one"),
    "eval/text_alignment": MetricInfo("Text align.", "higher", True, bounds=(0.0, 1.0)),
    "eval/text_alignment_chance": MetricInfo("Text align. chance"),
    "eval/text_alignment_real": MetricInfo("Text align. of real clips"),
    # back-translation (t2s_ray.metrics.back_translation): BLEU, chrF and ROUGE-L on 0-100 as papers print them
    "eval/bleu4": MetricInfo("BLEU-4", "higher", True, bounds=(0.0, 100.0)),
    "eval/rouge_l": MetricInfo("ROUGE-L", "higher", True, bounds=(0.0, 100.0)),
    "eval/chrf": MetricInfo("chrF", "higher", True, bounds=(0.0, 100.0)),
    "eval/wer": MetricInfo("WER", "lower", True),
    "eval/bleu1": MetricInfo("BLEU-1", "higher", True, bounds=(0.0, 100.0)),
    "eval/bleu2": MetricInfo("BLEU-2", "higher", True, bounds=(0.0, 100.0)),
    "eval/bleu3": MetricInfo("BLEU-3", "higher", True, bounds=(0.0, 100.0)),
    **{
        f"eval/{m}_real": MetricInfo(f"{label} of real clips")
        for m, label in (
            ("bleu1", "BLEU-1"),
            ("bleu2", "BLEU-2"),
            ("bleu3", "BLEU-3"),
            ("bleu4", "BLEU-4"),
            ("chrf", "chrF"),
            ("rouge_l", "ROUGE-L"),
            ("wer", "WER"),
        )
    },
    # poses (t2s_ray.metrics.poses)
    "eval/dtw_mje": MetricInfo("DTW-MJE", "lower", True),
    "eval/ndtw_mje": MetricInfo("nDTW-MJE", "lower", True),
    "final_loss": MetricInfo("Final loss", "lower"),
    "val_loss": MetricInfo("Val loss", "lower"),
    "train_time_h": MetricInfo("Train time (h)", "lower", True, "cost"),
    "mem/gpu_peak_gb": MetricInfo("GPU peak (GB)", "lower", True, "cost"),
    "perf/mfu": MetricInfo("MFU", "higher", False, "cost"),
    "perf/tflops": MetricInfo("TFLOP/s", "higher", False, "cost"),
    "perf/flops_per_step": MetricInfo("FLOPs/step", None, False, "cost"),
    "mem/cpu_rss_peak_gb": MetricInfo("CPU RSS peak (GB)", "lower", kind="cost"),
    "eval/inference_ms_per_video": MetricInfo("Inference (ms/video)", "lower", kind="cost"),
    "eval/inference_peak_mem_gb": MetricInfo("Inference mem. (GB)", "lower", kind="cost"),
    "params/total_m": MetricInfo("Params (M)", kind="cost"),
    "params/trainable_m": MetricInfo("Trainable (M)", kind="cost"),
    "params/text_encoder_change": MetricInfo("Encoder change (rel. L2)"),
    "eval/num_videos": MetricInfo("N videos"),
}
ARROWS = {"lower": "↓", "higher": "↑", "one": "→1", "real": "→real"}


# Columns of load_trials/select_trials that describe a trial rather than measure it.
META_COLUMNS = frozenset(
    {
        "ablation",
        "seed",
        "trial_dir",
        "status",
        "trial_id",
        "last_time",
        "n_reports",
        "error",
        "scale",
        "data",
        "n_attempts",
        "other_dirs",
        "trained_with",
        "grid",
        "ray_state",
        "primary",
        "damaged",
    }
)


HEADLINE = (
    "eval/fvd",
    "eval/fvd_synthsign",
    "eval/text_alignment",
    "eval/bleu4",
    "eval/temporal_consistency",
    "eval/temporal_consistency_ssim",
    "eval/motion_ratio",
    "eval/rouge_l",
    "eval/dtw_mje",
    "eval/lpips",
    "val_loss",
    "train_time_h",
    "mem/gpu_peak_gb",
    "params/trainable_m",
)
"""The metrics of the plots and, in this order, the candidates for the quality table (LPIPS last: against
real renders it mostly measures appearance, so it enters the table only when fewer metrics exist)."""
FRECHET = ("eval/fvd", "eval/fvd_synthsign")
"""Fréchet distances: biased by the sample count N, which is printed beside them."""
COST = (
    "train_time_h",
    "mem/gpu_peak_gb",
    "perf/mfu",
    "eval/inference_ms_per_video",
    "eval/inference_peak_mem_gb",
    "params/total_m",
    "params/trainable_m",
)
"""The columns of the cost table."""


REFERENCES = (
    ("eval/fvd_synthsign_real", "FVD-SynthSign between real val and real test clips (the floor at this N)"),
    ("eval/text_alignment_real", "text alignment of the real clips as the gloss evaluator reads them (the ceiling)"),
    ("eval/text_alignment_chance", "text alignment a caption-blind generator can expect (chance)"),
    ("eval/bleu4_real", "BLEU-4 of the back-translated real clips (the translator's ceiling on these prompts)"),
    ("eval/rouge_l_real", "ROUGE-L of the back-translated real clips (the ceiling)"),
    ("eval/chrf_real", "chrF of the back-translated real clips (the ceiling)"),
    ("eval/wer_real", "WER of the back-translated real clips (the floor)"),
    ("eval/temporal_consistency_real", "temporal consistency of the real clips (the target)"),
    ("eval/temporal_consistency_ssim_real", "temporal consistency (SSIM) of the real clips (the target)"),
)


def _numeric(df: pd.DataFrame, c: str) -> bool:
    return pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])


def metric_columns(df: pd.DataFrame) -> list[str]:
    """Numeric metric columns of a trials frame: known ones in display order, then sorted. The guidance curve's
    columns (`guidance_columns`) are not among them: the tables and statistics stay at the headline scale."""
    numeric = [
        c
        for c in df.columns
        if c not in META_COLUMNS and not c.endswith("_status") and not c.startswith(GUIDANCE_PREFIX) and _numeric(df, c)
    ]
    known = [m for m in METRICS if m in numeric]
    return known + sorted(set(numeric) - set(known))


def guidance_columns(df: pd.DataFrame) -> list[str]:
    """The numeric `eval/guidance/*` columns of a trials frame (the guidance curve; see `t2s_ray.guidance`)."""
    return sorted(c for c in df.columns if c.startswith(GUIDANCE_PREFIX) and _numeric(df, c))


_STUDY_DIRECTIONS: ContextVar[Mapping[str, str]] = ContextVar("study_directions", default=MappingProxyType({}))


@contextmanager
def study_directions(directions: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, a user study's own metrics (`Study.metrics`: name -> lower/higher/real) are ranked and
    tested as quality metrics, as the catalog's are."""
    token = _STUDY_DIRECTIONS.set(dict(directions))
    try:
        yield
    finally:
        _STUDY_DIRECTIONS.reset(token)


DISTRIBUTION = "distribution"
"""In a list of primary metrics: the distribution metric. With I3D features (a detector) FVD, else the
SynthSign gloss-classifier features' FVD-SynthSign; KID (unbiased) instead of the Fréchet distance where the
clips are fewer than `KID_BELOW` x the feature width (there the Fréchet distance is mostly bias)."""
KID_BELOW = 4
I3D_DIM = 400
_PRIMARY: ContextVar[tuple[tuple[str, ...], tuple[str, ...]]] = ContextVar("primary", default=((), ()))


@contextmanager
def primary_metrics(override: tuple[str, ...] = (), study_default: tuple[str, ...] = ()) -> Iterator[None]:
    """Inside the block, every arm's primary metrics are `override` (`--primary`), else what its trials declare
    (the bundled registry, an ablation file), else `study_default` (a user study's first declared metric)."""
    token = _PRIMARY.set((tuple(override), tuple(study_default)))
    try:
        yield
    finally:
        _PRIMARY.reset(token)


def arm_primary(declared: str | None, done: pd.DataFrame) -> tuple[str, ...]:
    """The primary metrics of an arm whose trials declare `declared` (comma-joined, see `primary_metrics`),
    with `distribution` resolved on the finished trials `done`."""
    override, study_default = _PRIMARY.get()
    names = (
        override
        or (tuple(m for m in str(declared).split(",") if m) if isinstance(declared, str) else ())
        or study_default
    )
    return tuple(distribution_metric(done) if m == DISTRIBUTION else m for m in names)


def distribution_metric(done: pd.DataFrame) -> str:
    """What `distribution` stands for in the finished trials `done` (see `DISTRIBUTION`)."""

    def have(m: str) -> bool:
        return m in done and done[m].notna().any()

    n = done["eval/num_videos"].max() if have("eval/num_videos") else math.nan
    if have("eval/fvd"):
        return "eval/kid" if have("eval/kid") and n < KID_BELOW * I3D_DIM else "eval/fvd"
    dim = done["eval/feature_dim_synthsign"].max() if have("eval/feature_dim_synthsign") else math.nan
    if have("eval/kid_synthsign") and not n >= KID_BELOW * dim:  # also when N or the width is unknown
        return "eval/kid_synthsign"
    return "eval/fvd_synthsign"


PINNED_TOLERANCE = 1e-4
"""A metric within this fraction of its range of a bound in every trial is pinned there (1.0000 at 4 digits)."""


def no_information(done: pd.DataFrame) -> dict[str, str]:
    """The ranked metrics of the finished trials `done` that cannot tell the arms apart -> why: the same value
    in every arm and seed, or every value at one of the metric's bounds (temporal consistency 1 of frozen
    clips, text alignment 0 of a model that learned nothing). Such a metric is flagged in the tables and the
    report and left out of the verdict families. Needs two finished values at least."""
    out = {}
    for m in metric_columns(done):
        info = metric_info(m)
        values = done[m].dropna() if info.better is not None else ()
        if len(values) < 2:
            continue
        lo, hi = float(values.min()), float(values.max())
        pinned = [
            b
            for b in (info.bounds or ())
            if max(abs(lo - b), abs(hi - b)) <= PINNED_TOLERANCE * (info.bounds[1] - info.bounds[0])
        ]
        where = f"in all {len(values)} finished trials (every arm and seed)"
        if pinned:
            out[m] = f"{info.label} is at its bound {pinned[0]:g} {where}"
        elif hi - lo <= 1e-12 * max(1.0, abs(hi)):
            out[m] = f"{info.label} is {hi:.6g} {where}"
    return out


def is_loss(metric: str) -> bool:
    """A training objective (final_loss, val_loss, a study's `*loss`): compared, never a verdict (losses of
    different prediction targets or models are not on one scale)."""
    return metric.rsplit("/", 1)[-1].endswith("loss")


def headline_metrics() -> tuple[str, ...]:
    """`HEADLINE`, led by the study's own ranked metrics when a user study is being analysed."""
    own = tuple(m for m in _STUDY_DIRECTIONS.get() if m not in HEADLINE)
    return own + HEADLINE


def metric_info(metric: str) -> MetricInfo:
    """Display/comparison info of a metric; a study's own metrics get the direction the study gives them; unknown
    `eval/*` metrics count as quality (Δ%) without a direction (no verdict)."""
    direction = _STUDY_DIRECTIONS.get().get(metric)
    if direction is not None:
        return MetricInfo(METRICS[metric].label if metric in METRICS else metric, direction, True)
    return METRICS.get(metric, MetricInfo(metric, None, metric.startswith("eval/")))


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
