"""KID: the unbiased MMD² with the cubic polynomial kernel, against a loop-by-loop reference and known answers."""

import math

import numpy as np
import pytest

from t2s_ray.metrics.frechet import frechet_from_features
from t2s_ray.metrics.kid import kid, mmd2_unbiased


def _reference(x, y):
    """The estimator written out term by term (Bińkowski et al. 2018, eq. 4)."""
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_the_term_by_term_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(9, 5)), rng.normal(0.5, 1.0, size=(7, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(_reference(x, y), rel=1e-10)


def test_kid_is_unbiased_where_frechet_is_not():
    """Two sets from one distribution at N = 64 in 128-d: KID averages ~0 (within its sd), FD is far above 0."""
    rng = np.random.default_rng(1)
    kids, fds = [], []
    for _ in range(20):
        a, b = rng.normal(size=(64, 128)), rng.normal(size=(64, 128))
        kids.append(kid(a, b, subsets=10)[0])
        fds.append(frechet_from_features(a, b))
    assert abs(np.mean(kids)) < 3 * np.std(kids) / math.sqrt(len(kids))
    assert np.mean(fds) > 50  # the Fréchet distance's bias at this N (the true distance is 0)


def test_kid_sees_a_shift_and_ranks_a_narrower_arm_fairly():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(64, 32))
    shifted, narrow = rng.normal(0.5, 1.0, size=(64, 32)), rng.normal(0.0, 0.8, size=(64, 32))
    k_shift, sd = kid(real, shifted)
    assert k_shift > 3 * sd > 0
    assert kid(real, narrow)[0] > 0
    assert all(math.isnan(v) for v in kid(real[:3], shifted[:3]))
    with pytest.raises(ValueError, match="one D"):
        kid(real, shifted[:, :5])
