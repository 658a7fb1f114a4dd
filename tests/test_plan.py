"""The cost of a sweep before it runs: --cpus-per-trial auto, trials at once, the --dry-run estimate."""

import math

import pytest
from typer.testing import CliRunner

import t2s_ray.sweep as sweep
import t2s_ray.sweep.estimate as estimate_mod
import t2s_ray.t2s.sweep as spec_mod
from t2s_ray.cli import app
from t2s_ray.plan import Probe, TrainingGroup, auto_cpus, concurrency, cost_lines, estimate, pack
from t2s_ray.t2s.sweep import BundledSweepSpec

runner = CliRunner()


def test_auto_cpus_keeps_every_gpu_busy():
    assert auto_cpus(2, 3, 1, 3) == 0.66  # fewer CPUs than GPU trials: a fraction each, all three run
    assert concurrency(2, 3, 0.66, 1, 3) == 3 and concurrency(2, 3, 1.0, 1, 3) == 2
    assert auto_cpus(64, 8, 1, 24) == 4  # at most 4
    assert auto_cpus(12, 8, 1, 24) == 1.5
    assert auto_cpus(16, 1, 0.25, 6) == 4  # four packed trials share the GPU
    assert auto_cpus(2, 0, 1, 3) == 1 and auto_cpus(16, 0, 1, 3) == 4 and auto_cpus(8, 0, 1, 3) == 2  # CPU: whole
    with pytest.raises(ValueError, match="0 CPUs"):
        auto_cpus(0, 1, 1, 1)


def test_concurrency_limits():
    assert concurrency(16, 4, 4, 1, 9) == 4  # GPUs
    assert concurrency(8, 4, 4, 1, 9) == 2  # CPUs
    assert concurrency(64, 8, 1, 1, 3) == 3  # the grid
    assert concurrency(64, 8, 1, 1, 9, max_concurrent=2) == 2
    assert concurrency(4, 0, 1, 1, 9) == 4  # CPU trials ignore GPUs


def test_estimate_schedules_trials_greedily():
    est = estimate([10, 10, 20], at_once=2, devices_per_trial=1)
    assert (est.trials, est.waves, est.wall_s) == (3, 2, 30)  # 10 | 10, then 20 after the first 10
    assert est.device_hours == pytest.approx(40 / 3600)
    assert estimate([5] * 4, at_once=8, devices_per_trial=0.5).wall_s == 5
    with pytest.raises(ValueError, match="no trial fits"):
        estimate([1], at_once=0, devices_per_trial=1)


def test_cost_lines_arithmetic_with_a_fake_probe(tmp_path):
    spec = BundledSweepSpec(
        ablations=("baseline", "text_finetuned", "no_ema"), seeds=3, scale="full", storage=tmp_path, name="x"
    )
    groups = spec.training_groups()
    probes = {
        "baseline": Probe("baseline", "cuda:0", 0.5, 100.0),
        "text_finetuned": Probe("text_finetuned", "cuda:0", 0.75, 100.0),
    }
    lines = cost_lines(
        groups, probes, trials_per_group=3, steps=1000, at_once=3, devices_per_trial=1, device_kind="GPU"
    )
    # baseline + no_ema: 0.5 x 1000 + 2 evaluations x 100 = 700 s; text_finetuned: 750 + 100 = 850 s
    assert "baseline + no_ema" in lines[1] and "11m40s" in lines[1] and "14m10s" in lines[2]
    # 6 trials, 3 at once: 700 700 700 | 850 850 850 -> wall 700 + 850 = 1550 s; 3 x (700 + 850) s = 1.29 h
    assert "6 trial(s), 3 at once (2 wave(s)): wall ~25m50s, 1.29 GPU-hours" in lines[-1]


def test_dry_run_prints_the_plan_and_estimate_without_ray(tmp_path, monkeypatch):
    calls = []

    def fake_probe(cfg, steps, device=None, say=None, threads=None):
        calls.append((cfg.ablation, device))
        return Probe(cfg.ablation, device, 2.0, 30.0)

    monkeypatch.setattr(spec_mod, "probe", fake_probe)
    monkeypatch.setattr(estimate_mod, "detect_local_gpus", lambda: 3)
    monkeypatch.setattr(estimate_mod.os, "cpu_count", lambda: 2)
    r = runner.invoke(app, ["sweep", "--scale", "full", "--dry-run", "--storage", str(tmp_path), "--name", "x"])
    assert r.exit_code == 0, r.output
    assert "import ray" not in r.output and not (tmp_path / "x").exists()  # nothing started, nothing written
    assert calls == [("baseline", "cuda"), ("text_finetuned", "cuda")]  # one probe per distinct model
    assert "baseline + no_ema: trained once" in r.output
    assert "resources per trial: 0.66 CPU, 1 GPU; this machine: 2 CPUs, 3 GPUs -> 3 trial(s) at once" in r.output
    assert "6 trial(s), 3 at once (2 wave(s))" in r.output


def test_pack_by_measured_memory():
    assert pack(3.0, 80) == (17, 0.05)  # 3 x 1.25 + 0.75 = 4.5 GiB a trial
    assert pack(10.0, 80) == (6, 0.16)
    assert pack(50.0, 80) == (1, 1.0)
    with pytest.raises(ValueError, match="does not fit"):
        pack(70.0, 80)


def test_gpus_per_trial_auto_probes_each_model_and_packs(tmp_path, monkeypatch):
    peaks = {"baseline": 10.0, "text_finetuned": 14.0}
    monkeypatch.setattr(estimate_mod, "detect_local_gpus", lambda: 1)
    monkeypatch.setattr(
        spec_mod,
        "probe",
        lambda cfg, steps, device=None, say=None, threads=None: Probe(
            cfg.ablation, "cuda:0", 0.1, 1.0, peaks[cfg.ablation], 80.0
        ),
    )
    spec = BundledSweepSpec(
        ablations=("baseline", "text_finetuned", "no_ema"),
        seeds=1,
        gpus=1,
        pack_by_memory=True,
        storage=tmp_path,
        name="x",
    )
    said = []
    configs = sweep.validate(spec, available_gpus=1)
    probes = estimate_mod._pack_by_memory(spec, configs, said.append)
    assert set(probes) == {"baseline", "text_finetuned"}  # no_ema trains with baseline: not probed
    assert spec.gpus_per_trial == 0.25  # the larger peak: 14 x 1.25 + 0.75 = 18.25 GiB -> 4 per 80 GiB GPU
    assert "text_finetuned peaks at 14.00 GiB" in said[0] and "4 trial(s) fit" in said[0]
    peaks["text_finetuned"] = 70.0
    with pytest.raises(sweep.SweepError, match="text_finetuned: a trial needs ~88.2 GiB"):
        estimate_mod._pack_by_memory(spec, configs, said.append)


def test_gpus_per_trial_auto_needs_a_local_gpu_to_measure(tmp_path, monkeypatch):
    monkeypatch.setattr(estimate_mod, "detect_local_gpus", lambda: 0)
    spec = BundledSweepSpec(seeds=1, gpus=3, pack_by_memory=True, storage=tmp_path, name="x")
    with pytest.raises(sweep.SweepError, match="none is visible here; give a number instead"):
        estimate_mod._pack_by_memory(spec, [], print)
    cpu = BundledSweepSpec(seeds=1, gpus=0, pack_by_memory=True, storage=tmp_path, name="y")
    assert estimate_mod._pack_by_memory(cpu, [], print) == {} and cpu.gpus_per_trial == 1.0
    r = runner.invoke(app, ["sweep", "--gpus-per-trial", "lots", "--dry-run", "--storage", str(tmp_path)])
    assert r.exit_code == 2 and "--gpus-per-trial 'lots': expected auto or a number > 0" in r.output


def test_packed_trials_are_slowed_by_a_measured_pair_or_taken_as_gpu_bound(tmp_path):
    """Two trials on one GPU do not each run at full speed: the estimate at --gpus-per-trial 0.5 slows each
    trial by what a measured pair showed (here 0.8 s/step each vs 0.5 alone: x1.6), and, with no pair
    measured, by the number per GPU (GPU-bound: packing then saves no GPU-hours, and the lines say so)."""
    spec = BundledSweepSpec(ablations=("baseline", "text_finetuned"), seeds=1, scale="full", storage=tmp_path, name="x")
    groups = spec.training_groups()

    def lines_for(pair_s, gpus_per_trial):
        probes = {
            "baseline": Probe("baseline", "cuda:0", 0.5, 0.0, pair_step_s=pair_s),
            "text_finetuned": Probe("text_finetuned", "cuda:0", 0.5, 0.0, pair_step_s=pair_s),
        }
        at_once = int(1 / gpus_per_trial)
        return cost_lines(groups, probes, 1, 3600, at_once, gpus_per_trial, "GPU")

    alone = lines_for(float("nan"), 1.0)  # 2 trials x 1,800 s, one after the other on one GPU: 1.00 GPU-hours
    assert "1.00 GPU-hours" in alone[-1] and "wall ~1h00m" in alone[-1] and not any("packed" in x for x in alone)
    measured = lines_for(0.8, 0.5)  # side by side, each 0.8 x 3600 = 2,880 s: wall 48 min, 2 x 2880 x 0.5 = 0.80 h
    assert "x1.60 slower, from a measured pair (0.800 s/step each vs 0.500 alone)" in measured[-2]
    assert "wall ~48m00s, 0.80 GPU-hours" in measured[-1] and "packed trials slowed as above" in measured[-1]
    unmeasured = lines_for(float("nan"), 0.5)  # each x2: 3,600 s side by side -> the unpacked 1.00 GPU-hours
    assert "taken as x2 slower (packed speed not measured" in unmeasured[-2]
    assert "wall ~1h00m, 1.00 GPU-hours" in unmeasured[-1]
    host_bound = lines_for(0.45, 0.25)  # a pair no slower than one (host-bound): 4 per GPU -> x max(1, 4 x 0.45 / 1)
    assert "x1.80 slower" in host_bound[-2]


def test_packed_slowdown_edge_cases():
    from t2s_ray.plan import packed_slowdown, trials_per_gpu

    p = Probe("b", "cuda:0", 0.5, 0.0, pair_step_s=0.4)  # a pair faster than one alone (noise): never below x1
    assert packed_slowdown(p, 2)[0] == 1.0 and packed_slowdown(p, 1) == (1.0, "one trial per GPU")
    assert [trials_per_gpu(g) for g in (1.0, 2.0, 0.5, 0.33, 0.25)] == [1, 1, 2, 3, 4]
    cpu_lines = cost_lines([TrainingGroup("b", ("b",))], {"b": Probe("b", "cpu", 0.5, 0.0)}, 1, 10, 1, 0.5, "CPU")
    assert not any("packed" in line for line in cpu_lines)  # 0.5 CPUs a trial is no GPU packing


@pytest.mark.slow
def test_a_pair_of_probes_trains_at_once_in_two_processes(tmp_path):
    """measure_pair starts two copies of a trial, warm, at the same moment and returns their median step time
    (on this CPU the two share the cores, so the pair is no faster than one)."""
    from t2s_ray.t2s.ablations import resolve
    from t2s_ray.t2s.pair_probe import measure_pair

    cfg = resolve("baseline", "smoke", 0, ["device=cpu", f"data.cache_dir={tmp_path / 'cache'}", "data.train_clips=16"])
    from t2s_ray.data import build_dataset

    build_dataset(cfg.data, "train")  # rendered once, as the single probe does before the pair
    pair_s, status = measure_pair(cfg, 2, "cpu", timeout_s=300, threads=1)
    assert status.startswith("measured") and 0 < pair_s < 30, status
    bad = resolve("baseline", "smoke", 0, ["device=cpu", "text_encoder.path=/nonexistent-encoder"])
    pair_s, status = measure_pair(bad, 1, "cpu", timeout_s=120, threads=1)
    assert math.isnan(pair_s) and "failed to start" in status and "nonexistent-encoder" in status
