"""Video DiT size registry (torch-free so configs can validate without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiTSize:
    """Transformer shape of one DiT variant."""

    hidden: int
    """Width of every token (must be divisible by `heads`)."""
    depth: int
    """Number of (spatial + temporal + cross-attention) blocks."""
    heads: int
    """Attention heads per attention layer."""
    mlp_ratio: float = 4.0
    """MLP hidden width as a multiple of `hidden`."""

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ValueError(f"DiT hidden={self.hidden} must be divisible by heads={self.heads}")


# DiT-S/B follow facebookresearch/DiT models.py; the smaller ones exist so that CPU runs finish.
DIT_SIZES: dict[str, DiTSize] = {
    "dit-tiny": DiTSize(hidden=64, depth=2, heads=4),
    "dit-mini": DiTSize(hidden=128, depth=4, heads=4),
    "dit-xs": DiTSize(hidden=192, depth=6, heads=3),
    "dit-s": DiTSize(hidden=384, depth=12, heads=6),
    "dit-b": DiTSize(hidden=768, depth=12, heads=12),
}
