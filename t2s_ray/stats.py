"""Paired statistics over seeds: pure functions on arrays, using `scipy.stats`.

Seed k gives every arm the same initialisation where shapes allow, the same data order, the
same training noise and the same evaluation prompts and noise, so arms are compared by their
per-seed differences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy import stats as sps

BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no detectable difference", "n < 3: no inference"


@dataclass(frozen=True)
class Paired:
    """A paired comparison `arm - reference` over the seeds both have."""

    n: int
    """Seeds with a finite value on both sides."""
    dropped: int
    """Seeds present on one side only (or NaN on either)."""
    mean_diff: float
    """Mean of the per-seed differences arm - reference."""
    ci_low: float
    """Lower end of the 95 % t-interval of the mean difference (NaN for n < 2)."""
    ci_high: float
    """Upper end of the 95 % t-interval."""
    p: float
    """Two-sided paired t-test p-value (NaN for n < 2 or zero-variance differences)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired(arm: dict[int, float], reference: dict[int, float], confidence: float = 0.95) -> Paired:
    """Per-seed differences `arm[s] - reference[s]` over seeds both have: mean, t-interval, paired t-test."""
    seeds = sorted(set(arm) | set(reference))
    both = [s for s in seeds if s in arm and s in reference and math.isfinite(arm[s]) and math.isfinite(reference[s])]
    d = np.array([arm[s] - reference[s] for s in both], dtype=np.float64)
    n, dropped = len(d), len(seeds) - len(both)
    if n == 0:
        return Paired(0, dropped, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, dropped, mean, math.nan, math.nan, math.nan)
    sem = float(sps.sem(d))
    if sem == 0:  # identical differences: the interval is the point and no test statistic exists
        return Paired(n, dropped, mean, mean, mean, math.nan)
    low, high = sps.t.interval(confidence, n - 1, loc=mean, scale=sem)
    p = float(sps.ttest_1samp(d, 0.0).pvalue)
    return Paired(n, dropped, mean, float(low), float(high), p)


def verdict(result: Paired, higher_is_better: bool = True) -> str:
    """`better` / `worse` when the interval excludes 0, else `no detectable difference`; `n < 3` draws none."""
    if result.n < 3:
        return TOO_FEW
    if result.ci_low > 0:
        return BETTER if higher_is_better else WORSE
    if result.ci_high < 0:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def by_seed(seeds: Sequence[int], values: Sequence[float]) -> dict[int, float]:
    """`{seed: value}` from two parallel sequences (NaN kept; `paired` drops it)."""
    return {int(s): float(v) for s, v in zip(seeds, values)}
