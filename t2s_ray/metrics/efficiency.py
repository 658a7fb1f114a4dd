"""Inference time, inference peak memory, parameter counts, and moving tensors to a device without waiting."""

from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn

from t2s_ray.metrics.memory import GIB


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock time covers the work, not just its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`x` on `device`; to CUDA from pinned memory with `non_blocking=True`, so the host does not wait for the
    copy (it is ordered on the stream before the kernels that read it)."""
    if device.type != "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)


def time_inference(fn: Callable[[], Any], device: torch.device, warmup: int = 1, runs: int = 3) -> dict:
    """Wall-clock milliseconds of `fn()`: `warmup` untimed calls, then `runs` timed ones.

    Returns {"ms_median": median, "ms_all": [ms per timed run]}; on CUDA each run is bracketed by synchronize.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000)
    return {"ms_median": statistics.median(times), "ms_all": times}


def peak_inference_memory_gb(fn: Callable[[], Any], device: torch.device) -> tuple[float, str]:
    """(GiB that `fn()` allocates on `device` at its peak, beyond what was allocated before, status).

    NaN with a status off CUDA. What was allocated before (weights, optimizer state, an EMA shadow)
    is left out, so every arm is measured the same way whatever it keeps resident. It resets CUDA's
    peak counter, so read any training peak (`mem/gpu_peak_gb`) before calling this.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return math.nan, "CPU run: no accelerator memory to measure"
    if device.type != "cuda":
        return math.nan, f"{device.type} device: peak memory is measured on CUDA only"
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / GIB, "ok (increase over what was allocated before)"


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; shared parameters count once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
