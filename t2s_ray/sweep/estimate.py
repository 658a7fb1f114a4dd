"""Resources and cost of the plan: `--cpus-per-trial auto`, `--gpus-per-trial auto` (packing by probed memory),
the estimate printed before a `full` sweep and `--dry-run`."""

from __future__ import annotations

import os
from typing import Callable

from t2s_ray.cluster import (
    detect_local_gpus,
)
from t2s_ray.plan import (
    AUTO_MAX_CPUS,
    CONTEXT_GIB,
    MEMORY_MARGIN,
    Probe,
    auto_cpus,
    concurrency,
    cost_lines,
    pack,
)
from t2s_ray.sweep.spec import SweepError, SweepSpec, n_trials


def _choose_cpus(spec: SweepSpec, say: Callable[[str], None]) -> None:
    """`--cpus-per-trial auto`: from the CPUs of the running cluster (see `plan.auto_cpus`)."""
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0))
    gpus = spec.gpus or 0.0
    spec.cpus_per_trial = auto_cpus(cpus, gpus, spec.gpus_per_trial, n_trials(spec))
    why = (
        f"{cpus:g} CPUs shared by the GPU trials that fit at once, at most {AUTO_MAX_CPUS}"
        if gpus > 0
        else f"{cpus:g} CPUs shared by {n_trials(spec)} CPU trial(s), at most {AUTO_MAX_CPUS}"
    )
    say(f"--cpus-per-trial auto: {spec.cpus_per_trial:g} ({why})")


def _pack_by_memory(spec: SweepSpec, configs, say: Callable[[str], None]) -> dict[str, Probe]:
    """`--gpus-per-trial auto`: probe each distinct model on this machine's GPU and pack by the largest peak."""
    local = detect_local_gpus()
    if (spec.gpus if spec.gpus is not None else local) == 0:
        spec.gpus_per_trial = 1.0  # CPU trials: nothing to pack
        return {}
    if local == 0:
        raise SweepError(
            "--gpus-per-trial auto measures a trial's peak memory on this machine's GPU, and none is "
            "visible here; give a number instead, e.g. --gpus-per-trial 0.5"
        )
    probes = spec.probes(configs, "cuda", say, threads=1)
    worst = max(probes.values(), key=lambda p: p.peak_gib)
    try:
        n, spec.gpus_per_trial = pack(worst.peak_gib, worst.total_gib)
    except ValueError as e:
        raise SweepError(f"--gpus-per-trial auto: {worst.trainer}: {e}") from None
    say(
        f"--gpus-per-trial auto: {spec.gpus_per_trial:g} ({worst.trainer} peaks at {worst.peak_gib:.2f} GiB; with "
        f"x{MEMORY_MARGIN} + {CONTEXT_GIB} GiB each, {n} trial(s) fit in the GPU's {worst.total_gib:.1f} GiB)"
    )
    return probes


def _print_estimate(spec: SweepSpec, configs, say: Callable[[str], None], probes: dict[str, Probe]) -> None:
    import ray

    gpus, cpus = spec.gpus or 0.0, float(ray.cluster_resources().get("CPU", 1))
    at_once = concurrency(cpus, gpus, spec.cpus_per_trial, spec.gpus_per_trial, n_trials(spec), spec.max_concurrent)
    device = "cuda" if gpus and detect_local_gpus() else "cpu"
    probes = probes or spec.probes(configs, device, say, threads=max(1, int(spec.cpus_per_trial)))
    probes = _with_pairs(spec, configs, probes, device, gpus, say, max(1, int(spec.cpus_per_trial)))
    for line in _cost_lines(spec, configs, probes, at_once, spec.cpus_per_trial, gpus):
        say(line)


def dry_run(spec: SweepSpec, say: Callable[[str], None] = print, probe_steps: int = 3) -> None:
    """Print the plan and its estimated cost without starting Ray or training (`t2s-ray sweep --dry-run`).

    The cluster is this machine (its CPUs and GPUs) unless --address is given, whose resources are unknown
    without joining it: then --gpus and the CPUs given per trial are taken as they are.
    """
    configs = spec.validate(available_gpus=None if spec.address else detect_local_gpus())
    for line in spec.plan_lines():
        say(line)
    gpus = spec.gpus if spec.gpus is not None else detect_local_gpus()
    probes = _pack_by_memory(spec, configs, say) if spec.pack_by_memory and gpus else {}
    cpus = float(os.cpu_count() or 1)
    trials = n_trials(spec)
    cpus_per_trial = spec.cpus_per_trial or auto_cpus(cpus, gpus, spec.gpus_per_trial, trials)
    at_once = concurrency(cpus, gpus, cpus_per_trial, spec.gpus_per_trial, trials, spec.max_concurrent)
    where = "this machine" if spec.address is None else f"the cluster at {spec.address} (assumed like this machine)"
    say(
        f"resources per trial: {cpus_per_trial:g} CPU"
        + (f", {spec.gpus_per_trial:g} GPU" if gpus else "")
        + f"; {where}: {cpus:g} CPUs, {gpus:g} GPUs -> {at_once} trial(s) at once"
    )
    device = "cuda" if gpus and detect_local_gpus() else "cpu"
    probes = probes or spec.probes(configs, "cuda" if gpus else "cpu", say, max(1, int(cpus_per_trial)), probe_steps)
    probes = _with_pairs(spec, configs, probes, device, gpus, say, max(1, int(cpus_per_trial)))
    for line in _cost_lines(spec, configs, probes, at_once, cpus_per_trial, gpus):
        say(line)


def _with_pairs(spec: SweepSpec, configs, probes, device: str, gpus: float, say, threads: int) -> dict[str, Probe]:
    """Packed trials (`--gpus-per-trial` below 1) on a machine with a GPU: each trainer's pair measured."""
    if not gpus or spec.gpus_per_trial >= 1 or device != "cuda":
        return probes
    return spec.pair_probes(configs, probes, device, say, threads)


def _cost_lines(
    spec: SweepSpec, configs, probes: dict[str, Probe], at_once: int, cpus_per_trial: float, gpus: float
) -> list[str]:
    """`plan.cost_lines` for this sweep: each group's trials (seeds x grid points), in GPU- or CPU-hours, with
    the evaluation's samplings per member; each group's time per step alone when a trial's steps are unknown."""
    steps = spec.trial_steps(configs)
    if steps is None:
        return [
            *(
                f"  {' + '.join(g.members)}: {probes[g.trainer].step_s:.3f} s/step on {probes[g.trainer].device}"
                for g in spec.training_groups()
            ),
            "estimate: not available, the study does not say which config field holds its steps: give "
            "Study(steps='train.steps') (your field's path)",
        ]
    return cost_lines(
        spec.training_groups(),
        probes,
        spec.seeds * spec.grid_points,
        steps,
        at_once,
        spec.gpus_per_trial if gpus else cpus_per_trial,
        "GPU" if gpus else "CPU",
        samplings_per_member=spec.samplings_per_member(configs),
    )
