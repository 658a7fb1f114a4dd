"""Diffusion maths: schedules, targets, loss reproducibility, DDIM and guidance."""

import pytest
import torch

from t2s_ray.t2s.config import DiffusionConfig
from t2s_ray.t2s.diffusion import GaussianDiffusion
from t2s_ray.t2s.models.text_encoder import TextOutput

SHAPE = (2, 3, 2, 4, 4)


def text(batch: int, value: float = 0.0, length: int = 3) -> TextOutput:
    return TextOutput(
        torch.full((batch, length, 8), value),
        torch.ones(batch, length, dtype=torch.bool),
        torch.full((batch, 8), value),
    )


def oracle(diffusion: GaussianDiffusion, x0: torch.Tensor):
    """A model that knows x0 and returns the exact target for any x_t (guidance doubles the batch)."""

    def model_fn(x, t, _text):
        x0_ = x0.repeat(len(x) // len(x0), 1, 1, 1, 1)
        a = diffusion.sqrt_ac.float()[t].view(-1, 1, 1, 1, 1)
        b = diffusion.sqrt_1m_ac.float()[t].view(-1, 1, 1, 1, 1)
        return diffusion.target(x0_, t, (x - a * x0_) / b)

    return model_fn


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_schedules_monotone_in_unit_interval(schedule):
    d = GaussianDiffusion(1000, schedule)
    ac = d.alphas_cumprod
    assert ac.dtype == torch.float64 and ac.shape == (1000,)
    assert (ac > 0).all() and (ac < 1).all() and (ac[1:] < ac[:-1]).all()
    assert d.betas.max() <= 0.999


def test_linear_betas_match_ddpm():
    betas = GaussianDiffusion(1000, "linear").betas
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)


def test_from_config():
    d = GaussianDiffusion.from_config(DiffusionConfig(num_timesteps=50, schedule="linear", prediction="eps"))
    assert (d.num_timesteps, d.schedule, d.prediction) == (50, "linear", "eps")
    with pytest.raises(ValueError, match="prediction='x0'"):
        GaussianDiffusion(prediction="x0")


@pytest.mark.parametrize("prediction", ["eps", "v", "x"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_true_target_reconstructs_x0_and_noise(prediction, schedule):
    d = GaussianDiffusion(1000, schedule, prediction)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(SHAPE, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 999])
    xt = d.q_sample(x0, t, noise)
    x0_hat, eps_hat = d.predict_x0_eps(xt, t, d.target(x0, t, noise))
    torch.testing.assert_close(x0_hat, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(eps_hat, noise, atol=1e-5, rtol=0)


def test_same_generator_state_same_loss():
    d = GaussianDiffusion()
    net = torch.nn.Conv3d(3, 3, 1)
    x0 = torch.rand(SHAPE) * 2 - 1
    g = torch.Generator().manual_seed(123)
    state = g.get_state()
    first = d.training_loss(lambda x, t: net(x), x0, g)
    second = d.training_loss(lambda x, t: net(x), x0, g)
    g.set_state(state)
    replay = d.training_loss(lambda x, t: net(x), x0, g)
    assert first.ndim == 0 and torch.equal(first, replay) and not torch.equal(first, second)


def test_zero_model_loss_is_target_variance():
    d = GaussianDiffusion(prediction="eps")
    loss = d.training_loss(
        lambda x, t: torch.zeros_like(x), torch.zeros(64, 3, 2, 8, 8), torch.Generator().manual_seed(0)
    )
    assert loss.item() == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("space", ["x", "v"])
def test_x_prediction_loss_is_weighted_in_v_space(space):
    """x-prediction: an error e in x costs e^2 in x-space and (e / max(sigma_t, min_sigma))^2 in v-space."""
    d = GaussianDiffusion(prediction="x", x_loss_space=space, x_loss_min_sigma=0.05)
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, d.num_timesteps, (SHAPE[0],), generator=torch.Generator().manual_seed(5))
    loss = d.training_loss(lambda x, _t: x0 + 0.1, x0, g)
    sigma = d.sqrt_1m_ac[t].clamp(min=0.05)
    want = 0.01 if space == "x" else (0.01 / sigma**2).mean().item()
    assert loss.item() == pytest.approx(want, rel=1e-4)
    assert d.training_loss(lambda x, _t: x0, x0, torch.Generator().manual_seed(5)).item() == pytest.approx(0, abs=1e-10)


def test_ddim_timesteps_evenly_spaced():
    d = GaussianDiffusion()
    assert d.ddim_timesteps(10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    assert d.ddim_timesteps(1) == [999] and d.ddim_timesteps(1000)[-1] == 0


@pytest.mark.parametrize("prediction", ["eps", "v", "x"])
def test_ddim_with_exact_model_recovers_x0(prediction):
    d = GaussianDiffusion(prediction=prediction)
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = d.ddim_sample(
        oracle(d, x0),
        SHAPE,
        text(2, 1.0),
        text(1),
        steps=5,
        guidance_scale=3.0,
        generator=torch.Generator().manual_seed(1),
        device="cpu",
    )
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=0)


def test_guidance_scale_one_is_conditional_only():
    d = GaussianDiffusion()
    calls = []

    def model_fn(x, t, txt):
        calls.append(len(txt))
        return x * 0.1 + txt.pooled[:, :1].view(-1, 1, 1, 1, 1)

    def sample(uncond, scale):
        return d.ddim_sample(
            model_fn,
            SHAPE,
            text(2, 1.0),
            uncond,
            steps=4,
            guidance_scale=scale,
            generator=torch.Generator().manual_seed(7),
            device="cpu",
        )

    cond_only = sample(None, 3.0)
    assert torch.equal(sample(text(2, -1.0), 1.0), cond_only) and set(calls) == {2}
    guided = sample(text(2, -1.0), 3.0)
    assert calls[-1] == 4 and not torch.allclose(guided, cond_only)  # cond and uncond in one batch
