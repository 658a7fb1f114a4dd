"""EMA maths, warm-up, tracked parameters, state round trip, temporary application."""

import pytest
import torch
from torch import nn

from t2s_ray.t2s.ema import EMA


def make_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))
    model[0].bias.requires_grad_(False)  # a frozen parameter: not tracked
    return model


def perturb(model: nn.Module, amount: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(amount)


def test_one_update_by_hand():
    model = make_model()
    ema = EMA(model, decay=0.9, warmup=False)
    before = model[1].weight.detach().clone()
    perturb(model, 1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["1.weight"], 0.9 * before + 0.1 * (before + 1.0))
    assert ema.num_updates == 1


def test_warmup_decay_values():
    ema = EMA(make_model(), decay=0.999, warmup=True)
    seen = []
    for _ in range(3):
        seen.append(ema.current_decay())
        ema.update(make_model())
    assert seen == pytest.approx([1 / 10, 2 / 11, 3 / 12])
    ema.num_updates = 10_000
    assert ema.current_decay() == 0.999  # (1 + n) / (10 + n) has passed the target
    assert EMA(make_model(), decay=0.999, warmup=False).current_decay() == 0.999


def test_tracks_only_trainable_parameters_in_float32():
    model = make_model().double()
    ema = EMA(model, decay=0.9)
    assert set(ema.shadow) == {"0.weight", "1.weight", "1.bias"}
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())


def test_state_dict_round_trip(tmp_path):
    model = make_model()
    ema = EMA(model, decay=0.99)
    for step in range(3):
        perturb(model, 0.1 * step)
        ema.update(model)
    torch.save(ema.state_dict(), tmp_path / "ema.pt")
    restored = EMA(make_model(), decay=0.99)
    restored.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    assert restored.num_updates == 3 and restored.current_decay() == ema.current_decay()
    for name, value in ema.shadow.items():
        assert torch.equal(restored.shadow[name], value)
    with pytest.raises(ValueError, match="decay=0.99"):
        EMA(make_model(), decay=0.5).load_state_dict(ema.state_dict())


def test_applied_to_restores_raw_weights():
    model = make_model()
    ema = EMA(model, decay=0.5, warmup=False)
    perturb(model, 1.0)
    ema.update(model)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with ema.applied_to(model):
        torch.testing.assert_close(model[1].weight, ema.shadow["1.weight"])
        assert torch.equal(model[0].bias, raw["0.bias"])  # untracked: untouched
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw[k])
    ema.copy_to(model)
    assert torch.equal(model[1].weight, ema.shadow["1.weight"])


def test_the_foreach_update_equals_the_per_tensor_loop_bit_for_bit():
    """`update` runs two `torch._foreach_*` calls over cached lists; the per-tensor loop it replaced is the
    reference: 50 updates with warm-up (the decay changes every step), on weights that move each step."""
    model = make_model()
    ema = EMA(model, decay=0.999, warmup=True)
    reference = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
    gen = torch.Generator().manual_seed(0)
    for n_update in range(50):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen))
        decay = min(0.999, (1 + n_update) / (10 + n_update))
        for name, p in model.named_parameters():
            if p.requires_grad:
                reference[name].mul_(decay).add_(p.detach().float(), alpha=1 - decay)
        ema.update(model)
    for name, value in reference.items():
        assert torch.equal(ema.shadow[name], value), name


def test_the_cached_lists_follow_a_loaded_state_and_a_moved_model():
    model = make_model()
    ema = EMA(model, decay=0.5, warmup=False)
    ema.update(model)  # builds the lists
    sd = {**ema.state_dict(), "shadow": {n: torch.full_like(v, 2.0) for n, v in ema.shadow.items()}}
    ema.load_state_dict(sd)
    model.to(torch.float64).to(torch.float32)  # swaps each parameter's data, keeps the Parameter objects
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(4.0)
    ema.update(model)
    for value in ema.shadow.values():
        assert torch.equal(value, torch.full_like(value, 3.0))  # 0.5 * 2 (loaded) + 0.5 * 4 (moved weights)
