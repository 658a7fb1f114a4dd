"""Fréchet Video Distance with StyleGAN-V's TorchScript I3D (`i3d_torchscript.pt`), the common PyTorch convention.

The detector takes uint8 videos (B, C, T, H, W) in [0, 255] and, called with `rescale=True, resize=True,
return_features=True`, maps them to [-1, 1], resizes to 224x224 and returns 400-d features. It needs >= 10
frames. No package ships its weights: the user passes a path (`eval.fvd_detector`). A distance computed with
any other feature network must be reported under another name (e.g. `fvd_synthsign`), via
`frechet_video_distance`.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from t2s_ray.metrics.frechet import frechet_from_features

MIN_FRAMES = 10
NO_DETECTOR = "no I3D detector: pass --fvd-detector / set eval.fvd_detector to StyleGAN-V's i3d_torchscript.pt"


def load_i3d(path: str) -> torch.jit.ScriptModule:
    """Load StyleGAN-V's TorchScript I3D on CPU in eval mode; a missing file raises naming the path."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"I3D detector not found at {path!r}: expected StyleGAN-V's i3d_torchscript.pt, "
            "passed as eval.fvd_detector (--fvd-detector)"
        )
    with warnings.catch_warnings():  # the detector only exists as TorchScript, which recent torch deprecates
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*is deprecated", category=FutureWarning)
        return torch.jit.load(str(path), map_location="cpu").eval()


def _check_videos(x: torch.Tensor, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name} must be (B, C, T, H, W), got shape {tuple(x.shape)}")


def to_uint8_bcthw(x: torch.Tensor) -> torch.Tensor:
    """Float videos (B, C, T, H, W) in [-1, 1] -> uint8 in [0, 255] (values outside [-1, 1] are clipped)."""
    _check_videos(x, "videos")
    if not x.is_floating_point():
        raise TypeError(f"expected float videos in [-1, 1], got dtype {x.dtype}")
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


@torch.no_grad()
def i3d_features(detector, videos_u8: torch.Tensor, batch_size: int = 16, device="cpu") -> np.ndarray:
    """I3D features (B, F) of uint8 videos (B, C, T, H, W); grey (C=1) is repeated to RGB as StyleGAN-V does."""
    _check_videos(videos_u8, "videos_u8")
    if videos_u8.dtype != torch.uint8:
        raise TypeError(f"I3D takes uint8 videos in [0, 255], got dtype {videos_u8.dtype}")
    if videos_u8.shape[1] not in (1, 3):
        raise ValueError(f"I3D takes 1 or 3 channels, got C={videos_u8.shape[1]}")
    feats = []
    for batch in videos_u8.split(batch_size):
        batch = batch.to(device)
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1, 1)
        out = detector(batch, rescale=True, resize=True, return_features=True)
        feats.append(out.detach().double().cpu().numpy())
    return np.concatenate(feats)


def frechet_video_distance(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """Fréchet distance between video feature sets (N, F) and (M, F), whatever network produced them."""
    return frechet_from_features(real_feats, fake_feats)


def _unavailable(real: torch.Tensor, fake: torch.Tensor, detector_path: str) -> str | None:
    """Why FVD cannot be computed for these inputs, or None when it can."""
    if not detector_path:
        return NO_DETECTOR
    if not Path(detector_path).is_file():
        return f"I3D detector not found at {detector_path!r} (StyleGAN-V's i3d_torchscript.pt)"
    if fake.shape[2] < MIN_FRAMES:
        return f"I3D needs >= {MIN_FRAMES} frames, clips have T={fake.shape[2]}"
    if min(real.shape[0], fake.shape[0]) < 2:
        return f"FVD needs >= 2 clips per set, got {real.shape[0]} real, {fake.shape[0]} fake"
    if not (torch.isfinite(real).all() and torch.isfinite(fake).all()):
        return "videos contain NaN/inf (diverged model?)"
    return None


I3D_DIM = 400
"""Width of the I3D features FVD and KID compare."""


def fvd_and_kid(
    real: torch.Tensor, fake: torch.Tensor, detector_path: str, device="cpu", batch_size: int = 16
) -> dict[str, float | str]:
    """`eval/fvd` and `eval/kid` (with `eval/kid_sd`) of the same I3D features, each with its `_status` (NaN and
    the reason where the detector or the clips do not allow them); see `fvd` and `t2s_ray.metrics.kid`."""
    from t2s_ray.metrics.kid import kid

    value, status, feats = _fvd(real, fake, detector_path, device, batch_size)
    if feats is None:
        return {
            "eval/fvd": value,
            "eval/fvd_status": status,
            "eval/kid": math.nan,
            "eval/kid_sd": math.nan,
            "eval/kid_status": status,
            "eval/kid_sd_status": status,
        }
    k, sd = kid(*feats)
    why = status if math.isfinite(k) else "KID needs >= 4 clips per set"
    return {
        "eval/fvd": value,
        "eval/fvd_status": status,
        "eval/kid": k,
        "eval/kid_sd": sd,
        "eval/kid_status": why,
        "eval/kid_sd_status": why,
    }


def fvd(
    real: torch.Tensor, fake: torch.Tensor, detector_path: str, device="cpu", batch_size: int = 16
) -> tuple[float, str]:
    """FVD between real and generated videos (B, C, T, H, W) in [-1, 1] with the I3D at `detector_path`.

    Returns (value, "ok (N=<n> real, <m> fake)"), or (NaN, why) when there is no detector, the file is missing,
    the clips are shorter than 10 frames or a set has fewer than 2 clips. Real and fake must share (C, T, H, W):
    resize real clips to the model's resolution first. FVD depends on N: compare only at equal N.
    """
    value, status, _ = _fvd(real, fake, detector_path, device, batch_size)
    return value, status


def _fvd(real: torch.Tensor, fake: torch.Tensor, detector_path: str, device, batch_size: int):
    """(FVD, status, (real features, fake features) or None)."""
    _check_videos(real, "real")
    _check_videos(fake, "fake")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"real and fake clips must share (C, T, H, W), got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    why = _unavailable(real, fake, detector_path)
    if why is not None:
        return math.nan, why, None
    detector = load_i3d(detector_path).to(device)
    real_feats = i3d_features(detector, to_uint8_bcthw(real), batch_size, device)
    fake_feats = i3d_features(detector, to_uint8_bcthw(fake), batch_size, device)
    return (
        frechet_video_distance(real_feats, fake_feats),
        f"ok (N={len(real_feats)} real, {len(fake_feats)} fake)",
        (real_feats, fake_feats),
    )
