"""Model FLOPs utilisation (MFU): FLOPs of one training step, counted by torch, over the device's peak.

FLOPs are what `torch.utils.flop_counter.FlopCounterMode`'s formulas count: matrix multiplies, convolutions and
attention (forward and backward), not element-wise ops or the optimizer's arithmetic. The peak is
the vendor's dense (no structured sparsity) tensor-core figure for the autocast dtype, so MFU is
comparable with published numbers (PaLM's definition, with torch's counts for the numerator).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

T = TypeVar("T")

# Dense TFLOP/s per device-name key: a key matches whole words of torch's device name ("-" reads as a space,
# case ignored; "A10" is not in "A100", "L4" not in "L40S") and the longest key found wins.
# from NVIDIA's datasheets: their tensor-core figures are quoted "with sparsity", dense is half of it.
# bf16/fp16: tensor cores with FP32 accumulate (what autocast uses); tf32: tensor cores; fp32: CUDA cores.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    # H200 datasheet (SXM | NVL): BF16/FP16 1,979* | 1,671*, TF32 989* | 835*, FP32 67 | 60
    "H200": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0},
    "H200 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    # GH200 datasheet: its Hopper GPU is rated as the H100/H200 SXM (BF16/FP16 1,979*, TF32 989*, FP32 67)
    "GH200": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0},
    # H100 datasheet (SXM | PCIe | NVL): BF16/FP16 1,979* | 1,513* | 1,671*, TF32 989* | 756* | 835*,
    # FP32 67 | 51 | 60. The SXM part reports itself as "H100 80GB HBM3".
    "H100 80GB HBM3": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0},
    "H100 SXM": {"bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67.0},
    "H100 PCIe": {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.0},
    "H100 NVL": {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
    # A100 datasheet (40/80 GB, SXM and PCIe alike): BF16/FP16 312 | 624*, TF32 156 | 312*, FP32 19.5
    "A100": {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
    # L40S datasheet: BF16/FP16 362.05 | 733*, TF32 183 | 366*, FP32 91.6
    "L40S": {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
    # L4 datasheet: BF16/FP16 242*, TF32 120*, FP32 30.3
    "L4": {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
    # A10 datasheet: BF16/FP16 125 | 250*, TF32 62.5 | 125*, FP32 31.2
    "A10": {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
    # Ada Lovelace architecture whitepaper, appendix A (GeForce RTX 4090): BF16/FP16 with FP32 accumulate
    # 165.2 | 330.4*, TF32 82.6 | 165.2*, FP32 82.6
    "RTX 4090": {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
    # V100 datasheet (SXM2 | PCIe | V100S PCIe): tensor FP16 125 | 112 | 130, FP32 15.7 | 14 | 16.4; no bf16, no tf32
    "V100 SXM2": {"fp16": 125.0, "fp32": 15.7},
    "V100 PCIe": {"fp16": 112.0, "fp32": 14.0},
    "V100S": {"fp16": 130.0, "fp32": 16.4},
}
NO_PEAK: dict[str, str] = {
    "A10G": "NVIDIA publishes no datasheet for the A10G (AWS's A10 variant, whose tensor throughput differs "
    "from the A10's)",
    "RTX 4090 D": "the Ada whitepaper rates the RTX 4090, not the cut-down RTX 4090 D",
}
"""Device-name keys known to have no vendor figure, with why (they must not fall back to a near name)."""

CPU_STATUS = "CPU run: no peak FLOP/s table entry"


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# torch counts the CUDA attention kernels but not the CPU one; the same formulas keep CPU and CUDA counts equal
_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


class _ObservingFlopCounter(TorchDispatchMode):
    """FlopCounterMode's formulas, applied to every op as it runs, without changing any op.

    FlopCounterMode itself decomposes every op it has no formula for into smaller ops, which changes the
    rounding of some gradients (a counted step of a resumed run no longer matched an uncounted one bit for
    bit), and hooks every module's backward. This mode runs each op exactly as asked and only adds up FLOPs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.registry = FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION).flop_registry
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.registry.get(func.overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """(`fn()`, FLOPs it ran, by FlopCounterMode's formulas): `fn` runs once, its ops unchanged (bit-identical)."""
    with _ObservingFlopCounter() as counter:
        result = fn()
    return result, int(counter.total)


def _dtype_key(dtype: torch.dtype | None) -> str:
    """Table column of the compute dtype; fp32 matmuls use TF32 tensor cores when torch allows it."""
    if dtype == torch.bfloat16:
        return "bf16"
    if dtype == torch.float16:
        return "fp16"
    if dtype in (None, torch.float32):
        return "fp32" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    raise ValueError(f"no peak FLOP/s column for dtype {dtype}; expected bfloat16, float16, float32 or None (fp32)")


def _words(name: str) -> str:
    return re.sub(r"[-_\s]+", " ", name.lower()).strip()


def peak_for_name(name: str, dtype: torch.dtype | None) -> tuple[float, str]:
    """(peak FLOP/s, status) of the GPU called `name` computing in `dtype` (None = fp32); NaN when unknown."""
    key = _dtype_key(dtype)
    matches = [k for k in (*PEAK_TFLOPS, *NO_PEAK) if re.search(rf"(?<![a-z0-9]){_words(k)}(?![a-z0-9])", _words(name))]
    if not matches:
        return math.nan, (
            f"no peak FLOP/s entry for {name!r} in t2s_ray/metrics/flops.py PEAK_TFLOPS; add its "
            f"dense {key} figure from the vendor datasheet"
        )
    best = max(matches, key=len)
    if best in NO_PEAK:
        return math.nan, f"{name}: {NO_PEAK[best]}"
    tflops = PEAK_TFLOPS[best].get(key)
    if tflops is None:
        return math.nan, f"{name} has no {key} tensor-core rate in its datasheet (fp32 has one)"
    return tflops * 1e12, f"ok ({name}: {tflops:g} TFLOP/s dense {key}, vendor datasheet)"


def device_peak_flops(device: torch.device | str, dtype: torch.dtype | None) -> tuple[float, str]:
    """(peak FLOP/s, status) of `device` computing in `dtype` (None = fp32): NaN with the reason off a known GPU."""
    device = torch.device(device)
    if device.type == "cpu":
        return math.nan, CPU_STATUS
    if device.type != "cuda":
        return math.nan, f"{device.type} device: the peak FLOP/s table covers NVIDIA GPUs only"
    return peak_for_name(torch.cuda.get_device_name(device), dtype)


def mfu(flops_per_step: float, step_time_s: float, peak: float) -> float:
    """Achieved FLOP/s (`flops_per_step / step_time_s`) as a fraction of `peak`; NaN without a peak or a time."""
    if not (step_time_s > 0 and peak > 0):  # also False for a NaN peak
        return math.nan
    return flops_per_step / step_time_s / peak


def flops_metrics(flops_per_step: int, steps: int, elapsed_s: float, peak: float, status: str) -> dict[str, Any]:
    """The `perf/*` keys of a report window: FLOPs per step, achieved TFLOP/s over the window, MFU and its status."""
    step_time = elapsed_s / steps if steps else math.nan
    return {
        "perf/flops_per_step": float(flops_per_step),
        "perf/tflops": flops_per_step / step_time / 1e12 if step_time > 0 else math.nan,
        "perf/mfu": mfu(flops_per_step, step_time, peak),
        "perf/mfu_status": status,
    }
