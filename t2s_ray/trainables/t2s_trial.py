"""The function trainable: one (ablation, seed) per trial, reported and checkpointed through Tune."""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray import tune
from tensorboardX import SummaryWriter

from t2s_ray.ablations import resolve_params
from t2s_ray.config import Config
from t2s_ray.data import build_dataset, check_visible
from t2s_ray.data.video import save_gif
from t2s_ray.evaluation import evaluate
from t2s_ray.io import atomic_path
from t2s_ray.metrics.efficiency import count_parameters
from t2s_ray.metrics.memory import cpu_rss_peak_gb
from t2s_ray.metrics.sampler import CSV_NAME as SAMPLER_CSV
from t2s_ray.metrics.sampler import MemorySampler
from t2s_ray.outputs import SAMPLES_KEPT, samples_npz, shared_key
from t2s_ray.persist import artifact_dir, report_with_checkpoint, restore_newest, trial_storage_dir
from t2s_ray.runner import node_facts
from t2s_ray.training import (
    TrainingError,
    TrainState,
    build_state,
    load_state,
    member_state,
    save_state,
    train_loop,
    validation_loss,
)

log = logging.getLogger(__name__)


def trial_device(cfg: Config, gpu_ids: list) -> torch.device:
    """The device Ray assigned: its GPU under `auto`/`cuda`, CPU under `device=cpu` or with no GPU."""
    if cfg.device == "cpu":
        return torch.device("cpu")
    if gpu_ids and not torch.cuda.is_available():
        raise TrainingError(
            f"trial {cfg.ablation} seed {cfg.seed} was assigned GPU {','.join(map(str, gpu_ids))} but CUDA is not "
            f"available in the worker (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); "
            f"install a CUDA build of torch, or run on CPU with --gpus 0 or --set device=cpu")
    if cfg.device == "cuda" and not gpu_ids:
        raise TrainingError("device=cuda but Ray assigned this trial no GPU; use --gpus-per-trial > 0")
    return torch.device("cuda", 0) if gpu_ids else torch.device("cpu")


def _final_metrics(state: TrainState, last_loss: float) -> tuple[dict[str, Any], Any]:
    """Metrics of the finished trial: losses, size, time, memory and every `eval/*` metric."""
    total, trainable = count_parameters(state.model)
    val = build_dataset(state.cfg.data, "val")
    # mem/gpu_peak_gb (training peak) is already in the last training report: evaluation resets the counter
    metrics = {
        "final": 1,
        "final_loss": last_loss,
        "val_loss": validation_loss(state, val, max_clips=state.cfg.eval.num_videos * 4),
        "params/total_m": total / 1e6,
        "params/trainable_m": trainable / 1e6,
        "params/text_encoder_change": state.model.text_encoder.relative_change(),
        "train_time_h": state.train_time_s / 3600,
        "mem/gpu_peak_gb_status": "ok" if state.device.type == "cuda" else "CPU run: no GPU memory to measure",
        "mem/cpu_rss_peak_gb": cpu_rss_peak_gb(),
    }
    result = evaluate(state, val)
    metrics.update(result.metrics)
    return metrics, result


def _save_samples(result, folder: Path, step: int, member: str | None = None) -> list[Path]:
    """The evaluation's generated clips with their captions: a GIF, the clips themselves beside the real
    clips of the same prompts (`samples.npz`, for the report's side-by-side view), and an image in
    TensorBoard. A shared trial's `member` gets `samples-<member>.*` and its own TensorBoard tags.
    Returns the files written."""
    n = min(SAMPLES_KEPT, len(result.texts))
    npz = folder / samples_npz(member)
    gif = npz.with_suffix(".gif")
    save_gif(gif, result.videos[:n], result.texts[:n])
    arrays = {"fake": result.videos[:n], "texts": np.array(result.texts[:n])}
    if result.real is not None:
        arrays["real"] = result.real[:n]
    with atomic_path(npz, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    # one row per clip, its frames left to right (TensorBoard video needs moviepy; an image does not)
    grid = np.concatenate([np.concatenate(list(clip), axis=1) for clip in result.videos[:n]], axis=0)
    tag = "eval" if member is None else f"eval/{member}"
    with SummaryWriter(str(folder), filename_suffix=".samples") as writer:
        writer.add_image(f"{tag}/samples", grid, global_step=step, dataformats="HWC")
        writer.add_text(f"{tag}/sample_captions", "\n\n".join(f"{i}. {t}" for i, t in enumerate(result.texts[:n])),
                        global_step=step)
    return [gif, npz]


def _member_configs(params: dict[str, Any]) -> list[Config]:
    """The other ablations this trial's training serves (`shared` in the params), resolved for its seed."""
    return [resolve_params(params, ablation=name) for name in params.get("shared", {}).get(params["ablation"], [])]


def _restore(state: TrainState, ckpt) -> None:
    """Resume from the newest valid checkpoint of this trial, or leave `state` at step 0.

    Tune's own choice (`ckpt`) can be older than what is in storage after a driver kill (its experiment
    state is snapshotted every ~10 s), so the trial's folder is scanned too (`persist.restore_newest`);
    damaged checkpoints are moved aside and reported, never loaded.
    """
    what = f"{state.cfg.ablation} seed {state.cfg.seed}"
    loaded = restore_newest(lambda folder: load_state(state, folder), ckpt, what)
    if loaded is not None:
        log.warning("resumed %s at step %d from %s (Tune offered %s)", what, state.step, loaded,
                    ckpt.path if ckpt else None)


def t2s_trial(params: dict[str, Any]) -> None:
    """Ray Tune function trainable: train, report every `report_every` steps, checkpoint, evaluate."""
    started_at = time.time()
    logging.getLogger("ray.train").setLevel(logging.WARNING)  # no line per persisted checkpoint
    cfg = resolve_params(params)
    members = _member_configs(params)
    gpu_ids = ray.get_gpu_ids()
    device = trial_device(cfg, gpu_ids)
    node = {**node_facts(device, gpu_ids), "node/started_at": started_at}
    node_id = node["node/id"]
    # on a cluster the data and its cache are read on this node: say which node when they are not here
    check_visible(cfg.data, where=f"Ray node {node_id} ({node['node/hostname']})")
    dataset = build_dataset(cfg.data, "train")
    state = build_state(cfg, device)
    storage_dir = trial_storage_dir()
    _restore(state, tune.get_checkpoint())

    def report(metrics: dict[str, Any], checkpoint_now: bool) -> None:
        # timesteps_total puts the training step on TensorBoard's x axis (Tune's TBX logger reads it)
        metrics, samples = {**metrics, **node, "timesteps_total": state.step}, []
        if state.step >= cfg.training.steps:
            final, result = _final_metrics(state, metrics["loss"])
            metrics.update(final)
            trial_dir = artifact_dir()
            samples = _save_samples(result, trial_dir, step=state.step)
            for member in members:  # the same weights, evaluated as each member ablation
                final, result = _final_metrics(member_state(state, member), metrics["loss"])
                metrics.update({shared_key(member.ablation, k): v for k, v in final.items() if k != "final"})
                samples += _save_samples(result, trial_dir, step=state.step, member=member.ablation)
        if not checkpoint_now:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_state(state, Path(tmp) / "ckpt")
            for path in samples:  # also inside the checkpoint: they reach storage from any node
                shutil.copy(path, Path(tmp) / "ckpt" / path.name)
            report_with_checkpoint(metrics, Path(tmp) / "ckpt")

    folder = storage_dir or artifact_dir()
    with MemorySampler(folder / SAMPLER_CSV, device) as sampler:
        def report_with_memory(metrics: dict[str, Any], checkpoint_now: bool) -> None:
            sampler.set_step(state.step)
            report({**metrics, **sampler.summary()}, checkpoint_now)

        if state.step >= cfg.training.steps:  # restored from the final checkpoint: only the final report is missing
            report_with_memory({"step": state.step, "epoch": state.epoch, "loss": math.nan}, True)
            return
        train_loop(state, dataset, report_with_memory, progress=sampler.set_step)
