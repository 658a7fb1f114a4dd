"""Video DiT contracts: shapes per size, zero initial output, checkpointing, learning."""

import pytest
import torch

from t2s_ray.t2s.diffusion import GaussianDiffusion
from t2s_ray.t2s.models.dit import VideoDiT
from t2s_ray.t2s.models.sizes import DIT_SIZES, DiTSize
from t2s_ray.t2s.models.text_encoder import TextOutput

TINY = DiTSize(hidden=32, depth=2, heads=4)


def fake_text(batch: int, length: int = 5, dim: int = 16, seed: int = 0) -> TextOutput:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, dim, generator=g)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, 3:] = False
    return TextOutput(tokens, mask, tokens.mean(1))


def make_dit(size=TINY, frames=3, height=8, width=12, patch=4, **kw) -> VideoDiT:
    torch.manual_seed(0)
    return VideoDiT(size, frames=frames, height=height, width=width, patch_size=patch, text_dim=16, **kw)


def randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-zero weights everywhere so that every branch carries signal and gradient."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("name", list(DIT_SIZES))
def test_output_shape_every_size(name):
    model = make_dit(DIT_SIZES[name], frames=2, height=8, width=8, patch=4)
    x = torch.randn(2, 3, 2, 8, 8)
    with torch.no_grad():
        out = model(x, torch.tensor([0, 999]), fake_text(2))
    assert out.shape == x.shape


@pytest.mark.parametrize("learned", [False, True])
def test_initial_output_is_zero(learned):
    model = make_dit(learned_pos_embed=learned)
    x = torch.randn(2, 3, 3, 8, 12)
    out = model(x, torch.tensor([3, 500]), fake_text(2))
    assert out.shape == x.shape and torch.count_nonzero(out) == 0
    assert model.pos_spatial.requires_grad == learned


def test_rejects_wrong_shapes():
    model = make_dit()
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\) = \(B, 3, 3, 8, 12\), got \(2, 3, 4, 8, 12\)"):
        model(torch.randn(2, 3, 4, 8, 12), torch.zeros(2, dtype=torch.long), fake_text(2))
    with pytest.raises(ValueError, match="text tokens"):
        model(torch.randn(2, 3, 3, 8, 12), torch.zeros(2, dtype=torch.long), fake_text(2, dim=8))
    with pytest.raises(ValueError, match="t of shape"):
        model(torch.randn(2, 3, 3, 8, 12), torch.zeros(3, dtype=torch.long), fake_text(2))


def test_padding_tokens_are_ignored():
    model = make_dit()
    randomize(model)
    x, t = torch.randn(2, 3, 3, 8, 12), torch.tensor([10, 20])
    text = fake_text(2)
    garbled = TextOutput(text.tokens.clone(), text.mask, text.pooled)
    garbled.tokens[~text.mask] = 100.0
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, text), model(x, t, garbled))


def saved_for_backward_bytes(model, *args) -> tuple[torch.Tensor, int]:
    """The model's output and the bytes of the tensors autograd keeps for its backward pass."""
    saved = []

    def pack(tensor):
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(*args)
    return out, sum(saved)


def test_grad_checkpointing_matches_and_keeps_fewer_activations():
    plain, ckpt = make_dit(), make_dit(grad_checkpointing=True)
    randomize(plain)
    ckpt.load_state_dict(plain.state_dict())
    x, t, text = torch.randn(2, 3, 3, 8, 12), torch.tensor([1, 2]), fake_text(2)
    losses, kept = [], []
    for model in plain, ckpt:
        out, nbytes = saved_for_backward_bytes(model, x, t, text)
        loss = out.square().mean()
        loss.backward()
        losses.append(loss)
        kept.append(nbytes)
    # checkpointed blocks keep only their inputs and recompute the rest in backward
    assert kept[1] < kept[0] / 2, f"checkpointing did not engage: {kept[1]} vs {kept[0]} bytes saved for backward"
    torch.testing.assert_close(losses[0], losses[1])
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_loss_falls_when_overfitting(text_encoder):
    torch.manual_seed(0)
    model = VideoDiT(
        DIT_SIZES["dit-tiny"], frames=4, height=16, width=16, patch_size=4, text_dim=text_encoder.hidden_size
    )
    text = text_encoder(["a person waves hello", "thank you"])
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 3, 4, 16, 16, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (2,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    diffusion = GaussianDiffusion(prediction="v")
    xt, target = diffusion.q_sample(x0, t, noise), diffusion.target(x0, t, noise)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(model(xt, t, text), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
