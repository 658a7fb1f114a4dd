"""Temporal consistency (SSIM and LPIPS variants), motion and motion ratio."""

import math
import socket

import pytest
import torch

from t2s_ray.metrics.lpips import load_lpips
from t2s_ray.metrics.temporal import mean_motion, motion_ratio, ssim, temporal_consistency


def _static(b=2, c=3, t=4, h=16, w=16):
    frame = torch.rand(b, c, 1, h, w, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return frame.expand(b, c, t, h, w).clone()


def _smooth(b=2, t=4, h=16, w=16):
    """A horizontal gradient sliding one pixel per frame."""
    x = torch.linspace(-1, 1, w + t)
    frames = torch.stack([x[i : i + w].expand(h, w) for i in range(t)])
    return frames[None, None].expand(b, 3, t, h, w).clone()


def _noise(b=2, t=4, h=16, w=16):
    return torch.rand(b, 3, t, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    x = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-6)
    assert (ssim(x, (x + 0.3 * torch.rand_like(x)).clamp(0, 1)) < 0.99).all()


def test_static_video_is_consistent_and_motionless():
    static = _static()
    value, name, status = temporal_consistency(static)
    assert name == "temporal_consistency_ssim" and status.startswith("ok")
    assert value == pytest.approx(1.0, abs=1e-6)
    assert mean_motion(static) == 0.0
    assert motion_ratio(static, _noise()) == (0.0, "ok")


def test_noisy_video_is_less_consistent_than_smooth():
    noisy, _, _ = temporal_consistency(_noise())
    smooth, _, _ = temporal_consistency(_smooth())
    assert noisy < smooth < 1.0


def test_identical_sets_have_motion_ratio_one():
    video = _smooth()
    assert motion_ratio(video, video.clone()) == (pytest.approx(1.0), "ok")


def test_motion_in_unit_range():
    video = torch.zeros(1, 1, 2, 2, 2)
    video[:, :, 1] = 1.0  # frame goes from mid-grey to white: half the [0, 1] range
    assert mean_motion(video) == pytest.approx(0.5)


def test_nan_paths():
    value, name, status = temporal_consistency(_noise(t=1))
    assert math.isnan(value) and name == "temporal_consistency_ssim" and "T=1" in status
    value, status = motion_ratio(_noise(t=1), _noise(t=1))
    assert math.isnan(value) and "T=1" in status
    value, status = motion_ratio(_noise(), _static())
    assert math.isnan(value) and "no motion" in status


def test_lpips_variant(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: pytest.fail("network access attempted"))
    torch.manual_seed(0)
    model, _ = load_lpips("alex", random_backbone=True)
    value, name, status = temporal_consistency(_noise(b=1, t=3), model)
    assert name == "temporal_consistency" and value < 1.0 and "not LPIPS" in status
    static_value, _, _ = temporal_consistency(_static(b=1, t=3), model)
    assert static_value == pytest.approx(1.0, abs=1e-6)
