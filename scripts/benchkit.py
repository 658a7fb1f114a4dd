"""Shared pieces of the benchmark scripts: timing a cached dataset and writing results as JSON."""

from __future__ import annotations

import json
import os
import platform
import time
from typing import Any, Callable

import numpy as np


def time_cached_dataset(build: Callable[[], Any], batch_size: int, passes: int = 1) -> dict[str, float]:
    """Cold build (clips/s), warm open (ms) and shuffled `get_batch` passes over the cache (clips/s)."""
    t0 = time.perf_counter()
    build()
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ds = build()
    open_s = time.perf_counter() - t0
    n = len(ds)
    t0 = time.perf_counter()
    for p in range(passes):
        order = np.random.default_rng(p).permutation(n)
        for i in range(0, n, batch_size):
            ds.get_batch(order[i : i + batch_size].tolist())
    read_s = time.perf_counter() - t0
    return {
        "clips": n,
        "cold_s": cold_s,
        "cold_clips_per_s": n / cold_s,
        "warm_open_ms": open_s * 1e3,
        "warm_batch_size": batch_size,
        "warm_clips_per_s": n * passes / read_s,
        "cache_mb": ds.videos.nbytes / 2**20,
    }


def write_results(path: str, benchmark: str, rows: list[dict], **meta: Any) -> None:
    """`{"benchmark", machine facts, **meta, "results": rows}` as JSON at `path`."""
    machine = {
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    with open(path, "w") as f:
        json.dump({"benchmark": benchmark, **machine, **meta, "results": rows}, f, indent=2)
    print(f"wrote {path}")
