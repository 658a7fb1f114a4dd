"""One trial's training, without Ray: `TrainState`, `train_step`, the loop, checkpoint state.

Fresh and resumed runs go through the same `TrainState.load_state_dict`; the step, epoch and
data position live inside the checkpoint. All randomness after initialisation (data order,
timesteps, noise, caption dropout) comes from state the checkpoint carries, so resuming from
step k and training to N gives the same weights, bit for bit on CPU, as training straight to N.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import random
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from t2s_ray.checkpoint import CheckpointError, list_checkpoints, read_checkpoint, write_checkpoint
from t2s_ray.data.video import to_model_input
from t2s_ray.metrics.efficiency import synchronize, to_device
from t2s_ray.metrics.flops import count_flops, device_peak_flops, flops_metrics
from t2s_ray.metrics.memory import memory_metrics
from t2s_ray.study import pick_device
from t2s_ray.t2s.config import Config, trajectory_fields
from t2s_ray.t2s.diffusion import GaussianDiffusion
from t2s_ray.t2s.ema import EMA
from t2s_ray.t2s.models.t2s import T2SModel, build_model

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot go on (divergence, out of memory, no usable device); the message says what to do."""


# --- helpers ------------------------------------------------------------------------------------


def lr_factor(step: int, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """LR multiplier at `step`: linear warm-up, then cosine decay to `min_ratio` (or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def autocast_dtype(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """bf16 autocast on CUDA under `auto`, or wherever `bf16` is asked; None means fp32."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def compile_enabled(setting: str, device: torch.device) -> bool:
    """`training.compile`: `on`, `off`, or `auto` (CUDA only)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


@contextlib.contextmanager
def eager_blocks(model: T2SModel):
    """The DiT's blocks run uncompiled inside the block (the FLOP counter counts the eager module)."""
    with model.dit.eager():
        yield


def drop_captions(texts: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Replace each caption by the empty (null) caption with probability `p` (CFG training)."""
    drop = torch.rand(len(texts), generator=generator) < p
    return ["" if d else t for t, d in zip(texts, drop.tolist())]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (model initialisation)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- state ------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything a trial needs to continue training: weights, optimiser, schedules, RNG, position."""

    cfg: Config
    model: T2SModel
    diffusion: GaussianDiffusion
    ema: Optional[EMA]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    device: torch.device
    step: int = 0
    epoch: int = 0
    data_pos: int = 0
    train_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    rng_checkpoint: Optional[torch.Tensor] = None
    """While a `Prefetcher` has drawn a coming step's inputs: `generator`'s state from before those draws, which
    a checkpoint stores instead of the generator's (so it is the same whether or not inputs were drawn ahead)."""

    @property
    def autocast(self):
        dtype = autocast_dtype(self.cfg.training.precision, self.device)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def state_dict(self) -> dict[str, Any]:
        """One dict of tensors and plain values (loadable with `weights_only=True`)."""
        return {
            "model": _model_state(self.model),
            "ema": self.ema.state_dict() if self.ema else {},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": _rng_state(self.generator, self.rng_checkpoint),
            "progress": {
                "step": self.step,
                "epoch": self.epoch,
                "data_pos": self.data_pos,
                "train_time_s": self.train_time_s,
            },
            "config": self.cfg.to_json(),
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore every component; the saved config must match this state's config."""
        saved = Config.from_dict(json.loads(sd["config"]))
        if _training_fields(saved) != _training_fields(self.cfg):
            raise CheckpointError(
                "checkpoint was written with a different config; resume with the same "
                "ablation, scale, seed and --set overrides, or use a fresh output folder"
            )
        _load_model_state(self.model, sd["model"])
        if self.ema:
            self.ema.load_state_dict(sd["ema"])
        self.optimizer.load_state_dict(sd["optimizer"])
        self.scheduler.load_state_dict(sd["scheduler"])
        self.scaler.load_state_dict(sd["scaler"])
        _set_rng_state(sd["rng"], self.generator)
        self.rng_checkpoint = None
        p = sd["progress"]
        self.step, self.epoch, self.data_pos = int(p["step"]), int(p["epoch"]), int(p["data_pos"])
        self.train_time_s = float(p["train_time_s"])


def _training_fields(cfg: Config) -> dict[str, Any]:
    """The config fields a checkpoint must agree on: all but where it runs and how it is evaluated."""
    d = cfg.to_dict()
    for key in ("device", "eval"):
        d.pop(key)
    d["training"].pop("compile")  # how the step runs, as the device: a run may resume compiled or not
    return d


def _model_state(model: T2SModel) -> dict[str, torch.Tensor]:
    """Model weights; a frozen text encoder is omitted (it is reloaded from its path)."""
    sd = model.state_dict()
    if model.text_encoder.frozen:
        sd = {k: v for k, v in sd.items() if not k.startswith("text_encoder.")}
    return sd


def _load_model_state(model: T2SModel, sd: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(sd, strict=False)
    allowed = model.text_encoder.frozen
    bad_missing = [k for k in missing if not (allowed and k.startswith("text_encoder."))]
    if bad_missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not fit the model: missing {bad_missing[:3]}, unexpected {list(unexpected)[:3]}"
        )


def _rng_state(generator: torch.Generator, before_prefetch: torch.Tensor | None = None) -> dict[str, Any]:
    state = {
        "generator": generator.get_state() if before_prefetch is None else before_prefetch.clone(),
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
        "numpy_pos": int(np.random.get_state()[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_state(cfg: Config, device: torch.device | None = None, text_encoder=None) -> TrainState:
    """A fresh `TrainState` for `cfg` (model initialised from `cfg.seed`)."""
    device = device or pick_device(cfg.device, error=TrainingError)
    seed_everything(cfg.seed)
    model = build_model(cfg, text_encoder=text_encoder).to(device)
    if compile_enabled(cfg.training.compile, device):
        model.dit.compile_blocks()
        model.text_encoder.pad_to = cfg.text_encoder.max_length  # static shapes: one graph for every step
    t = cfg.training
    groups = model.param_groups(lr=t.lr, text_lr=cfg.text_encoder.lr, weight_decay=t.weight_decay)
    # fused on CUDA: one kernel for the whole update instead of a few per parameter tensor (CPU keeps the default
    # foreach implementation, which the bit-exact resume tests pin)
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, weight_decay=t.weight_decay, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, t.warmup_steps, t.steps, t.lr_schedule, t.min_lr_ratio)
    )
    # bf16 needs no loss scaling; the scaler is kept (disabled) so that the state layout never changes.
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    ema = EMA(model, cfg.ema.decay, cfg.ema.warmup) if cfg.ema.enabled else None
    generator = torch.Generator().manual_seed(cfg.seed)
    return TrainState(
        cfg, model, GaussianDiffusion.from_config(cfg.diffusion), ema, optimizer, scheduler, scaler, generator, device
    )


# --- one step ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The clip order of one epoch: a permutation derived from (seed, epoch), so no state but the epoch."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()


def _batch_at(state: TrainState, dataset, epoch: int, data_pos: int) -> tuple[list[int], int, int]:
    """(clip indices, epoch, position after) of the batch starting at (`epoch`, `data_pos`) in the epoch's
    seeded permutation; a batch that would run past the end starts the next epoch."""
    b, n = state.cfg.training.batch_size, len(dataset)
    if b > n:
        raise TrainingError(f"training.batch_size={b} is larger than the {n} training clips; lower it")
    if data_pos + b > n:
        epoch, data_pos = epoch + 1, 0
    return epoch_order(state.cfg.seed, epoch, n)[data_pos : data_pos + b], epoch, data_pos + b


def next_batch(state: TrainState, dataset) -> tuple[np.ndarray, list[str]]:
    """The next batch in this epoch's seeded permutation (the position is part of the state)."""
    idx, state.epoch, state.data_pos = _batch_at(state, dataset, state.epoch, state.data_pos)
    return dataset.get_batch(idx)


def diffusion_loss(state: TrainState, videos: np.ndarray, texts: list[str], generator: torch.Generator) -> torch.Tensor:
    """The diffusion loss of uint8 clips `(B, T, H, W, 3)` with their captions (timesteps/noise from `generator`)."""
    x0 = to_model_input(videos, device=state.device)  # uint8 to the device, then float: 4x fewer bytes moved
    with state.autocast:
        text = state.model.encode(texts)
        return state.diffusion.training_loss(lambda x, t: state.model(x, t, text), x0, generator)


@dataclass
class StepInputs:
    """One training step's inputs, drawn before the step: its clips (uint8, on the device), captions after
    caption dropout, timesteps and noise (on the device), and where the data position stands after it."""

    videos: torch.Tensor
    texts: list[str]
    t: torch.Tensor
    noise: torch.Tensor
    epoch: int
    data_pos: int


def _draw(state: TrainState, videos: np.ndarray, texts: list[str], epoch: int, data_pos: int) -> StepInputs:
    """The generator's draws for the batch `(videos, texts)`, in the order training has always made them
    (caption dropout, timesteps, noise), and the batch on the device."""
    texts = drop_captions(texts, state.cfg.diffusion.caption_dropout, state.generator)
    clips = torch.from_numpy(np.ascontiguousarray(videos))
    t, noise = state.diffusion.draw((clips.shape[0], clips.shape[4], *clips.shape[1:4]), state.generator)
    dev = state.device
    return StepInputs(to_device(clips, dev), texts, to_device(t, dev), to_device(noise, dev), epoch, data_pos)


def draw_inputs(state: TrainState, dataset, epoch: int, data_pos: int) -> StepInputs:
    """The inputs of the step that starts at (`epoch`, `data_pos`): the batch of the epoch's permutation and
    the draws from `state.generator` (the data position in `state` is not touched: the step sets it)."""
    idx, epoch, data_pos = _batch_at(state, dataset, epoch, data_pos)
    return _draw(state, *dataset.get_batch(idx), epoch, data_pos)


class Prefetcher:
    """Draws step k+1's inputs while step k runs (on a helper thread when `threaded`, the default on CUDA), so
    the step's prologue (the batch, the CPU draws, the host-to-device copies) is off the critical path.

    Bit-exact: the draws come from `state.generator` in the order and at the data positions a step-by-step run
    uses; while inputs of a step not yet run have been drawn, `state.rng_checkpoint` holds the generator state
    from before them, which is what a checkpoint stores. `close()` (also on an exception) puts back draws that
    no step consumed.
    """

    def __init__(self, state: TrainState, dataset, end: int, threaded: bool | None = None):
        self.state, self.dataset, self.end = state, dataset, end
        self.threaded = state.device.type == "cuda" if threaded is None else threaded
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="t2s-prefetch") if self.threaded else None
        self._ahead: Future | None = None
        self._cursor = (state.epoch, state.data_pos)
        self._handed: tuple[int, torch.Tensor] | None = None  # (step it was handed out at, generator before it)

    def _submit(self) -> None:
        state = self.state
        state.rng_checkpoint = state.generator.get_state()  # the generator is idle: the last draw has returned
        if self._pool is not None:
            self._ahead = self._pool.submit(draw_inputs, state, self.dataset, *self._cursor)
        else:
            self._ahead = Future()
            self._ahead.set_result(draw_inputs(state, self.dataset, *self._cursor))

    def next(self) -> StepInputs:
        """The inputs of step `state.step + 1`; those of the step after it start drawing."""
        if self._ahead is None:
            self._submit()
        before = self.state.rng_checkpoint
        inputs = self._ahead.result()
        self._ahead, self._cursor = None, (inputs.epoch, inputs.data_pos)
        self._handed = (self.state.step, before)
        if self.state.step + 1 < self.end:
            self._submit()
        else:
            self.state.rng_checkpoint = None  # nothing drawn ahead: the generator itself is where a checkpoint is
        return inputs

    def close(self) -> None:
        """Wait for a draw under way, then set the generator back to before the draws of steps that never ran."""
        state, rewind = self.state, None
        if self._ahead is not None:
            self._ahead.result()
            rewind, self._ahead = state.rng_checkpoint, None
        if self._handed is not None and self._handed[0] == state.step:  # handed out, but its step did not run
            rewind = self._handed[1]
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if rewind is not None:
            state.generator.set_state(rewind)
        state.rng_checkpoint = None

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def train_step(state: TrainState, videos: np.ndarray, texts: list[str]) -> torch.Tensor:
    """`train_inputs_step` of a batch taken with `next_batch`, its caption dropout, timesteps and noise drawn
    now (what a `Prefetcher` draws ahead, in the same order)."""
    return train_inputs_step(state, _draw(state, videos, texts, state.epoch, state.data_pos))


def train_inputs_step(state: TrainState, inputs: StepInputs) -> torch.Tensor:
    """Forward, loss, backward, clip, step, EMA on drawn `inputs`. Returns the (detached) loss on the device."""
    x0 = to_model_input(inputs.videos)
    with state.autocast, attention_backends(state.device):
        text = state.model.encode(inputs.texts)
        loss = state.diffusion.loss_at(lambda x, t: state.model(x, t, text), x0, inputs.t, inputs.noise.to(x0.dtype))
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    state.scaler.unscale_(state.optimizer)
    for group in state.optimizer.param_groups if state.cfg.training.grad_clip > 0 else ():
        # each group on its own: a finetuned encoder's gradients must not shrink the DiT's step
        torch.nn.utils.clip_grad_norm_(group["params"], state.cfg.training.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    if state.ema:
        state.ema.update(state.model)
    state.step += 1
    state.epoch, state.data_pos = inputs.epoch, inputs.data_pos
    return loss.detach()


def attention_backends(device: torch.device):
    """On CUDA, scaled-dot-product attention tries the flash, then the cuDNN, then the memory-efficient kernel
    before the math one (a priority, not a restriction: an input a kernel cannot take falls through)."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    return sdpa_kernel(order, set_priority=True)


def time_train_steps(state: TrainState, data, steps: int, warmup: int = 2) -> list[float]:
    """Seconds of each of `steps` training steps after `warmup` untimed ones (CUDA peak memory reset after
    warm-up), run as `train_loop` runs them: inputs drawn ahead by a `Prefetcher`."""
    times = []
    with Prefetcher(state, data, end=state.step + warmup + steps) as inputs:
        for _ in range(warmup):
            train_inputs_step(state, inputs.next())
        synchronize(state.device)
        if state.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(state.device)
        for _ in range(steps):
            t0 = time.perf_counter()
            train_inputs_step(state, inputs.next())
            synchronize(state.device)
            times.append(time.perf_counter() - t0)
    return times


# --- the loop ---------------------------------------------------------------------------------

ReportFn = Callable[[dict[str, Any], bool], None]
"""Called with (metrics, checkpoint_now) after step 1, every `report_every` steps and at checkpoint steps."""


def train_loop(
    state: TrainState,
    dataset,
    report: ReportFn,
    progress: Callable[[int], None] | None = None,
    stop_at: int | None = None,
) -> None:
    """Train until `stop_at` (default `cfg.training.steps`), calling `report` after step 1 and then on the
    report/checkpoint cadence.

    `stop_at` below `training.steps` pauses a run: the LR schedule still spans `training.steps`.
    The first step of the call runs under a FLOP counter (it only observes) for the `perf/*` keys.
    """
    t = state.cfg.training
    end = min(t.steps, stop_at) if stop_at is not None else t.steps
    losses: list[torch.Tensor] = []
    window_start, data_time, samples = time.perf_counter(), 0.0, 0
    peak, peak_status = _peak_flops(state)
    flops_per_step = None
    prefill_captions(state, dataset)
    state.model.train()
    with Prefetcher(state, dataset, end) as inputs:
        while state.step < end:
            t0 = time.perf_counter()
            batch = inputs.next()  # waits only when the drawing ahead took longer than the step before
            data_time += time.perf_counter() - t0
            step = functools.partial(_guarded_step, state, batch)
            if flops_per_step is None:
                with eager_blocks(state.model):  # counted on the eager module (torch's formulas see every op)
                    loss, flops_per_step = count_flops(step)
            else:
                loss = step()
            losses.append(loss)
            samples += len(batch.texts)
            if progress:
                progress(state.step)
            ckpt_due = state.step % t.checkpoint_every == 0 or state.step == end
            # step 1 is reported too: the first loss (and that the trial is alive) comes after one step, not a
            # window; a run resumed past it reports on the same steps as a straight one
            if state.step % t.report_every == 0 or ckpt_due or state.step == 1:
                synchronize(state.device)
                elapsed = time.perf_counter() - window_start
                state.train_time_s += elapsed
                metrics = {
                    **_window_metrics(state, losses, elapsed, data_time, samples),
                    **flops_metrics(flops_per_step, len(losses), elapsed, peak, peak_status),
                }
                report(metrics, ckpt_due)
                losses, data_time, samples = [], 0.0, 0
                window_start = time.perf_counter()


def prefill_captions(state: TrainState, dataset) -> int:
    """A frozen encoder's cache filled with every training caption of `dataset`, encoded up front in few calls
    (`TextEncoder.prefill`), as the loop does before its first step; the captions added."""
    return state.model.text_encoder.prefill(getattr(dataset, "texts", ()))


def _peak_flops(state: TrainState) -> tuple[float, str]:
    """(peak FLOP/s, status) of the device at the autocast dtype: the denominator of `perf/mfu`."""
    peak, status = device_peak_flops(state.device, autocast_dtype(state.cfg.training.precision, state.device))
    if state.cfg.model.grad_checkpointing:  # the counter sees the recomputed forward: hardware, not model, FLOPs
        status += "; perf/flops_per_step includes the forward recomputed by model.grad_checkpointing"
    return peak, status


def _guarded_step(state: TrainState, inputs: StepInputs) -> torch.Tensor:
    """`train_inputs_step` with out-of-memory turned into an actionable message."""
    try:
        return train_inputs_step(state, inputs)
    except torch.OutOfMemoryError:
        c = state.cfg
        raise TrainingError(
            f"CUDA out of memory at step {state.step + 1} (ablation {c.ablation}, training.batch_size="
            f"{c.training.batch_size}, model.size={c.model.size}, model.grad_checkpointing="
            f"{c.model.grad_checkpointing}); lower --set training.batch_size or set "
            f"--set model.grad_checkpointing=true"
        ) from None


def _window_metrics(state: TrainState, losses, elapsed: float, data_time: float, samples: int) -> dict[str, Any]:
    loss = torch.stack(losses).float().mean().item()
    if not math.isfinite(loss):
        c = state.cfg
        raise TrainingError(
            f"loss became {loss} by step {state.step} (ablation {c.ablation}, seed {c.seed}); "
            f"lower training.lr (now {c.training.lr}) or resume from the last checkpoint"
        )
    n = len(losses)
    return {
        "step": state.step,
        "epoch": state.epoch,
        "loss": loss,
        "lr": state.optimizer.param_groups[0]["lr"],
        "samples_per_s": samples / elapsed if elapsed > 0 else math.nan,
        "step_time_ms": 1000 * (elapsed - data_time) / n,
        "data_time_ms": 1000 * data_time / n,
        **memory_metrics(state.device),
        "elapsed_s": state.train_time_s,
    }


# --- evaluation helpers (no sampling: see evaluation.py) ------------------------------------


@torch.no_grad()
def validation_loss(state: TrainState, dataset, max_clips: int = 64, seed: int = 0) -> float:
    """Mean diffusion loss on the first `max_clips` clips of `dataset`, with a fixed generator.

    Uses the weights the ablation evaluates (EMA when enabled). No caption dropout.
    """
    gen = torch.Generator().manual_seed(seed)
    n = min(max_clips, len(dataset))
    b = state.cfg.training.batch_size
    total, count = 0.0, 0
    with eval_weights(state):
        for start in range(0, n, b):
            videos, texts = dataset.get_batch(list(range(start, min(n, start + b))))
            loss = diffusion_loss(state, videos, texts, gen)
            total += loss.item() * len(texts)
            count += len(texts)
    return total / count


@contextlib.contextmanager
def eval_weights(state: TrainState):
    """Model in eval mode with the weights this ablation evaluates: EMA when enabled, else raw."""
    was_training = state.model.training
    state.model.eval()
    try:
        if state.ema:
            with state.ema.applied_to(state.model):
                yield state.model
        else:
            yield state.model
    finally:
        state.model.train(was_training)


# --- checkpoints ------------------------------------------------------------------------------


def save_state(state: TrainState, directory) -> None:
    """Write the full training state as a checkpoint directory (atomic, checksummed)."""
    meta = {
        "step": state.step,
        "epoch": state.epoch,
        "ablation": state.cfg.ablation,
        "seed": state.cfg.seed,
        "config": state.cfg.to_dict(),
    }
    write_checkpoint(directory, state.state_dict(), meta)


def load_state(state: TrainState, directory) -> None:
    """Load a checkpoint directory into `state` (checksum verified, `weights_only=True`)."""
    sd, _ = read_checkpoint(directory, map_location=state.device)
    state.load_state_dict(sd)


def restore_latest(state: TrainState, root) -> Optional[str]:
    """Load the newest valid checkpoint under `root`; corrupt ones are reported and skipped.

    Returns the directory loaded, or None when `root` holds no checkpoint at all. Raises when
    checkpoints exist but none is valid (never silently starts over).
    """
    candidates = list_checkpoints(root)
    errors = []
    for d in reversed(candidates):
        try:
            load_state(state, d)
            return str(d)
        except CheckpointError as e:
            log.warning("skipping checkpoint: %s", e)
            errors.append(str(e))
    if candidates:
        raise CheckpointError(f"no valid checkpoint under {root}: " + "; ".join(errors))
    return None


# --- shared training ---------------------------------------------------------------------------


def member_state(state: TrainState, cfg: Config) -> TrainState:
    """`state` seen as the shared-training member `cfg`: the same model, optimiser and position, `cfg`'s
    evaluation settings, and the trainer's EMA when `cfg` has EMA on (a training group holds one EMA
    setting), else none (its raw weights are evaluated)."""
    if trajectory_fields(cfg) != trajectory_fields(state.cfg):
        raise TrainingError(
            f"ablation {cfg.ablation!r} cannot share {state.cfg.ablation!r}'s training: their "
            f"configs differ in fields that change the trained weights"
        )
    if cfg.ema.enabled and (state.ema is None or cfg.ema != state.cfg.ema):
        raise TrainingError(
            f"ablation {cfg.ablation!r} needs EMA {cfg.ema}, but the shared run keeps "
            f"{state.cfg.ema if state.ema else 'none'}"
        )
    return dataclasses.replace(state, cfg=cfg, ema=state.ema if cfg.ema.enabled else None)
