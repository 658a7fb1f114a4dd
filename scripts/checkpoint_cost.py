"""What a checkpoint weighs, piece by piece, and how long it takes to write, per scale and ablation.

    python scripts/checkpoint_cost.py --out bench_checkpoint.json [--scales smoke small full]

For each (scale, ablation) it builds the training state on CPU (no step is trained: every piece already has
its final size, except Adam's moments, which are counted at their size after the first step), splits the
state dict into its pieces (denoiser, finetuned text encoder, their EMA shadows and Adam moments, the rest),
and times `training.save_state` (torch.save, sha256, fsync, rename) into a temporary folder on this disk, the
median of `--repeats` writes. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from benchkit import write_results

from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.training import build_state, save_state


def _mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)) / 2**20


def _adam_moments_after_a_step(state) -> None:
    """Give every trainable parameter the Adam state a step creates (zero grads: the weights barely move)."""
    for p in state.model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    state.optimizer.step()
    state.optimizer.zero_grad(set_to_none=True)


def pieces(state) -> dict[str, float]:
    """MB of each piece of the checkpoint's state dict."""
    sd = state.state_dict()
    model, ema = sd["model"], sd["ema"].get("shadow", {})
    text = [k for k in model if k.startswith("text_encoder.")]
    by_group: dict[str, list] = {}
    for group in state.optimizer.param_groups:
        for p in group["params"]:
            moments = state.optimizer.state.get(p, {})
            by_group.setdefault(group["name"], []).extend(v for k, v in moments.items() if k != "step")
    return {
        "denoiser_mb": _mb(v for k, v in model.items() if k not in text),
        "text_encoder_mb": _mb(model[k] for k in text),
        "ema_denoiser_mb": _mb(v for k, v in ema.items() if not k.startswith("text_encoder.")),
        "ema_text_encoder_mb": _mb(v for k, v in ema.items() if k.startswith("text_encoder.")),
        "adam_denoiser_mb": _mb(by_group.get("dit", [])),
        "adam_text_encoder_mb": _mb(by_group.get("text_encoder", [])),
        "rest_mb": _mb(list(sd["rng"].values())),
    }


def measure(scale: str, ablation: str, repeats: int) -> dict:
    cfg = resolve(ablation, scale=scale, seed=0, overrides=("device=cpu",))
    state = build_state(cfg, torch.device("cpu"))
    _adam_moments_after_a_step(state)
    row = {"scale": scale, "ablation": ablation, "model_size": cfg.model.size, **pieces(state)}
    times = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for i in range(repeats):
            t0 = time.perf_counter()
            save_state(state, Path(tmp) / f"checkpoint_{i:06d}")
            times.append(time.perf_counter() - t0)
        row["file_mb"] = (Path(tmp) / "checkpoint_000000" / "state.pt").stat().st_size / 2**20
    row["write_s"] = statistics.median(times)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scales", nargs="+", default=["smoke", "small", "full"])
    p.add_argument("--ablations", nargs="+", default=["baseline", "text_finetuned", "no_ema"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="bench_checkpoint.json")
    args = p.parse_args()
    rows = [measure(s, a, args.repeats) for s in args.scales for a in args.ablations]
    cols = [
        "scale",
        "ablation",
        "model_size",
        "denoiser_mb",
        "text_encoder_mb",
        "ema_denoiser_mb",
        "ema_text_encoder_mb",
        "adam_denoiser_mb",
        "adam_text_encoder_mb",
        "rest_mb",
        "file_mb",
        "write_s",
    ]
    print(" | ".join(cols))
    for r in rows:
        print(
            " | ".join(
                f"{r[c]:.1f}"
                if isinstance(r[c], float) and c != "write_s"
                else f"{r[c]:.2f}"
                if c == "write_s"
                else str(r[c])
                for c in cols
            )
        )
    write_results(args.out, "checkpoint_cost", rows, repeats=args.repeats)


if __name__ == "__main__":
    main()
