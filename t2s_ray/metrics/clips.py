"""t2s-ray's video metrics on a user's own clips (uint8 numpy, clips x frames x height x width x 3).

What `Session.evaluate` computes for a study of any model: FVD with the user's I3D detector, LPIPS between
each generated clip and the real clip of its caption, temporal consistency (the real clips' value beside
it, the reference) and motion ratio. A metric that cannot be computed is NaN with `<name>_status` saying why.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from t2s_ray.data.video import to_model_input
from t2s_ray.metrics.fvd import fvd
from t2s_ray.metrics.lpips import load_lpips, lpips_video
from t2s_ray.metrics.temporal import motion_ratio, temporal_consistency


def _clips(x: np.ndarray, name: str) -> torch.Tensor:
    x = np.asarray(x)
    if x.ndim != 5 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 clips x frames x height x width x 3, got {x.dtype} {x.shape}")
    return to_model_input(x)


def clip_metrics(
    generated: np.ndarray,
    real: np.ndarray,
    fvd_detector: str = "",
    lpips: bool = True,
    lpips_random_backbone: bool = False,
    device: str = "cpu",
) -> dict[str, Any]:
    """`eval/*` metrics of `generated` against `real` (the real clips of the same captions, same shape).

    `fvd_detector`: path to StyleGAN-V's `i3d_torchscript.pt` (NaN without it). `lpips_random_backbone` is for
    tests only (an untrained trunk measures nothing)."""
    fake, ref = _clips(generated, "generated"), _clips(real, "real")
    if fake.shape[1:] != ref.shape[1:] or len(fake) != len(ref):
        raise ValueError(
            f"generated and real clips must match one to one in shape, got {tuple(generated.shape)} "
            f"and {tuple(real.shape)}"
        )
    out: dict[str, Any] = {"eval/num_videos": float(len(fake))}
    out["eval/fvd"], out["eval/fvd_status"] = fvd(ref, fake, fvd_detector, device=device)
    model, status = load_lpips(random_backbone=lpips_random_backbone) if lpips else (None, "not asked for")
    if model is None:
        out["eval/lpips"], out["eval/lpips_status"] = math.nan, status
    else:
        out["eval/lpips"], out["eval/lpips_status"] = lpips_video(model, fake, ref), status
    value, name, tc_status = temporal_consistency(fake, model)
    out[f"eval/{name}"], out[f"eval/{name}_status"] = value, tc_status
    out[f"eval/{name}_real"] = temporal_consistency(ref, model)[0]
    out["eval/motion_ratio"], out["eval/motion_ratio_status"] = motion_ratio(fake, ref)
    return out
