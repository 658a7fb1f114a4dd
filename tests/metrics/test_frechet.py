"""Fréchet distance: known values and agreement with the scipy.linalg.sqrtm formulation."""

import numpy as np
import pytest
from scipy import linalg

from t2s_ray.metrics.frechet import feature_stats, frechet_distance, frechet_from_features


def _random_stats(rng, n=200, d=16):
    feats = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)
    return feature_stats(feats)


def test_feature_stats_is_float64_with_stylegan_v_ddof1():
    feats = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], dtype=np.float32)
    mu, sigma = feature_stats(feats)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False))
    assert sigma[0, 0] == pytest.approx(8 / 2)  # divides by N - 1, as np.cov in StyleGAN-V's FVD


def test_equal_covariances_give_mean_distance():
    rng = np.random.default_rng(0)
    _, sigma = _random_stats(rng)
    mu1, mu2 = np.zeros(16), np.ones(16)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(16.0, rel=1e-8)


def test_symmetric():
    rng = np.random.default_rng(1)
    s1, s2 = _random_stats(rng), _random_stats(rng)
    assert frechet_distance(*s1, *s2) == pytest.approx(frechet_distance(*s2, *s1), rel=1e-9)


def test_agrees_with_scipy_sqrtm():
    rng = np.random.default_rng(2)
    (mu1, s1), (mu2, s2) = _random_stats(rng), _random_stats(rng)
    covmean = linalg.sqrtm(s1 @ s2)
    reference = np.real((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2 * covmean))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-6)


def test_identical_sets_give_zero():
    feats = np.random.default_rng(3).normal(size=(50, 8))
    assert abs(frechet_from_features(feats, feats)) < 1e-9


def test_identical_rank_deficient_sets_give_zero():
    feats = np.random.default_rng(4).normal(size=(10, 32))  # N < D: singular covariance
    scale = 2 * np.trace(feature_stats(feats)[1])
    # sqrt of round-off-sized null-space eigenvalues (~1e-16) leaves ~1e-8 each: zero relative to the traces
    assert abs(frechet_from_features(feats, feats)) < 1e-7 * scale


def test_diagonal_covariances_closed_form():
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + np.sum((mu1 - mu2) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [0, 1])
def test_too_few_samples_raise_naming_n(n):
    with pytest.raises(ValueError, match=f"N={n}"):
        frechet_from_features(np.zeros((n, 4)), np.zeros((5, 4)))


def test_non_finite_statistics_raise():
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([np.nan]), np.eye(1), np.zeros(1), np.eye(1))


def test_covariance_is_stylegan_v_ddof1_and_distance_never_negative():
    from t2s_ray.metrics.frechet import feature_stats, frechet_from_features

    feats = np.random.default_rng(0).normal(size=(50, 4))
    _, sigma = feature_stats(feats)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))
    assert frechet_from_features(feats, feats.copy()) == 0.0  # clamped: round-off gives tiny negatives
