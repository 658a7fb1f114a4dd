"""What a sweep will cost before it runs: resources per trial (`--cpus-per-trial auto`), how many trials run at
once, and a wall-time / GPU-hour estimate from a short measured probe (`t2s-ray sweep --dry-run`).

The arithmetic (`auto_cpus`, `concurrency`, `estimate`, `cost_lines`) is pure; each study's sweep measures its own
`Probe` (the bundled study's: `t2s_ray.t2s.sweep.probe`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import Optional, Sequence


@dataclass(frozen=True)
class TrainingGroup:
    """Ablations that train the same weights: one trial trains `trainer`'s config once and scores every member
    from it (for the bundled study: the EMA for members with EMA on, the raw weights for the others)."""

    trainer: str
    """The ablation whose config the group trains with (a member with EMA on, when any has it)."""
    members: tuple[str, ...]
    """Every ablation of the group, in sweep order (the trainer among them)."""

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(m for m in self.members if m != self.trainer)


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


def concurrency(
    cluster_cpus: float,
    gpus: float,
    cpus_per_trial: float,
    gpus_per_trial: float,
    n_trials: int,
    max_concurrent: Optional[int] = None,
) -> int:
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
    pair_step_s: float = math.nan
    """Median step time of each of two copies of this trial training at once on one GPU, in two processes as
    packed trials run (NaN: not measured; `--gpus-per-trial` below 1 on a machine with a GPU measures it)."""


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
        raise ValueError(
            f"a trial needs ~{need:.1f} GiB ({peak_gib:.1f} GiB measured peak x {MEMORY_MARGIN} + "
            f"{CONTEXT_GIB} GiB CUDA context) but the GPU has {total_gib:.1f} GiB: it does not fit; use a "
            f"smaller model or batch, or --set model.grad_checkpointing=true"
        )
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


def packed_slowdown(probe: Probe, per_gpu: int) -> tuple[float, str]:
    """(factor, how it was found) by which a trial's step time grows when `per_gpu` trials share one GPU.

    Packed trials are separate processes whose kernels the GPU time-slices: a trial that keeps the GPU busy a
    share g of its step time t1 alone runs at max(t1, k * g * t1) beside k - 1 others. A measured pair (two
    copies at once, each at t2 a step) gives g = t2 / (2 * t1) when the GPU is the bottleneck (t2 > t1), an
    upper bound otherwise, so the factor max(1, k * t2 / (2 * t1)) is the pair's own at k = 2 and never
    optimistic beyond it. Without a pair the trials are taken as GPU-bound: k trials each k times slower, so
    packing saves no GPU-hours (the estimate says so)."""
    if per_gpu <= 1:
        return 1.0, "one trial per GPU"
    if math.isfinite(probe.pair_step_s) and probe.step_s > 0:
        factor = max(1.0, per_gpu * probe.pair_step_s / (2 * probe.step_s))
        return factor, (
            f"{per_gpu} trials per GPU: each x{factor:.2f} slower, from a measured pair "
            f"({probe.pair_step_s:.3f} s/step each vs {probe.step_s:.3f} alone)"
        )
    return float(per_gpu), (
        f"{per_gpu} trials per GPU: each taken as x{per_gpu} slower (packed speed not measured: no GPU here to "
        "run a pair on; GPU-bound trials time-slice the GPU)"
    )


def trials_per_gpu(gpus_per_trial: float) -> int:
    """Trials that share one GPU at `gpus_per_trial` (1 for a whole GPU or more)."""
    return max(1, int(1 / gpus_per_trial + 1e-9)) if 0 < gpus_per_trial < 1 else 1


def trial_seconds(probe: Probe, steps: int, members: int, slowdown: float = 1.0) -> float:
    """One trial: its training steps, then one evaluation per member ablation (`slowdown`: packed on a GPU)."""
    return (probe.step_s * steps + probe.eval_s * members) * slowdown


def estimate(durations: Sequence[float], at_once: int, devices_per_trial: float) -> Estimate:
    """Wall time and device-hours of trials of `durations` seconds, `at_once` at a time, in the given order."""
    if at_once < 1:
        raise ValueError("no trial fits on this cluster at once (check CPUs and GPUs per trial)")
    slots = [0.0] * min(at_once, max(1, len(durations)))
    for d in durations:
        heapq.heappush(slots, heapq.heappop(slots) + d)
    return Estimate(
        len(durations),
        at_once,
        math.ceil(len(durations) / at_once) if durations else 0,
        max(slots),
        sum(durations) * devices_per_trial / 3600,
    )


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cost_lines(
    groups,
    probes: dict[str, Probe],
    trials_per_group: int,
    steps: int,
    at_once: int,
    devices_per_trial: float,
    device_kind: str,
    samplings_per_member: int = 1,
) -> list[str]:
    """The probe table and the estimate, as printed by `--dry-run` (and before a full-scale sweep); each group
    trains `trials_per_group` trials (its seeds x the --grid points) and samples each member's evaluation set
    `samplings_per_member` times (the guidance scales of `eval.guidance_scale`)."""
    per_gpu = trials_per_gpu(devices_per_trial) if device_kind == "GPU" else 1
    lines = [f"{'training group':<34} {'device':<7} {'s/step':>8} {'eval s':>8} {'trial':>9}"]
    durations, packing = [], []
    for g in groups:
        p = probes[g.trainer]
        slowdown, how = packed_slowdown(p, per_gpu)
        trial = trial_seconds(p, steps, len(g.members) * samplings_per_member, slowdown)
        durations += [trial] * trials_per_group
        lines.append(f"{' + '.join(g.members):<34} {p.device:<7} {p.step_s:>8.3f} {p.eval_s:>8.1f} {_hms(trial):>9}")
        if per_gpu > 1:
            packing.append(f"  packed, {' + '.join(g.members)}: {how}")
    lines += packing
    est = estimate(durations, at_once, devices_per_trial)
    lines.append(
        f"estimate: {est.trials} trial(s), {est.at_once} at once ({est.waves} wave(s)): "
        f"wall ~{_hms(est.wall_s)}, {est.device_hours:.2f} {device_kind}-hours (training steps x median "
        "step time + evaluation sampling"
        + (", packed trials slowed as above" if per_gpu > 1 else "")
        + "; start-up, metrics and checkpoints not included)"
    )
    return lines
