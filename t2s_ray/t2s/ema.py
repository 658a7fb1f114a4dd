"""Exponential moving average of the trainable weights, with optional warm-up and its own state dict."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn


class EMA:
    """float32 shadow copy of the parameters that were trainable at construction (by name).

    At update n (0-based), decay_n = min(decay, (1 + n) / (10 + n)) with warm-up, else `decay`;
    shadow <- decay_n * shadow + (1 - decay_n) * param. Call `update` after every optimizer step.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay, self.warmup = decay, warmup
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: p.detach().float().clone() for name, p in model.named_parameters() if p.requires_grad
        }
        self._lists: tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]] | None = None

    def current_decay(self) -> float:
        """Decay the next `update` will use."""
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    def _tracked(self, model: nn.Module) -> dict[str, nn.Parameter]:
        params = dict(model.named_parameters())
        missing = [name for name in self.shadow if name not in params]
        if missing:
            raise KeyError(f"EMA tracks parameters the model does not have: {missing[:5]}")
        return {name: params[name] for name in self.shadow}

    def _tensor_lists(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(shadow tensors, parameter tensors) in one order, built once per model: `update` runs every step and
        walks no names (the lists hold the shadow tensors, which `load_state_dict` copies into in place, and the
        `Parameter` objects, which `model.to()` keeps)."""
        if self._lists is None or self._lists[0] is not model:
            tracked = self._tracked(model)
            self._lists = (model, [self.shadow[n] for n in tracked], list(tracked.values()))
        return self._lists[1], self._lists[2]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow weights towards `model`'s current weights by one step: two `torch._foreach_*` calls
        over every tensor (a few kernels instead of two per tensor; the same arithmetic as a per-tensor
        `mul_(decay).add_(p, alpha=1 - decay)`, bit for bit)."""
        decay = self.current_decay()
        shadow, params = self._tensor_lists(model)
        if any(p.dtype != torch.float32 for p in params):
            params = [p.float() for p in params]
        torch._foreach_mul_(shadow, decay)
        torch._foreach_add_(shadow, params, alpha=1 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite `model`'s tracked parameters with the EMA weights."""
        for name, p in self._tracked(model).items():
            p.copy_(self.shadow[name])

    @contextmanager
    def applied_to(self, model: nn.Module):
        """Evaluate with the EMA weights inside the block; the raw weights come back afterwards."""
        raw = {name: p.detach().clone() for name, p in self._tracked(model).items()}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, p in self._tracked(model).items():
                    p.copy_(raw[name])

    def state_dict(self) -> dict:
        """Settings, update count and shadow weights (tensors only: loads with weights_only=True)."""
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "num_updates": self.num_updates,
            "shadow": dict(self.shadow),
        }

    def load_state_dict(self, sd: dict) -> None:
        """Restore a `state_dict()`; the tracked names and the settings must match this EMA's."""
        if (sd["decay"], sd["warmup"]) != (self.decay, self.warmup):
            raise ValueError(
                f"EMA state has decay={sd['decay']}, warmup={sd['warmup']} but this EMA has "
                f"decay={self.decay}, warmup={self.warmup}"
            )
        if set(sd["shadow"]) != set(self.shadow):
            diff = sorted(set(sd["shadow"]) ^ set(self.shadow))
            raise KeyError(f"EMA state tracks different parameters; mismatched names: {diff[:5]}")
        for name, value in sd["shadow"].items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(
                    f"EMA state {name}: shape {tuple(value.shape)}, expected {tuple(self.shadow[name].shape)}"
                )
            self.shadow[name].copy_(value)
        self.num_updates = int(sd["num_updates"])
