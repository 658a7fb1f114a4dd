"""FLOP counting, the peak table and `perf/*` in trial reports (CPU; a known model gives exact counts)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from t2s_ray.metrics import flops
from t2s_ray.metrics.flops import count_flops, device_peak_flops, flops_metrics, mfu, peak_for_name
from t2s_ray.t2s import training
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.training import build_state, train_loop
from tests.helpers import Clips, tiny_overrides

TINY = tiny_overrides(
    "data.train_clips=8",
    "model.size=dit-tiny",
    "model.patch_size=4",
    "training.warmup_steps=1",
    drop=("eval.num_videos", "eval.sampling_steps", "eval.evaluator_clips", "eval.evaluator_epochs"),
)


def test_linear_train_step_is_six_b_in_out():
    b, n_in, n_out = 8, 16, 32
    layer = nn.Linear(n_in, n_out)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = torch.randn(b, n_in, requires_grad=True)

    def step():
        opt.zero_grad()
        loss = layer(x).square().mean()
        loss.backward()
        opt.step()
        return loss.detach()

    loss, counted = count_flops(step)
    # forward 2*B*in*out; backward twice that (grad of the input and of the weight)
    assert counted == 6 * b * n_in * n_out
    assert torch.isfinite(loss)


def test_cpu_attention_is_counted_like_the_cuda_kernels():
    b, h, s, d = 2, 4, 16, 8
    q = torch.randn(b, h, s, d, requires_grad=True)
    _, forward = count_flops(lambda: F.scaled_dot_product_attention(q, q, q))
    assert forward == 4 * b * h * s * s * d  # QK^T and PV, 2 FLOPs per multiply-add
    _, both = count_flops(lambda: F.scaled_dot_product_attention(q, q, q).sum().backward())
    assert both == forward + forward * 5 // 2  # torch's backward formula: 5 matmuls (scores recomputed)


def test_counts_match_flop_counter_mode():
    torch.manual_seed(0)
    net = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 32), nn.SiLU(), nn.Linear(32, 16))
    x = torch.randn(4, 16)
    fn = lambda: net(x).square().mean().backward()  # noqa: E731
    with FlopCounterMode(display=False) as reference:
        fn()
    assert count_flops(fn)[1] == reference.get_total_flops() > 0


def test_mfu_arithmetic():
    assert mfu(2e12, 0.5, 8e12) == pytest.approx(0.5)
    assert math.isnan(mfu(2e12, 0.5, math.nan))
    assert math.isnan(mfu(2e12, 0.0, 8e12))
    m = flops_metrics(10**12, steps=4, elapsed_s=2.0, peak=4e12, status="ok")
    assert m["perf/tflops"] == pytest.approx(2.0)
    assert m["perf/mfu"] == pytest.approx(0.5)
    assert m["perf/mfu_status"] == "ok"


def test_peak_is_nan_with_a_reason_on_cpu_and_unknown_gpus():
    peak, status = device_peak_flops(torch.device("cpu"), torch.bfloat16)
    assert math.isnan(peak) and status == "CPU run: no peak FLOP/s table entry"
    peak, status = peak_for_name("NVIDIA Imaginary X1", torch.bfloat16)
    assert math.isnan(peak) and "PEAK_TFLOPS" in status
    peak, status = peak_for_name("NVIDIA A10G", torch.bfloat16)  # must not borrow the A10's figure
    assert math.isnan(peak) and "A10G" in status
    assert math.isnan(peak_for_name("Tesla V100-SXM2-16GB", torch.bfloat16)[0])  # no bf16 tensor cores


def test_peak_table_matches_whole_names():
    assert peak_for_name("NVIDIA H100 80GB HBM3", torch.bfloat16)[0] == 989.5e12
    assert peak_for_name("NVIDIA H100 PCIe", torch.bfloat16)[0] == 756.5e12
    assert peak_for_name("NVIDIA H200", torch.bfloat16)[0] == 989.5e12
    assert peak_for_name("NVIDIA A100-SXM4-80GB", torch.bfloat16)[0] == 312e12
    assert peak_for_name("NVIDIA L40S", torch.bfloat16)[0] == 362.05e12  # not the L4's
    assert math.isnan(peak_for_name("NVIDIA RTX A1000", torch.bfloat16)[0])  # not the A100's
    assert peak_for_name("Tesla V100-PCIE-32GB", torch.float16)[0] == 112e12
    assert set(flops.PEAK_TFLOPS).isdisjoint(flops.NO_PEAK)


def _losses_and_reports(cfg, text_encoder, counted: bool, monkeypatch):
    if not counted:
        monkeypatch.setattr(training, "count_flops", lambda fn: (fn(), 1))
    state = build_state(cfg, text_encoder=text_encoder)
    reports = []
    train_loop(state, Clips.random(), lambda m, _: reports.append(m), stop_at=2)
    # a resumed call counts step 3: adaLN-Zero's weights are no longer zero, so every gradient path is live
    train_loop(state, Clips.random(), lambda m, _: reports.append(m))
    monkeypatch.undo()
    return reports, state


def test_train_loop_reports_perf_and_counting_changes_nothing(text_encoder, monkeypatch, tmp_path):
    cfg = resolve("baseline", "smoke", 0, [*TINY, f"data.cache_dir={tmp_path}"])
    counted, state = _losses_and_reports(cfg, text_encoder, True, monkeypatch)
    plain, plain_state = _losses_and_reports(cfg, text_encoder, False, monkeypatch)
    assert [r["loss"] for r in counted] == [r["loss"] for r in plain]
    for key, value in state.model.state_dict().items():
        assert torch.equal(value, plain_state.model.state_dict()[key]), key
    for r in counted:
        assert r["perf/flops_per_step"] > 0 and r["perf/tflops"] > 0
        assert math.isnan(r["perf/mfu"]) and r["perf/mfu_status"] == "CPU run: no peak FLOP/s table entry"


def test_train_loop_mfu_is_tflops_over_the_peak(text_encoder, monkeypatch, tmp_path):
    monkeypatch.setattr(training, "device_peak_flops", lambda device, dtype: (1e9, "ok (test peak)"))
    cfg = resolve("baseline", "smoke", 0, tiny_overrides(f"data.cache_dir={tmp_path}", "training.steps=2", base=TINY))
    state = build_state(cfg, text_encoder=text_encoder)
    reports = []
    train_loop(state, Clips.random(), lambda m, _: reports.append(m))
    assert [r["step"] for r in reports] == [1, 2]  # step 1 is always reported, then the cadence (here the end)
    for r in reports:
        assert r["perf/mfu"] == pytest.approx(r["perf/tflops"] * 1e12 / 1e9)
        assert r["perf/mfu_status"] == "ok (test peak)"
