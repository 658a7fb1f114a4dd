"""Kernel Inception/Video Distance (KID): the unbiased MMD² between two feature sets with the cubic polynomial
kernel k(x, y) = (x·y / d + 1)³ (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018), in float64.

Unlike the Fréchet distance, whose bias grows like tr(Σ)/N and depends on each set's own covariance (at N = 64
in a 128-d space a less diverse arm can score better for that reason alone), the estimator is unbiased at any
N: two sets from one distribution average 0 (single values can be negative). Reported with its sd over random
subsets, as clean-fid and torch-fidelity do.
"""

from __future__ import annotations

import math

import numpy as np

SUBSETS = 100
"""Random subsets the sd is taken over."""


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² of feature sets x (m, d) and y (n, d) with the cubic polynomial kernel (m, n >= 2)."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2.0 * kxy.mean()
    )


def kid(real: np.ndarray, fake: np.ndarray, subsets: int = SUBSETS, seed: int = 0) -> tuple[float, float]:
    """(KID, its sd): the unbiased MMD² on the whole sets, and the sd of that estimate over `subsets` random
    subsets of half of each set (drawn without replacement, seeded); NaN for sets under 4 vectors."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, D) with one D, got {real.shape} and {fake.shape}")
    if min(len(real), len(fake)) < 4:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    m, n = len(real) // 2, len(fake) // 2
    draws = [
        mmd2_unbiased(real[rng.choice(len(real), m, replace=False)], fake[rng.choice(len(fake), n, replace=False)])
        for _ in range(subsets)
    ]
    # the half-size subsets' spread, scaled to the whole sets (the estimator's variance falls like 1/N)
    return mmd2_unbiased(real, fake), float(np.std(draws, ddof=1) / math.sqrt(2))
