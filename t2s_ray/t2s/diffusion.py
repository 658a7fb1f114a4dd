"""Gaussian diffusion maths, apart from the network: schedules, targets, loss, DDIM with guidance.

All randomness comes from an explicit CPU `torch.Generator` (tensors are drawn on the CPU and
then moved), so a saved generator state reproduces training bit for bit on any device.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from t2s_ray.t2s.config import PREDICTIONS, SCHEDULES, DiffusionConfig
from t2s_ray.t2s.models.text_encoder import TextOutput


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """DDPM linear betas 1e-4..0.02 (rescaled so other step counts keep the same total noise)."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM cosine schedule: betas from alpha_bar(t) = cos^2((t + s) / (1 + s) * pi / 2), clipped."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


BETA_SCHEDULES: dict[str, Callable[[int], torch.Tensor]] = {"linear": linear_betas, "cosine": cosine_betas}
assert tuple(BETA_SCHEDULES) == SCHEDULES, "config.SCHEDULES and diffusion.BETA_SCHEDULES disagree"

ModelFn = Callable[..., torch.Tensor]


def _extract(coef: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """coef[t] shaped (B, 1, ..., 1) to broadcast against x; `coef` is already on x's device (see `_table`)."""
    return coef[t.to(x.device)].view(-1, *([1] * (x.ndim - 1)))


class GaussianDiffusion:
    """Forward process q(x_t | x_0), the eps/v/x training target and a DDIM sampler.

    x-prediction (Li & He, "Back to Basics: Let Denoising Generative Models Denoise", 2025): the
    network outputs the clean clip. Pixel-patch transformers whose patch holds more values than
    the model is wide cannot carry the full-dimensional noise through, so eps/v targets fail
    there while the (low-dimensional) clean clip can still be predicted. Its loss is by default
    taken in v-space: v_hat - v = -(x_hat - x0) / sigma_t, so MSE(v) = mean(((x_hat - x0) / sigma_t)^2),
    with sigma_t clipped below at `x_loss_min_sigma`.
    """

    def __init__(
        self,
        num_timesteps: int = 1000,
        schedule: str = "cosine",
        prediction: str = "x",
        x_loss_space: str = "v",
        x_loss_min_sigma: float = 0.05,
    ):
        if schedule not in BETA_SCHEDULES:
            raise ValueError(f"schedule={schedule!r}; expected one of {', '.join(BETA_SCHEDULES)}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction={prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if x_loss_space not in ("v", "x") or not 0 < x_loss_min_sigma <= 1:
            raise ValueError(
                f"x_loss_space={x_loss_space!r} (expected 'v' or 'x'), "
                f"x_loss_min_sigma={x_loss_min_sigma} (expected (0, 1])"
            )
        self.num_timesteps, self.schedule, self.prediction = num_timesteps, schedule, prediction
        self.x_loss_space, self.x_loss_min_sigma = x_loss_space, x_loss_min_sigma
        self.betas = BETA_SCHEDULES[schedule](num_timesteps)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        self.sqrt_ac = self.alphas_cumprod.sqrt()
        self.sqrt_1m_ac = (1 - self.alphas_cumprod).sqrt()
        self._tables: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def _table(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """The schedule table `name` on x's device, float64 only for float64 x: copied there once, so a training
        step indexes a device tensor instead of sending the table from the host (a blocking copy) each time."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        key = (name, x.device, dtype)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = getattr(self, name).to(x.device, dtype)
        return table

    def _coef(self, name: str, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _extract(self._table(name, x), t, x)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> GaussianDiffusion:
        """The diffusion a `DiffusionConfig` describes."""
        return cls(cfg.num_timesteps, cfg.schedule, cfg.prediction, cfg.x_loss_space, cfg.x_loss_min_sigma)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        xt = self._coef("sqrt_ac", t, x0) * x0 + self._coef("sqrt_1m_ac", t, x0) * noise
        return xt.to(x0.dtype)

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the network learns: the noise (eps), x0 (x) or v = sqrt(a_t) noise - sqrt(1 - a_t) x0."""
        if self.prediction == "eps":
            return noise
        if self.prediction == "x":
            return x0
        return (self._coef("sqrt_ac", t, x0) * noise - self._coef("sqrt_1m_ac", t, x0) * x0).to(x0.dtype)

    def predict_x0_eps(
        self, xt: torch.Tensor, t: torch.Tensor, pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0, eps) implied by the network output `pred` at x_t."""
        a, b = self._coef("sqrt_ac", t, xt), self._coef("sqrt_1m_ac", t, xt)
        if self.prediction == "eps":
            return (xt - b * pred) / a, pred
        if self.prediction == "x":
            return pred, (xt - a * pred) / b
        return a * xt - b * pred, a * pred + b * xt

    def draw(self, shape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, noise) of one training batch of clips shaped `shape`: t ~ U{0..T-1}, then standard normal noise,
        both drawn on the CPU from `generator` (in this order, so a saved generator state replays them)."""
        t = torch.randint(0, self.num_timesteps, (shape[0],), generator=generator)
        return t, torch.randn(tuple(shape), generator=generator)

    def training_loss(self, model_fn: ModelFn, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """MSE between model_fn(x_t, t) and the target, with t ~ U{0..T-1} and noise from `generator`."""
        t, noise = self.draw(x0.shape, generator)
        return self.loss_at(model_fn, x0, t.to(x0.device), noise.to(x0.device, x0.dtype))

    def loss_at(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """`training_loss` at given timesteps `t` and `noise` (already on x0's device, as `draw` made them)."""
        pred = model_fn(self.q_sample(x0, t, noise), t)
        err = (pred.float() - self.target(x0, t, noise).float()) ** 2
        if self.prediction == "x" and self.x_loss_space == "v":
            err = err / self._coef("sqrt_1m_ac", t, err).clamp(min=self.x_loss_min_sigma) ** 2
        return err.mean()

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` evenly spaced timesteps from T-1 down ("trailing": 1 step starts at T-1 too)."""
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"steps={steps}; expected 1..{self.num_timesteps}")
        ts = torch.linspace(self.num_timesteps, 0, steps + 1, dtype=torch.float64)[:-1].round().long() - 1
        return ts.tolist()

    def _guided(
        self,
        model_fn: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: TextOutput,
        uncond: TextOutput | None,
        guidance_scale: float,
    ) -> torch.Tensor:
        """Classifier-free guidance: uncond + s (cond - uncond), both halves in one batch."""
        if uncond is None or guidance_scale == 1:
            return model_fn(x, t, cond).float()
        both = model_fn(torch.cat([x, x]), torch.cat([t, t]), TextOutput.cat([cond, uncond])).float()
        pred_c, pred_u = both.chunk(2)
        return pred_u + guidance_scale * (pred_c - pred_u)

    @torch.no_grad()
    def ddim_sample(
        self,
        model_fn: ModelFn,
        shape,
        cond: TextOutput,
        uncond: TextOutput | None,
        steps: int,
        guidance_scale: float,
        generator: torch.Generator,
        device,
    ) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from noise drawn with `generator`; returns x0 clamped to [-1, 1].

        The x0 estimate is clamped at every step and eps recomputed from it (iDDPM clip_denoised,
        diffusers clip_sample): with eps-prediction on the cosine schedule sqrt(alpha_bar) at
        t=999 is ~5e-5, so an unclamped first step amplifies the network's error ~20,000x.

        model_fn(x, t, text) -> prediction. `uncond` (the empty caption) may have batch 1; it is
        broadcast. guidance_scale 1 (or uncond None) evaluates the conditional branch only.
        """
        B = shape[0]
        if len(cond) != B:
            raise ValueError(f"cond has {len(cond)} captions but shape asks for {B} samples")
        cond = cond.to(device)
        if uncond is not None:
            uncond = _broadcast(uncond, B).to(device)
        x = torch.randn(tuple(shape), generator=generator).to(device)
        ts = self.ddim_timesteps(steps)
        for i, step in enumerate(ts):
            t = torch.full((B,), step, dtype=torch.long, device=device)
            pred = self._guided(model_fn, x, t, cond, uncond, guidance_scale)
            x0 = self.predict_x0_eps(x, t, pred)[0].clamp(-1, 1)
            eps = (x - self._coef("sqrt_ac", t, x) * x0) / self._coef("sqrt_1m_ac", t, x)
            a_prev = self.alphas_cumprod[ts[i + 1]].item() if i + 1 < len(ts) else 1.0
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
        return x.clamp(-1, 1)


def _broadcast(text: TextOutput, batch: int) -> TextOutput:
    """Repeat a one-caption `TextOutput` to `batch` rows (a full batch passes through)."""
    if len(text) == batch:
        return text
    if len(text) != 1:
        raise ValueError(f"uncond has {len(text)} captions; expected 1 or {batch}")
    return TextOutput(text.tokens.expand(batch, -1, -1), text.mask.expand(batch, -1), text.pooled.expand(batch, -1))
