"""A small text-to-sign video generator that owns all of its code: its own text encoder (a bag of hashed words,
frozen or trained), a 3-D transposed-conv decoder from (text, noise) to a clip, and its own EMA.

Clips are float tensors (B, 3, T, H, W) in [-1, 1]. It is a regressor onto the training clips (MSE), not a
diffusion model: it stands for "your model", whatever it is.
"""

from __future__ import annotations

import copy
import zlib

import torch
from torch import nn

BUCKETS = 512  # hashed word ids: any caption, no vocabulary file


def word_ids(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, offsets) for `nn.EmbeddingBag`: each lower-cased word hashed into `BUCKETS` (crc32: stable)."""
    ids, offsets = [], []
    for text in texts:
        offsets.append(len(ids))
        ids.extend(zlib.crc32(w.encode()) % BUCKETS for w in (text.lower().split() or ["<empty>"]))
    return torch.tensor(ids), torch.tensor(offsets)


class BagOfWordsEncoder(nn.Module):
    """Caption -> one vector: the mean of its words' embeddings, then a linear layer."""

    def __init__(self, dim: int):
        super().__init__()
        self.embed = nn.EmbeddingBag(BUCKETS, dim, mode="mean")
        self.proj = nn.Linear(dim, dim)

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, offsets = word_ids(texts)
        return self.proj(self.embed(ids.to(self.proj.weight.device), offsets.to(self.proj.weight.device)))


class ClipDecoder(nn.Module):
    """(text vector, noise) -> clip (B, 3, T, H, W): a linear map to a (T/2, H/8, W/8) grid, three upsamplings."""

    def __init__(self, text_dim: int, noise_dim: int, width: int, frames: int, size: int):
        super().__init__()
        self.grid = (width, frames // 2, size // 8, size // 8)
        self.inp = nn.Linear(text_dim + noise_dim, width * (frames // 2) * (size // 8) ** 2)
        self.up = nn.Sequential(
            nn.ConvTranspose3d(width, width, (4, 4, 4), stride=(2, 2, 2), padding=1),
            nn.GELU(),  # time and space x2
            nn.ConvTranspose3d(width, width, (3, 4, 4), stride=(1, 2, 2), padding=1),
            nn.GELU(),  # space x2
            nn.ConvTranspose3d(width, width // 2, (3, 4, 4), stride=(1, 2, 2), padding=1),
            nn.GELU(),  # space x2
            nn.Conv3d(width // 2, 3, 3, padding=1),
        )

    def forward(self, text: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        x = self.inp(torch.cat([text, noise], dim=1)).view(len(text), *self.grid)
        return torch.tanh(self.up(x))


class TextToSign(nn.Module):
    """The whole generator; `freeze_text` keeps the encoder at its initial weights (the "pretrained" stand-in)."""

    def __init__(self, text_dim: int, noise_dim: int, width: int, frames: int, size: int, freeze_text: bool):
        super().__init__()
        if frames % 2 or size % 8:
            raise ValueError(f"frames must be even and size a multiple of 8, got frames={frames}, size={size}")
        self.noise_dim = noise_dim
        self.text = BagOfWordsEncoder(text_dim).requires_grad_(not freeze_text)
        self.decoder = ClipDecoder(text_dim, noise_dim, width, frames, size)

    def forward(self, texts: list[str], noise: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.text(texts), noise)


class EMA:
    """A float32 copy of the model updated as shadow <- d * shadow + (1 - d) * weights after every step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.shadow = decay, copy.deepcopy(model).requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters()):
            s.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.shadow.load_state_dict(sd)
