"""Video DiT: factorized space-time transformer with text cross-attention and adaLN-Zero.

Each block runs spatial self-attention (tokens of one frame), temporal self-attention (one patch
position across frames), cross-attention to the caption tokens, then an MLP. The timestep
embedding plus a projection of the pooled caption modulates every block (adaLN-Zero, as in
facebookresearch/DiT); modulation, cross-attention output and final layer start at zero, so the
untrained network outputs 0 and every block starts as the identity.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from t2s_ray.t2s.models.sizes import DiTSize
from t2s_ray.t2s.models.text_encoder import TextOutput


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: `x * (1 + scale) + shift`."""
    return x * (1 + scale) + shift


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim) fixed sin-cos embedding (MAE/DiT convention)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h * grid_w, dim) sin-cos embedding: half the channels encode the row, half the column."""
    rows, cols = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, rows.flatten()), sincos_1d(dim // 2, cols.flatten())], dim=1)


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> vectors: sinusoidal features then an MLP (DiT)."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([args.cos(), args.sin()], dim=-1))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the second axis of (N, L, D)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "n h l d -> n l (h d)"))


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) bool caption mask (True = real token) -> (B, 1, 1, L) additive bias: 0 at real tokens, -inf at
    padding. An additive mask lets attention use the memory-efficient kernels, which a bool mask rules out on
    some backends; it is made once per forward, not per block."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask.bool(), float("-inf"))
    return bias[:, None, None, :]


class CrossAttention(nn.Module):
    """Multi-head attention from video tokens to caption tokens, ignoring padding."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, N, D), context (B, L, Dtext), bias (B, 1, 1, L) from `attention_bias` -> (B, N, D)."""
        q = rearrange(self.q(x), "b l (h d) -> b h l d", h=self.heads)
        k, v = rearrange(self.kv(context), "b m (two h d) -> two b h m d", two=2, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(rearrange(out, "b h l d -> b l (h d)"))


class DiTBlock(nn.Module):
    """Spatial attention, temporal attention, cross-attention, MLP; adaLN-Zero modulated."""

    def __init__(self, hidden: int, heads: int, mlp_ratio: float, text_dim: int):
        super().__init__()
        self.norm_s = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn_s = SelfAttention(hidden, heads)
        self.norm_t = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn_t = SelfAttention(hidden, heads)
        self.norm_c = nn.LayerNorm(hidden, eps=1e-6)
        self.cross = CrossAttention(hidden, text_dim, heads)
        self.norm_m = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden)
        )
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 9 * hidden))  # shift/scale/gate x 3

    def forward(self, x: torch.Tensor, c: torch.Tensor, text: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, S, D), c (B, D), text (B, L, Dtext), bias (B, 1, 1, L) from `attention_bias` -> (B, T, S, D)."""
        T, S = x.shape[1], x.shape[2]
        mods = rearrange(self.adaLN(c), "b d -> b 1 1 d").chunk(9, dim=-1)
        shift_s, scale_s, gate_s, shift_t, scale_t, gate_t, shift_m, scale_m, gate_m = mods
        # spatial attention
        h = rearrange(modulate(self.norm_s(x), shift_s, scale_s), "b t s d -> (b t) s d")
        x = x + gate_s * rearrange(self.attn_s(h), "(b t) s d -> b t s d", t=T)
        # temporal attention
        h = rearrange(modulate(self.norm_t(x), shift_t, scale_t), "b t s d -> (b s) t d")
        x = x + gate_t * rearrange(self.attn_t(h), "(b s) t d -> b t s d", s=S)
        # cross-attention (output projection zero-initialised instead of a gate, as in Open-Sora)
        h = self.cross(rearrange(self.norm_c(x), "b t s d -> b (t s) d"), text, bias)
        x = x + rearrange(h, "b (t s) d -> b t s d", t=T)
        # mlp
        return x + gate_m * self.mlp(modulate(self.norm_m(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a linear map from tokens back to patch pixels."""

    def __init__(self, hidden: int, patch_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch_dim)
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = rearrange(self.adaLN(c), "b d -> b 1 1 d").chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class VideoDiT(nn.Module):
    """Text-conditioned video denoiser: (B, C, T, H, W) noisy clip -> same-shaped eps or v."""

    def __init__(
        self,
        size: DiTSize,
        frames: int,
        height: int,
        width: int,
        patch_size: int,
        in_channels: int = 3,
        text_dim: int = 384,
        grad_checkpointing: bool = False,
        learned_pos_embed: bool = False,
    ):
        super().__init__()
        if height % patch_size or width % patch_size:
            raise ValueError(f"patch_size={patch_size} must divide height={height} and width={width}")
        self.frames, self.height, self.width = frames, height, width
        self.patch_size, self.in_channels, self.text_dim = patch_size, in_channels, text_dim
        self.grid = (height // patch_size, width // patch_size)
        self.grad_checkpointing = grad_checkpointing
        D = size.hidden
        self.patch_embed = nn.Linear(patch_size * patch_size * in_channels, D)
        self._init_pos_embed(D, learned_pos_embed)
        self.t_embed = TimestepEmbedder(D)
        self.text_embed = nn.Sequential(nn.Linear(text_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.blocks = nn.ModuleList(DiTBlock(D, size.heads, size.mlp_ratio, text_dim) for _ in range(size.depth))
        self.final = FinalLayer(D, patch_size * patch_size * in_channels)
        self._init_weights()
        self._compiled: list | None = None  # a plain list: the compiled wrappers are no submodules (state_dict)
        self._use_compiled = True

    def compile_blocks(self) -> None:
        """`torch.compile` every block (static shapes; the blocks share one graph, their weights are inputs) for
        the training step: forward with gradients in training mode. Sampling stays eager (its batch sizes vary)."""
        self._compiled = [torch.compile(block, dynamic=False) for block in self.blocks]

    @contextlib.contextmanager
    def eager(self):
        """The blocks run uncompiled inside the block."""
        before, self._use_compiled = self._use_compiled, False
        try:
            yield self
        finally:
            self._use_compiled = before

    def _init_pos_embed(self, dim: int, learned: bool) -> None:
        """Spatial (S, D) and temporal (T, D) sin-cos tables; `learned` makes them parameters (sin-cos init)."""
        spatial, temporal = sincos_2d(dim, *self.grid), sincos_1d(dim, torch.arange(self.frames))
        if learned:
            self.pos_spatial, self.pos_temporal = nn.Parameter(spatial), nn.Parameter(temporal)
        else:
            self.register_buffer("pos_spatial", spatial, persistent=False)
            self.register_buffer("pos_temporal", temporal, persistent=False)

    def _init_weights(self) -> None:
        """DiT init: xavier linears, N(0, 0.02) timestep MLP, zero adaLN / final / cross-attn output."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.t_embed.mlp[0], self.t_embed.mlp[2]:
            nn.init.normal_(m.weight, std=0.02)
        zeroed = [self.final.adaLN[-1], self.final.linear]
        for block in self.blocks:
            zeroed += [block.adaLN[-1], block.cross.proj]
        for m in zeroed:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor, text: TextOutput) -> None:
        want = (self.in_channels, self.frames, self.height, self.width)
        if x.ndim != 5 or tuple(x.shape[1:]) != want:
            raise ValueError(
                f"VideoDiT expects x of shape (B, C, T, H, W) = (B, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )
        B = x.shape[0]
        if t.shape != (B,):
            raise ValueError(f"VideoDiT expects t of shape (B,) = ({B},), got {tuple(t.shape)}")
        if text.tokens.ndim != 3 or text.tokens.shape[0] != B or text.tokens.shape[2] != self.text_dim:
            raise ValueError(
                f"VideoDiT expects text tokens of shape (B, L, text_dim) = ({B}, L, {self.text_dim}), "
                f"got {tuple(text.tokens.shape)}"
            )
        if text.mask.shape != text.tokens.shape[:2] or text.pooled.shape != (B, self.text_dim):
            raise ValueError(
                f"text mask {tuple(text.mask.shape)} / pooled {tuple(text.pooled.shape)} do not match "
                f"tokens {tuple(text.tokens.shape)}"
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: TextOutput) -> torch.Tensor:
        """x (B, C, T, H, W), t (B,) timesteps, text caption tokens -> prediction (B, C, T, H, W)."""
        self._check_inputs(x, t, text)
        p = self.patch_size
        # patchify every frame
        h = rearrange(x, "b c t (gh p1) (gw p2) -> b t (gh gw) (p1 p2 c)", p1=p, p2=p)
        h = self.patch_embed(h) + self.pos_spatial[None, None] + self.pos_temporal[None, :, None]
        c = self.t_embed(t) + self.text_embed(text.pooled)
        tokens, bias = text.tokens, attention_bias(text.mask, h.dtype)
        training = self.training and torch.is_grad_enabled()
        blocks = self._compiled if training and self._compiled and self._use_compiled else self.blocks
        for block in blocks:
            if self.grad_checkpointing and training:
                h = checkpoint(block, h, c, tokens, bias, use_reentrant=False)
            else:
                h = block(h, c, tokens, bias)
        # unpatchify
        out = self.final(h, c)
        return rearrange(out, "b t (gh gw) (p1 p2 c) -> b c t (gh p1) (gw p2)", gh=self.grid[0], p1=p, p2=p)
