"""Temporal consistency and motion of videos (B, C, T, H, W) in [-1, 1].

Every consistency score is maximised by a frozen video, and sign language lives in motion: report
`temporal_consistency` together with `motion_ratio` (generated motion relative to real clips), never alone.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from t2s_ray.metrics.lpips import RANDOM_BACKBONE_STATUS, lpips_video

SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # Wang et al. 2004 constants for data range 1


def _check_videos(videos: torch.Tensor, name: str = "videos") -> None:
    if videos.ndim != 5:
        raise ValueError(f"{name} must be (B, C, T, H, W), got shape {tuple(videos.shape)}")


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (N,) of images (N, C, H, W) in [0, 1], channels averaged; gaussian window, valid region.

    The window shrinks (odd) to fit frames smaller than `window`.
    """
    channels, size = x.shape[1], min(window, *x.shape[-2:])
    if size % 2 == 0:
        size -= 1
    w = _gaussian_window(size, sigma, channels, x)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, w, groups=channels)

    mx, my = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mx * mx + my * my + SSIM_C1) * (var_x + var_y + SSIM_C2))
    return s.flatten(1).mean(dim=1)


@torch.no_grad()
def _consecutive_ssim(videos: torch.Tensor) -> float:
    """Mean SSIM between consecutive frames, one clip at a time to bound memory."""
    total, count = 0.0, 0
    for clip in ((videos.double() + 1) / 2).clamp(0, 1):
        frames = rearrange(clip, "c t h w -> t c h w")
        total += ssim(frames[:-1], frames[1:]).sum().item()
        count += frames.shape[0] - 1
    return total / count


def temporal_consistency(videos: torch.Tensor, lpips_model: Optional[nn.Module] = None) -> tuple[float, str, str]:
    """(value, metric_name, status): how alike consecutive frames are; 1 = identical frames.

    With an LPIPS model: 1 - mean LPIPS between consecutive frames, named `temporal_consistency`.
    Without one: mean SSIM between consecutive frames, named `temporal_consistency_ssim` (a different metric).
    NaN with a status when T < 2. A frozen video scores 1: pair this with `motion_ratio`.
    """
    _check_videos(videos)
    name = "temporal_consistency" if lpips_model is not None else "temporal_consistency_ssim"
    if videos.shape[2] < 2:
        return math.nan, name, f"needs >= 2 frames, clips have T={videos.shape[2]}"
    if lpips_model is None:
        return _consecutive_ssim(videos), name, "ok (SSIM: no LPIPS model)"
    value = 1.0 - lpips_video(lpips_model, videos[:, :, :-1], videos[:, :, 1:])
    return value, name, RANDOM_BACKBONE_STATUS if getattr(lpips_model, "pnet_rand", False) else "ok"


@torch.no_grad()
def mean_motion(videos: torch.Tensor) -> float:
    """Mean |frame_t+1 - frame_t| over all pixels, in [0, 1] units (videos in [-1, 1]); needs T >= 2."""
    _check_videos(videos)
    if videos.shape[2] < 2:
        raise ValueError(f"motion needs >= 2 frames, clips have T={videos.shape[2]}")
    return (videos.double().diff(dim=2).abs().mean() / 2).item()


def motion_ratio(generated: torch.Tensor, real: torch.Tensor) -> tuple[float, str]:
    """(mean_motion(generated) / mean_motion(real), status): 1 = as much motion as real clips, 0 = frozen.

    NaN with a status when either set has T < 2 or the real clips do not move.
    """
    _check_videos(generated, "generated")
    _check_videos(real, "real")
    if min(generated.shape[2], real.shape[2]) < 2:
        return math.nan, f"needs >= 2 frames, got T={generated.shape[2]} generated, T={real.shape[2]} real"
    real_motion = mean_motion(real)
    if real_motion == 0:
        return math.nan, "real clips have no motion (mean |frame difference| = 0): ratio undefined"
    return mean_motion(generated) / real_motion, "ok"
