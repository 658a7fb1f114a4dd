"""Names of the guidance curve's metrics: the evaluation writes them, the analysis reads them back.

With `eval.guidance_scale` a list, a trial reports, beside its headline `eval/*` metrics (at the first
scale), `eval/guidance/<scale>/<metric>` for each listed scale and each metric in `CURVE_METRICS`, and the
headline scale itself as `HEADLINE_SCALE_KEY`. `<scale>` is the shortest text that reads back as the same
float (`3`, `1.5`, `0.25`): no `/`, so Tune's `/`-flattening and CSV columns keep the key whole. A leaf
module (no torch, no pandas).
"""

from __future__ import annotations

GUIDANCE_PREFIX = "eval/guidance/"
"""Every key of the guidance curve starts with it; none is a headline metric."""
CURVE_METRICS = ("fvd_synthsign", "text_alignment")
"""The metrics evaluated at every listed scale (the rest only at the headline scale)."""
HEADLINE_SCALE_KEY = f"{GUIDANCE_PREFIX}headline_scale"
"""The scale the headline `eval/*` metrics were computed at (`eval.guidance_scale`'s first value)."""
GUIDANCE_CSV = "guidance_curve.csv"
"""`analyze`'s table of the curve: per ablation and scale, the mean, std and count of each curve metric."""


def scale_text(scale: float) -> str:
    """`3.0` -> `3`, `1.5` -> `1.5`: the shortest text that `float()` reads back as `scale`."""
    text = repr(float(scale) + 0.0)  # + 0.0: -0.0 becomes 0.0
    return text.removesuffix(".0")


def guidance_key(scale: float, metric: str) -> str:
    """`guidance_key(1.5, "text_alignment")` -> `eval/guidance/1.5/text_alignment`."""
    return f"{GUIDANCE_PREFIX}{scale_text(scale)}/{metric}"


def parse_guidance_key(key: str) -> tuple[float, str] | None:
    """`(scale, metric)` of a curve key (`guidance_key`'s inverse); None for any other key."""
    if not key.startswith(GUIDANCE_PREFIX):
        return None
    scale, sep, metric = key.removeprefix(GUIDANCE_PREFIX).partition("/")
    if not sep or metric not in CURVE_METRICS:
        return None
    try:
        return float(scale), metric
    except ValueError:
        return None
