"""LPIPS between paired video clips, frame by frame, loaded without ever touching the network.

The `lpips` wheel ships only the linear heads; the AlexNet/VGG/SqueezeNet trunk comes from torchvision, which
downloads it into `torch.hub.get_dir()/checkpoints/` unless the file is already there (a cached file is used
as is, no hash check). `load_lpips` therefore checks the cache first and reports NaN-worthy status instead of
constructing anything that would download. `random_backbone=True` builds a random trunk (torchvision gets
`pretrained=False` -> `weights=None`, no download): its values are not LPIPS and exist for tests only.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
BACKBONE_URL = "https://download.pytorch.org/models/{}"
MIN_SIDE = 64  # AlexNet's strided conv + two max-pools fail on frames below ~32 px
RANDOM_BACKBONE_STATUS = "random LPIPS backbone (pnet_rand=True): values are not LPIPS, tests only"


def lpips_backbone_file(net: str = "alex") -> Path:
    """Where torchvision looks for (and would download) the LPIPS trunk weights of `net`."""
    if net not in BACKBONE_FILES:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(BACKBONE_FILES)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def load_lpips(net: str = "alex", random_backbone: bool = False) -> tuple[Optional[nn.Module], str]:
    """Frozen `lpips.LPIPS` in eval mode and a status; (None, why) when the trunk weights are not cached.

    Never downloads: without the cached trunk nothing is constructed. `random_backbone=True` is for tests.
    """
    path = lpips_backbone_file(net)
    if not random_backbone and not path.is_file():
        name = BACKBONE_FILES[net]
        return None, (
            f"LPIPS backbone weights not cached: put {name} in {path.parent} (from {BACKBONE_URL.format(name)})"
        )
    import lpips

    with warnings.catch_warnings():  # torchvision's "'pretrained' is deprecated", raised by lpips' own call
        warnings.filterwarnings("ignore", message=".*(pretrained|weights).*", category=UserWarning)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=random_backbone, verbose=False)
    model.eval().requires_grad_(False)
    return model, RANDOM_BACKBONE_STATUS if random_backbone else "ok"


def _prepare_frames(frames: torch.Tensor) -> torch.Tensor:
    """Frames (N, C, H, W) -> float RGB, upsampled so the shorter side is >= MIN_SIDE."""
    frames = frames.float()
    if frames.shape[1] == 1:
        frames = frames.repeat(1, 3, 1, 1)
    h, w = frames.shape[-2:]
    if min(h, w) < MIN_SIDE:
        scale = MIN_SIDE / min(h, w)
        size = (round(h * scale), round(w * scale))
        frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    return frames


@torch.no_grad()
def lpips_video(model: nn.Module, a: torch.Tensor, b: torch.Tensor, batch_frames: int = 64) -> float:
    """Mean LPIPS over all paired frames of clips a[i] and b[i], both (B, C, T, H, W) in [-1, 1].

    Frames whose shorter side is below 64 px are upsampled (bilinear, aspect kept) to 64 first, since
    AlexNet's pooling breaks on tiny frames; values at such sizes are comparable only among themselves.
    Grey clips (C=1) are repeated to RGB.
    """
    if a.ndim != 5 or a.shape != b.shape:
        raise ValueError(f"expected two (B, C, T, H, W) tensors of equal shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    device = next(model.parameters()).device
    frames_a = rearrange(a, "b c t h w -> (b t) c h w")
    frames_b = rearrange(b, "b c t h w -> (b t) c h w")
    total = 0.0
    for fa, fb in zip(frames_a.split(batch_frames), frames_b.split(batch_frames)):
        fa, fb = _prepare_frames(fa.to(device)), _prepare_frames(fb.to(device))
        total += model(fa, fb).double().sum().item()
    return total / frames_a.shape[0]
