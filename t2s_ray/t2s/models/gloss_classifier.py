"""GlossClassifier: a small 3-D CNN that reads SynthSign clips and names their glosses in order.

It is the feature network of `fvd_synthsign` (`features`) and the recogniser of
`text_alignment` (`predict`). A sentence's frames are split across its 1-3 glosses in order, so
the network keeps every frame (spatial strides only), labels each one with a gloss or "blank",
and is trained with CTC, as continuous sign-language recognisers are: each gloss is read where
it is signed. (One whole-clip head per gloss position read 3% of the test split's sentences
exactly: with a global view it learnt which training sentences the glosses came from.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class GlossClassifierArch:
    """Everything that fixes the classifier's parameter shapes (saved beside its weights)."""

    num_glosses: int
    """Gloss vocabulary size; the frame classifier has `num_glosses + 1` classes (the last = blank)."""
    clip_shape: tuple[int, int, int]
    """(T, H, W) of the clips it reads; other shapes raise."""
    widths: tuple[int, ...] = (16, 32, 64, 128)
    """Channels of the conv blocks; each halves H and W."""
    feature_dim: int = 128
    """Size of the per-frame embedding and of `features` (the Fréchet feature space)."""

    def __post_init__(self) -> None:
        if self.num_glosses < 1 or self.feature_dim < 1:
            raise ValueError(f"num_glosses and feature_dim must be >= 1, got {self}")
        if len(self.clip_shape) != 3 or min(self.clip_shape) < 1:
            raise ValueError(f"clip_shape must be (T, H, W) of positive ints, got {self.clip_shape}")
        if not self.widths or any(w < 4 or w % 4 for w in self.widths):
            raise ValueError(f"widths must be a non-empty list of multiples of 4, got {self.widths}")

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> GlossClassifierArch:
        """Inverse of `to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def conv_block(c_in: int, c_out: int, kernel_t: int) -> nn.Sequential:
    """Conv3d (kernel `kernel_t`x3x3, spatial stride 2) -> GroupNorm -> SiLU."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, (kernel_t, 3, 3), stride=(1, 2, 2), padding=(kernel_t // 2, 1, 1)),
        nn.GroupNorm(min(8, c_out // 4), c_out),
        nn.SiLU(),
    )


class GlossClassifier(nn.Module):
    """Video `(B, 3, T, H, W)` in [-1, 1] -> per-frame embeddings `(B, T, F)` -> per-frame gloss logits."""

    def __init__(self, arch: GlossClassifierArch):
        super().__init__()
        self.arch = arch
        # the first block sees single frames (cheap at full resolution); later ones see motion
        kernels_t = [1] + [3] * (len(arch.widths) - 1)
        chans = (3, *arch.widths)
        self.trunk = nn.Sequential(*(conv_block(a, b, k) for a, b, k in zip(chans, chans[1:], kernels_t)))
        self.embed = nn.Sequential(nn.Linear(arch.widths[-1] * 2 * 2, arch.feature_dim), nn.SiLU())
        self.classify = nn.Linear(arch.feature_dim, arch.num_glosses + 1)

    @property
    def blank(self) -> int:
        """The class id of a frame that shows no gloss of its own (CTC's blank)."""
        return self.arch.num_glosses

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (3, *self.arch.clip_shape)
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(
                f"GlossClassifier expects (B, C, T, H, W) = (B, {', '.join(map(str, expected))}) "
                f"in [-1, 1] (see data.video.to_model_input), got {got}"
            )

    def frame_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings `(B, T, feature_dim)`."""
        self._check_input(x)
        h = self.trunk(x)
        # a 2x2 grid rather than a point: where the hands are (forehead vs chest) names the gloss
        h = F.adaptive_avg_pool3d(h, (h.shape[2], 2, 2))
        return self.embed(rearrange(h, "b c t h w -> b t (c h w)"))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The clip embedding `(B, feature_dim)` (time-averaged frame embeddings): the Fréchet space."""
        return self.frame_features(x).mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-frame logits `(B, T, num_glosses + 1)`; class `num_glosses` = blank."""
        return self.classify(self.frame_features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> list[tuple[int, ...]]:
        """The gloss ids read in each clip, in order (greedy CTC decoding of `forward`)."""
        return ctc_decode(self(x), self.blank)


def ctc_decode(logits: torch.Tensor, blank: int) -> list[tuple[int, ...]]:
    """Greedy CTC decoding of `(B, T, classes)`: best class per frame, repeats merged, blanks dropped."""
    out = []
    for row in logits.argmax(dim=-1).tolist():
        merged = [c for i, c in enumerate(row) if i == 0 or c != row[i - 1]]
        out.append(tuple(c for c in merged if c != blank))
    return out


def ctc_loss(logits: torch.Tensor, glosses: list[tuple[int, ...]], blank: int) -> torch.Tensor:
    """Mean CTC loss of per-frame logits `(B, T, classes)` against each clip's gloss sequence."""
    b, t, _ = logits.shape
    if any(not 1 <= len(g) <= t for g in glosses):
        raise ValueError(f"CTC needs 1..T={t} glosses per clip, got lengths {sorted({len(g) for g in glosses})}")
    targets = torch.tensor([g for seq in glosses for g in seq], dtype=torch.long, device=logits.device)
    lengths = torch.tensor([len(seq) for seq in glosses], dtype=torch.long)
    log_probs = rearrange(logits.float().log_softmax(-1), "b t k -> t b k")
    return F.ctc_loss(log_probs, targets, torch.full((b,), t, dtype=torch.long), lengths, blank=blank)
