"""Inference timing, peak memory and parameter counts."""

import math
import time

import pytest
import torch
from torch import nn

from t2s_ray.metrics.efficiency import count_parameters, peak_inference_memory_gb, time_inference

CPU = torch.device("cpu")


def test_timing_median_covers_the_work_and_excludes_warmup():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)

    result = time_inference(fn, CPU, warmup=2, runs=3)
    assert len(calls) == 5
    assert len(result["ms_all"]) == 3
    assert result["ms_median"] >= 10.0
    assert result["ms_median"] == sorted(result["ms_all"])[1]


def test_timing_rejects_zero_runs():
    with pytest.raises(ValueError, match="runs"):
        time_inference(lambda: None, CPU, runs=0)


def test_cpu_peak_memory_is_nan_with_status():
    calls = []
    value, status = peak_inference_memory_gb(lambda: calls.append(1), CPU)
    assert math.isnan(value)
    assert status == "CPU run: no accelerator memory to measure"
    assert not calls  # nothing to measure, nothing run


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_sees_the_allocation():
    device = torch.device("cuda")
    value, status = peak_inference_memory_gb(lambda: torch.empty(2**28, dtype=torch.uint8, device=device), device)
    assert status.startswith("ok")
    assert 0.25 <= value < 0.3  # the allocation, not what was resident before


def test_parameter_counts_with_a_frozen_layer():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == (4 * 3 + 3 + 3 * 2 + 2, 3 * 2 + 2)
