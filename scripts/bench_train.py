"""Training-step time and parameter counts per DiT size (frozen and finetuned text encoder).

Prints a table and writes JSON. No Ray: this is the per-step cost a trial pays.

    python scripts/bench_train.py --scale smoke --steps 10 --out bench_train.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from benchkit import write_results

from t2s_ray.data import build_dataset
from t2s_ray.metrics.efficiency import count_parameters, synchronize
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.models.sizes import DIT_SIZES
from t2s_ray.t2s.training import TrainState, build_state, next_batch, prefill_captions, time_train_steps


def bench(size: str, scale: str, ablation: str, steps: int, device: str, cache: str | None, extra: list[str]) -> dict:
    """First (cold) step time, median step time (after 2 warm-up steps), throughput, peak memory, parameters."""
    overrides = [f"model.size={size}", f"device={device}", *extra] + ([f"data.cache_dir={cache}"] if cache else [])
    cfg = resolve(ablation, scale, 0, overrides)
    state = build_state(cfg)
    data = build_dataset(cfg.data, "train")
    prefill_captions(state, data)
    cold = time_train_steps(state, data, 1, warmup=0)[0]  # the first step: compilation (training.compile), caches
    times = time_train_steps(state, data, steps)
    total, trainable = count_parameters(state.model)
    ms = 1000 * statistics.median(times)
    enc_ms = 1000 * statistics.median(time_encoder(state, data, steps))
    return {
        "size": size,
        "ablation": ablation,
        "scale": scale,
        "device": str(state.device),
        "batch": cfg.training.batch_size,
        "clip": f"{cfg.data.frames}x{cfg.data.height}x{cfg.data.width}",
        "cold_step_ms": 1000 * cold,
        "step_ms_median": ms,
        "samples_per_s": cfg.training.batch_size / (ms / 1000),
        "peak_gpu_gb": torch.cuda.max_memory_allocated(state.device) / 2**30 if state.device.type == "cuda" else None,
        "params_total_m": total / 1e6,
        "params_trainable_m": trainable / 1e6,
        "encoder_ms_median": enc_ms,
        "encoder_share": enc_ms / ms,
        "text_cache_size": cfg.text_encoder.cache_size,
    }


def time_encoder(state: TrainState, data, steps: int) -> list[float]:
    """Seconds the text encoder takes for each of `steps` further training batches' captions, as a step runs it
    (gradients only when it is finetuned; the frozen one answers from its cache)."""
    times = []
    for _ in range(steps):
        _, texts = next_batch(state, data)
        synchronize(state.device)
        t0 = time.perf_counter()
        with state.autocast, torch.set_grad_enabled(not state.model.text_encoder.frozen):
            state.model.encode(texts)
        synchronize(state.device)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", default="smoke")
    p.add_argument("--sizes", default=",".join(DIT_SIZES))
    p.add_argument("--ablations", default="baseline,text_finetuned")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--set", action="append", default=[], help="config override, e.g. model.grad_checkpointing=true")
    p.add_argument("--out", default="bench_train.json")
    a = p.parse_args()
    rows = [
        bench(size, a.scale, abl, a.steps, a.device, a.cache_dir, a.set)
        for size in a.sizes.split(",")
        for abl in a.ablations.split(",")
    ]
    head = (
        f"{'size':<9} {'ablation':<15} {'device':<7} {'clip':<9} {'B':>3} {'cold ms':>8} {'ms/step':>9} "
        f"{'samples/s':>10} {'peak GB':>8} {'total M':>8} {'train M':>8} {'enc ms':>7} {'enc %':>6}"
    )
    print(head)
    for r in rows:
        peak = f"{r['peak_gpu_gb']:.2f}" if r["peak_gpu_gb"] is not None else "n/a"
        print(
            f"{r['size']:<9} {r['ablation']:<15} {r['device']:<7} {r['clip']:<9} {r['batch']:>3} "
            f"{r['cold_step_ms']:>8.0f} {r['step_ms_median']:>9.1f} {r['samples_per_s']:>10.1f} {peak:>8} "
            f"{r['params_total_m']:>8.2f} "
            f"{r['params_trainable_m']:>8.2f} {r['encoder_ms_median']:>7.2f} {100 * r['encoder_share']:>6.2f}"
        )
    write_results(
        a.out,
        "train_step",
        rows,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        overrides=a.set,
    )


if __name__ == "__main__":
    main()
