"""Paired statistics over seeds: pure functions on arrays, using `scipy.stats`.

Seed k gives every arm the same initialisation where shapes allow, the same data order, the
same training noise and the same evaluation prompts and noise, so an arm is compared with the
baseline by its per-seed differences: their mean, a 95 % t-interval (or, from 10 pairs, a bootstrap
one), and the paired t-test at every n (a rank test's smallest p, 2/2^n, would leave 6-9 seeds unable to
decide anything once corrected). Identical non-zero differences have no variance for t: they get the
exact sign-flip p, 2/2^n (0.25 at n = 3), never a free "significant". Seeds present on one side only
are dropped and counted; only when nothing pairs does Welch's unpaired test stand in, and says so.
Across the cells of one experiment p-values are Holm-adjusted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats as sps

from t2s_ray.outputs import INTERVALS

BETTER, WORSE, NO_DIFFERENCE, TOO_FEW = "better", "worse", "no detectable difference", "n < 3: no inference"
EXPLORATORY = " (exploratory)"
"""Appended to the better/worse of a secondary metric: found, but not what the arm's question is decided on."""
LOSS = "loss: no verdict"
"""The verdict of a training objective: compared (interval, p), never ranked."""
POWER = 0.8
ALPHA = 0.05
BOOTSTRAP_FROM = 10
"""Pairs a bootstrap interval needs: below, a percentile interval covers far less than 95 % (75 % at most at
n = 3)."""
SIGN_FLIP = "sign-flip (equal differences)"
"""The test of identical non-zero differences: the exact sign-flip p, 2/2^n."""


@dataclass(frozen=True)
class Paired:
    """A comparison `arm - reference` over seeds (paired where both sides have the seed)."""

    n: int
    """Pairs: seeds with a finite value on both sides (Welch fallback: the smaller side's count)."""
    dropped: int
    """Seeds without a finite value on both sides."""
    mean_diff: float
    """Mean of the per-seed differences arm - reference (Welch: difference of the means)."""
    ci_low: float
    """Lower end of the 95 % interval of the mean difference (NaN when it cannot be computed)."""
    ci_high: float
    """Upper end of that interval."""
    p: float
    """Two-sided p-value of `test` (NaN when it cannot be computed)."""
    test: str = "paired t"
    """`paired t`, `sign-flip (equal differences)`, `welch (nothing pairs)` or `none`."""
    p_holm: float = math.nan
    """`p` after Holm's correction across the experiment's comparisons (see `holm`)."""
    sd_diff: float = math.nan
    """Standard deviation (ddof=1) of the per-seed differences (NaN below 2 pairs or for Welch)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(values: Mapping[int, float]) -> dict[int, float]:
    return {s: float(v) for s, v in values.items() if v is not None and math.isfinite(v)}


def _t_interval(d: np.ndarray, confidence: float) -> tuple[float, float]:
    sem = float(sps.sem(d))
    if sem == 0:
        return float(d.mean()), float(d.mean())
    low, high = sps.t.interval(confidence, len(d) - 1, loc=float(d.mean()), scale=sem)
    return float(low), float(high)


def _bootstrap_interval(d: np.ndarray, confidence: float, seed: int) -> tuple[float, float]:
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    res = sps.bootstrap((d,), np.mean, confidence_level=confidence, random_state=seed, method="percentile")
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _paired_p(d: np.ndarray) -> tuple[float, str]:
    if np.all(d == 0):
        return 1.0, "paired t"
    if np.ptp(d) <= 1e-9 * np.abs(d).max():  # identical non-zero differences (to round-off): no variance for t
        # of the 2^n sign patterns only the observed one and its mirror reach |sum d|
        return min(1.0, 2.0 / 2 ** len(d)), SIGN_FLIP
    return float(sps.ttest_1samp(d, 0.0).pvalue), "paired t"


def _welch(arm: Sequence[float], ref: Sequence[float], dropped: int, confidence: float) -> Paired:
    a, r = np.asarray(arm), np.asarray(ref)
    res = sps.ttest_ind(a, r, equal_var=False)
    ci = res.confidence_interval(confidence)
    return Paired(
        min(len(a), len(r)),
        dropped,
        float(a.mean() - r.mean()),
        float(ci.low),
        float(ci.high),
        float(res.pvalue),
        "welch (nothing pairs)",
    )


def paired(
    arm: Mapping[int, float],
    reference: Mapping[int, float],
    confidence: float = 0.95,
    interval: str = "t",
    seed: int = 0,
) -> Paired:
    """Per-seed differences `arm[s] - reference[s]`: mean, interval (`t` or `bootstrap`), paired test.

    NaN values count as missing. Unpaired seeds are dropped and counted; with no pair at all and
    at least 2 values a side, Welch's unpaired test is used instead (`test` says so).
    """
    if interval not in INTERVALS:
        raise ValueError(f"interval={interval!r}; expected one of {', '.join(INTERVALS)}")
    a, r = _finite(arm), _finite(reference)
    both = sorted(set(a) & set(r))
    dropped = len((set(arm) | set(reference)) - set(both))  # a NaN counts as missing
    if not both:
        if len(a) >= 2 and len(r) >= 2:
            return _welch(list(a.values()), list(r.values()), dropped, confidence)
        return Paired(0, dropped, math.nan, math.nan, math.nan, math.nan, "none")
    d = np.array([a[s] - r[s] for s in both], dtype=np.float64)
    if interval == "bootstrap" and len(d) < BOOTSTRAP_FROM:
        raise ValueError(
            f"a bootstrap interval needs >= {BOOTSTRAP_FROM} paired seeds (at n = {len(d)} a percentile "
            f"interval covers well under 95 %); use the t-interval (--interval t) or run more seeds"
        )
    if len(d) < 2:
        return Paired(1, dropped, float(d[0]), math.nan, math.nan, math.nan, "none")
    p, test = _paired_p(d)
    if test == SIGN_FLIP:
        # the sign-flip test inverted: every shift but the common difference is rejected when 2/2^n < 1 - confidence,
        # else none is: the interval is that one point, or unknown (NaN) rather than a zero-width [d, d]
        low = high = float(d.mean()) if p < 1 - confidence else math.nan
    else:
        low, high = _t_interval(d, confidence) if interval == "t" else _bootstrap_interval(d, confidence, seed)
    return Paired(len(d), dropped, float(d.mean()), low, high, p, test, sd_diff=float(d.std(ddof=1)))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error); NaN p-values are left out and stay NaN."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    order = sorted(idx, key=lambda i: pvalues[i])
    m, running = len(order), 0.0
    out = [math.nan] * len(pvalues)
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def with_holm(results: Sequence[Paired]) -> list[Paired]:
    """`results` with `p_holm` filled in, adjusted across all of them."""
    return [replace(r, p_holm=p) for r, p in zip(results, holm([r.p for r in results]))]


def verdict(result: Paired, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """`better` / `worse` when the interval excludes 0 and the (Holm-adjusted, when set) p < alpha.

    Else `no detectable difference` (a NaN p is never significant); fewer than 3 pairs (or unpaired values)
    draw no inference.
    """
    if result.n < 3 or result.test == "none":
        return TOO_FEW
    p = result.p_holm if math.isfinite(result.p_holm) else result.p
    significant = p < alpha  # False for NaN
    if significant and result.ci_low > 0:
        return BETTER if higher_is_better else WORSE
    if significant and result.ci_high < 0:
        return WORSE if higher_is_better else BETTER
    return NO_DIFFERENCE


def _detectable(n: int, sd: float, alpha: float, power: float) -> float:
    """The mean difference the two-sided paired t-test at `alpha` finds with probability `power` from `n` pairs of
    differences with sd `sd`: the noncentrality at which the noncentral t reaches `power`, times sd / sqrt(n).
    (The shortcut (t_{1-alpha/2} + t_power) * sd / sqrt(n) gives 75-78 % power at n = 3-4, not 80 %.)"""
    from scipy.optimize import brentq

    df, crit = n - 1, sps.t.ppf(1 - alpha / 2, n - 1)

    def short(nc: float) -> float:
        wrong_side = sps.nct.cdf(-crit, df, nc)  # a rejection of the wrong sign: ~0, NaN in scipy's far tail
        return sps.nct.sf(crit, df, nc) + (wrong_side if math.isfinite(wrong_side) else 0.0) - power

    lo = crit + sps.t.ppf(power, df)  # the shortcut's noncentrality: a little too small
    hi = lo * 1.1
    while short(hi) < 0:  # widen until the power is reached (a few steps at most)
        lo, hi = hi, hi * 1.1
    return float(brentq(short, lo * 0.5, hi) * sd / math.sqrt(n))


def mde(result: Paired, alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimum detectable effect of a paired comparison: the |mean difference| the paired t-test finds with
    probability `power` at its n, the observed sd of the differences and `alpha` (after correction), from the
    noncentral t distribution. NaN below 3 pairs, unpaired, or without variance."""
    if result.n < 3 or not math.isfinite(result.sd_diff) or result.sd_diff == 0:
        return math.nan
    return _detectable(result.n, result.sd_diff, alpha, power)


def seeds_for(effect: float, sd: float, alpha: float = ALPHA, power: float = POWER, most: int = 1000) -> int | None:
    """The fewest paired seeds (>= 3) whose MDE at `sd` and `alpha` is <= |effect|; None beyond `most`."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0 or sd <= 0:
        return None
    if _detectable(most, sd, alpha, power) > abs(effect):
        return None
    lo, hi = 2, most  # the MDE falls as n grows: bisect for the first n that reaches |effect|
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _detectable(mid, sd, alpha, power) <= abs(effect) else (mid, hi)
    return hi


def delta_pct(result: Paired, reference_mean: float) -> tuple[float, float, float]:
    """Δ% of the mean difference and its interval relative to |reference mean| (NaN for a zero or NaN mean)."""
    if reference_mean is None or not math.isfinite(reference_mean) or reference_mean == 0:
        return math.nan, math.nan, math.nan
    scale = 100.0 / abs(reference_mean)
    return result.mean_diff * scale, result.ci_low * scale, result.ci_high * scale


def by_seed(seeds: Sequence[int], values: Sequence[float]) -> dict[int, float]:
    """`{seed: value}` from two parallel sequences (NaN kept; `paired` drops it)."""
    return {int(s): float(v) for s, v in zip(seeds, values)}
