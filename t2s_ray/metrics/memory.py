"""Process and accelerator memory figures, in GiB; NaN where a figure does not exist."""

from __future__ import annotations

import math
import os
import resource
from functools import lru_cache
from typing import Any

import torch

GIB = float(2**30)


def cpu_rss_gb() -> float:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB
    except OSError:  # not Linux: fall back to the peak, the best figure available
        return cpu_rss_peak_gb()


def cpu_rss_peak_gb() -> float:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


@lru_cache(maxsize=1)
def _nvml_handle(index: int):
    """NVML handle of the CUDA device `index` as this process sees it, or None without NVML."""
    return nvml_handle_or_reason(index)[0]


@lru_cache(maxsize=1)
def nvml_handle_or_reason(index: int) -> tuple[Any, str]:
    """(NVML handle, "") of CUDA device `index` as this process sees it, or (None, why NVML is unusable).

    CUDA_VISIBLE_DEVICES entries are NVML indices or full `GPU-` UUIDs; the CUDA index picks one.
    """
    try:
        import pynvml
    except ImportError:
        return None, "nvidia-ml-py not installed"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    physical = ids[index] if index < len(ids) else str(index)
    try:
        pynvml.nvmlInit()
        if physical.startswith("GPU-"):
            return pynvml.nvmlDeviceGetHandleByUUID(physical), ""
        return pynvml.nvmlDeviceGetHandleByIndex(int(physical)), ""
    except pynvml.NVMLError_LibraryNotFound:
        return None, "driver library missing"
    except pynvml.NVMLError as exc:
        return None, f"NVML error for CUDA device {index} (NVML id {physical}): {exc}"
    except ValueError:
        return None, f"CUDA_VISIBLE_DEVICES entry {physical!r} is neither an NVML index nor a GPU- UUID"
    except Exception as exc:  # noqa: BLE001 - NVML failing only means no NVML figures
        return None, f"{type(exc).__name__}: {exc}"


def gpu_util(device: torch.device) -> float:
    """GPU utilisation in percent from NVML, NaN on CPU or without NVML."""
    if device.type != "cuda":
        return math.nan
    handle = _nvml_handle(device.index or 0)
    if handle is None:
        return math.nan
    import pynvml

    try:
        return float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except pynvml.NVMLError:  # e.g. not supported on MIG slices, or the GPU fell off the bus
        return math.nan


def memory_metrics(device: torch.device) -> dict[str, float]:
    """The `mem/*` keys a trial reports: allocator figures on CUDA (NaN on CPU) and process RSS."""
    if device.type == "cuda":
        gpu = {
            "mem/gpu_allocated_gb": torch.cuda.memory_allocated(device) / GIB,
            "mem/gpu_peak_gb": torch.cuda.max_memory_allocated(device) / GIB,
            "mem/gpu_reserved_gb": torch.cuda.memory_reserved(device) / GIB,
        }
    else:
        gpu = {k: math.nan for k in ("mem/gpu_allocated_gb", "mem/gpu_peak_gb", "mem/gpu_reserved_gb")}
    return {**gpu, "mem/gpu_util": gpu_util(device), "mem/cpu_rss_gb": cpu_rss_gb()}
