"""Pose metrics for models that produce keypoints: DTW-MJE and nDTW-MJE against the real poses of each prompt.

DTW-MJE (dynamic-time-warping mean joint error, as in Huang et al. 2021, "Towards Fast and High-Quality Sign
Language Production", and the pose-evaluation metrics of Ham2Pose, Arkushin et al. 2023): a generated and a
real keypoint sequence, each frames x joints x dims, are aligned in time by DTW (`dtaidistance.dtw_ndim`'s
warping path over the frames' keypoints), and the mean joint error (the mean over joints of the Euclidean
distance) is averaged over the aligned frame pairs. Sequences may differ in length; that is what DTW is for.

nDTW-MJE is DTW-MJE divided by the real sequence's pose scale (the root-mean-square distance of its joints from
their per-frame centroid), so that it does not depend on the image size or on how far the signer stands.

Missing keypoints (NaN, or masked in a `.pose` file) count as the origin while the path is found (as Ham2Pose
zero-fills them) and are left out of a frame pair's mean joint error; a pair with no joint in common adds
nothing. The trial's value is the mean over its clips. Lower is better for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from t2s_ray.metrics import not_computed

POSE_METRICS = ("dtw_mje", "ndtw_mje")


def read_pose(path: str | Path) -> np.ndarray:
    """Frames x joints x dims of the first person in a `.pose` file (`pose-format`); masked points as NaN."""
    from pose_format import Pose

    with open(path, "rb") as f:
        pose = Pose.read(f.read())
    data = pose.body.data  # frames x people x points x dims, a masked array
    arr = np.ma.filled(np.ma.asarray(data[:, 0]).astype(np.float64), np.nan)
    return arr


def _sequence(pose: Any, what: str) -> np.ndarray:
    arr = read_pose(pose) if isinstance(pose, (str, Path)) else np.asarray(pose, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[2] not in (2, 3):
        raise ValueError(f"{what}: expected frames x joints x 2 or 3 coordinates, got shape {arr.shape}")
    return arr


def dtw_path(generated: np.ndarray, real: np.ndarray) -> list[tuple[int, int]]:
    """The DTW warping path (generated frame, real frame) of two keypoint sequences (`dtaidistance`)."""
    from dtaidistance import dtw_ndim

    flat = [np.nan_to_num(s, nan=0.0).reshape(len(s), -1) for s in (generated, real)]
    return [(int(i), int(j)) for i, j in dtw_ndim.warping_path(flat[0], flat[1])]


def dtw_mje(generated: np.ndarray, real: np.ndarray) -> float:
    """DTW-MJE of one pair of sequences (frames x joints x dims each; the joints and dims must match)."""
    if generated.shape[1:] != real.shape[1:]:
        raise ValueError(f"generated poses {generated.shape} and real poses {real.shape} differ in joints or dims")
    errors = []
    for i, j in dtw_path(generated, real):
        per_joint = np.linalg.norm(generated[i] - real[j], axis=-1)  # NaN where either point is missing
        if np.isfinite(per_joint).any():
            errors.append(np.nanmean(per_joint))
    return float(np.mean(errors)) if errors else math.nan


def pose_scale(poses: np.ndarray) -> float:
    """Root-mean-square distance of the joints from their per-frame centroid (NaN joints left out)."""
    centred = poses - np.nanmean(poses, axis=1, keepdims=True)
    return float(np.sqrt(np.nanmean(np.sum(centred**2, axis=-1))))


def pose_metrics(generated_poses: Sequence[Any] | None, real_poses: Sequence[Any] | None) -> dict[str, Any]:
    """`eval/dtw_mje` and `eval/ndtw_mje` (with `_status`) of generated keypoint sequences against the real ones
    of the same prompts: one sequence (an array frames x joints x dims, or a `.pose` file path) per clip each;
    NaN with the reason when none are given or a pair cannot be compared."""
    if generated_poses is None or real_poses is None:
        return _nan("no poses given: pass generated_poses= and real_poses= to Session.evaluate")
    if len(generated_poses) != len(real_poses) or len(real_poses) == 0:
        raise ValueError(
            f"generated_poses has {len(generated_poses)} sequences and real_poses {len(real_poses)}: give one "
            "per clip each"
        )
    raw, normalised = [], []
    for k, (g, r) in enumerate(zip(generated_poses, real_poses)):
        gen, real = _sequence(g, f"generated_poses[{k}]"), _sequence(r, f"real_poses[{k}]")
        value, scale = dtw_mje(gen, real), pose_scale(real)
        raw.append(value)
        normalised.append(value / scale if scale > 0 else math.nan)
    n = sum(math.isfinite(v) for v in raw)
    status = f"ok (mean over {n} of {len(raw)} clips; dtaidistance warping path)"
    if n == 0:
        return _nan("no clip pair had a keypoint in common")
    return {
        "eval/dtw_mje": float(np.nanmean(raw)),
        "eval/dtw_mje_status": status,
        "eval/ndtw_mje": float(np.nanmean(normalised)) if any(math.isfinite(v) for v in normalised) else math.nan,
        "eval/ndtw_mje_status": status + "; divided by the real poses' scale",
    }


def _nan(reason: str) -> dict[str, Any]:
    return not_computed(POSE_METRICS, reason)
