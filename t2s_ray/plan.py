"""What a sweep will cost before it runs: resources per trial (`--cpus-per-trial auto`), how many trials run at
once, and a wall-time / GPU-hour estimate from a short measured probe (`t2s-ray sweep --dry-run`).

The arithmetic (`auto_cpus`, `concurrency`, `estimate`) is pure; `probe` measures a few training steps and one
sampling step of a config on this machine's device.
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

AUTO_MAX_CPUS = 4
"""`--cpus-per-trial auto` never reserves more than this per trial: data loading and bookkeeping of one
trial keep about this many cores busy; more only idles."""


def auto_cpus(cluster_cpus: float, gpus: float, gpus_per_trial: float, n_trials: int) -> float:
    """CPUs per trial for `--cpus-per-trial auto`.

    GPU trials: `min(4, cluster CPUs / GPU trials that fit at once)`, a fraction (two decimals, rounded down)
    when CPUs are fewer than those trials, so that CPUs never keep a GPU idle. CPU trials: an integer, the
    cores shared among the trials (at least 1, at most 4).
    """
    if cluster_cpus <= 0:
        raise ValueError(f"the cluster reports {cluster_cpus:g} CPUs: no trial can be scheduled")
    if gpus > 0:
        at_once = max(1, min(n_trials, int(gpus / gpus_per_trial + 1e-9)))
        return min(float(AUTO_MAX_CPUS), math.floor(cluster_cpus / at_once * 100) / 100)
    return float(max(1, min(AUTO_MAX_CPUS, int(cluster_cpus // max(1, n_trials)))))


def concurrency(cluster_cpus: float, gpus: float, cpus_per_trial: float, gpus_per_trial: float, n_trials: int,
                max_concurrent: Optional[int] = None) -> int:
    """Trials that run at once: what the CPUs, the GPUs (when trials use them), the grid and the cap allow."""
    limits = [n_trials, int(cluster_cpus / cpus_per_trial + 1e-9)]
    if gpus > 0:
        limits.append(int(gpus / gpus_per_trial + 1e-9))
    if max_concurrent is not None:
        limits.append(max_concurrent)
    return max(0, min(limits))


@dataclass(frozen=True)
class Probe:
    """Measured cost of one training group's config on this machine."""

    trainer: str
    device: str
    step_s: float
    """Median wall time of one training step."""
    eval_s: float
    """Estimated wall time of one member's evaluation sampling (DDIM steps x batches x one guided step)."""
    peak_gib: float = math.nan
    """Peak GPU memory the torch allocator held over the training steps and the sampling (NaN on CPU)."""
    total_gib: float = math.nan
    """The GPU's memory (NaN on CPU)."""


MEMORY_MARGIN = 1.25
"""`--gpus-per-trial auto` reserves the probed peak times this (activations vary with captions, evaluation
batches, the allocator's fragmentation) ..."""
CONTEXT_GIB = 0.75
"""... plus this per trial: the CUDA context and kernels each process holds outside the torch allocator."""


def pack(peak_gib: float, total_gib: float) -> tuple[int, float]:
    """`--gpus-per-trial auto`: (trials per GPU, GPUs per trial) for trials peaking at `peak_gib` on a GPU of
    `total_gib`; the fraction is rounded down to two decimals so that the trials fit. ValueError when not one
    fits."""
    need = peak_gib * MEMORY_MARGIN + CONTEXT_GIB
    n = int(total_gib // need)
    if n < 1:
        raise ValueError(f"a trial needs ~{need:.1f} GiB ({peak_gib:.1f} GiB measured peak x {MEMORY_MARGIN} + "
                         f"{CONTEXT_GIB} GiB CUDA context) but the GPU has {total_gib:.1f} GiB: it does not fit; use a "
                         f"smaller model or batch, or --set model.grad_checkpointing=true")
    return n, 1.0 if n == 1 else math.floor(100 / n) / 100


@dataclass(frozen=True)
class Estimate:
    trials: int
    at_once: int
    waves: int
    wall_s: float
    """Greedy schedule of the trials (grid order, each to the first free slot): the longest slot."""
    device_hours: float
    """Sum of trial times x the devices each holds (GPUs per trial, or CPUs on a CPU sweep)."""


def trial_seconds(probe: Probe, steps: int, members: int) -> float:
    """One trial: its training steps, then one evaluation per member ablation."""
    return probe.step_s * steps + probe.eval_s * members


def estimate(durations: Sequence[float], at_once: int, devices_per_trial: float) -> Estimate:
    """Wall time and device-hours of trials of `durations` seconds, `at_once` at a time, in the given order."""
    if at_once < 1:
        raise ValueError("no trial fits on this cluster at once (check CPUs and GPUs per trial)")
    slots = [0.0] * min(at_once, max(1, len(durations)))
    for d in durations:
        heapq.heappush(slots, heapq.heappop(slots) + d)
    return Estimate(len(durations), at_once, math.ceil(len(durations) / at_once) if durations else 0,
                    max(slots), sum(durations) * devices_per_trial / 3600)


def probe(cfg, steps: int = 3, device=None, say: Callable[[str], None] = lambda s: None,
          threads: Optional[int] = None) -> Probe:
    """Measure `cfg` on `device` (default: the config's): median of `steps` training steps after one warm-up,
    and one guided sampling step of an evaluation batch, scaled to the evaluation's steps and batches.
    `threads`: torch's CPU threads meanwhile (a trial gets as many as the CPUs it reserves)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _probe(cfg, steps, device, say)
    finally:
        torch.set_num_threads(before)


def _probe(cfg, steps: int, device, say: Callable[[str], None]) -> Probe:
    import torch

    from t2s_ray.data import build_dataset
    from t2s_ray.metrics.efficiency import synchronize
    from t2s_ray.t2s.evaluation import sample
    from t2s_ray.t2s.training import build_state, time_train_steps

    say(f"probing {cfg.ablation}: {steps} training steps and one sampling step ...")
    state = build_state(cfg, device=torch.device(device) if device else None)
    cuda = state.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(state.device)
    data = build_dataset(cfg.data, "train")
    state.model.text_encoder.prefill(getattr(data, "texts", ()))  # as train_loop does
    times = time_train_steps(state, data, steps, warmup=1)
    e = cfg.eval
    one_step = replace(state, cfg=replace(cfg, eval=replace(e, sampling_steps=1)))
    texts = ["a person signs hello"] * min(e.batch_size, e.num_videos)
    sample(one_step, texts, 0)  # warm-up
    t0 = time.perf_counter()
    sample(one_step, texts, 0)
    synchronize(state.device)
    per_batch_step = time.perf_counter() - t0
    eval_s = per_batch_step * e.sampling_steps * math.ceil(e.num_videos / e.batch_size)
    peak = torch.cuda.max_memory_allocated(state.device) / 2**30 if cuda else math.nan
    total = torch.cuda.get_device_properties(state.device).total_memory / 2**30 if cuda else math.nan
    return Probe(cfg.ablation, str(state.device), statistics.median(times), eval_s, peak, total)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cost_lines(groups, probes: dict[str, Probe], trials_per_group: int, steps: int, at_once: int,
               devices_per_trial: float, device_kind: str, samplings_per_member: int = 1) -> list[str]:
    """The probe table and the estimate, as printed by `--dry-run` (and before a full-scale sweep); each group
    trains `trials_per_group` trials (its seeds x the --grid points) and samples each member's evaluation set
    `samplings_per_member` times (the guidance scales of `eval.guidance_scale`)."""
    lines = [f"{'training group':<34} {'device':<7} {'s/step':>8} {'eval s':>8} {'trial':>9}"]
    durations = []
    for g in groups:
        p = probes[g.trainer]
        trial = trial_seconds(p, steps, len(g.members) * samplings_per_member)
        durations += [trial] * trials_per_group
        lines.append(f"{' + '.join(g.members):<34} {p.device:<7} {p.step_s:>8.3f} {p.eval_s:>8.1f} {_hms(trial):>9}")
    est = estimate(durations, at_once, devices_per_trial)
    lines.append(f"estimate: {est.trials} trial(s), {est.at_once} at once ({est.waves} wave(s)): "
                 f"wall ~{_hms(est.wall_s)}, {est.device_hours:.2f} {device_kind}-hours (training steps x median "
                 "step time + evaluation sampling; start-up, metrics and checkpoints not included)")
    return lines
