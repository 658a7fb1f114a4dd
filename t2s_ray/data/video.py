"""Video tensors at the data/model boundary, and GIF/MP4 previews.

On disk and in datasets a clip is uint8 `(T, H, W, 3)`; in the model a batch is float32
`(B, C, T, H, W)` in [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageDraw, ImageFont

from t2s_ray.io import atomic_path


def _check_uint8_clips(videos, name: str) -> None:
    dtype_ok = videos.dtype == (torch.uint8 if isinstance(videos, torch.Tensor) else np.uint8)
    if videos.ndim != 5 or videos.shape[-1] != 3 or not dtype_ok:
        raise ValueError(f"{name} must be uint8 (B, T, H, W, 3), got {videos.dtype} {tuple(videos.shape)}")


def to_model_input(videos: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 `(B, T, H, W, 3)` (ndarray or tensor) -> float32 `(B, C, T, H, W)` in [-1, 1].

    The result is on `device` (default: the tensor's device, CPU for an ndarray); the uint8
    clips move there before the conversion, which sends 4x fewer bytes to a GPU.
    """
    _check_uint8_clips(videos, "videos")
    if isinstance(videos, np.ndarray):
        # torch.from_numpy warns on read-only arrays (memmaps) and rejects negative strides
        copy = not videos.flags.writeable or min(videos.strides) < 0
        videos = torch.from_numpy(np.array(videos) if copy else videos)
    x = rearrange(videos.to(device) if device is not None else videos, "b t h w c -> b c t h w").float()
    return (x / 127.5 - 1.0).contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float `(B, C, T, H, W)` in [-1, 1] -> uint8 `(B, T, H, W, 3)` ndarray (clamped, rounded)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
        raise ValueError(f"x must be a float tensor (B, C=3, T, H, W), got {shape}")
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(x, "b c t h w -> b t h w c").cpu().numpy()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap of `text` to lines at most `width` pixels wide."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(lines[-1] + " " + word, font=font) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _caption_sheet(
    captions: Sequence[str] | None, n: int, cols: int, cell: tuple[int, int], scale: int
) -> tuple[Image.Image, int]:
    """A white sheet of `n` cells (`cell` = clip width, height) with each caption under its cell."""
    font = ImageFont.load_default(size=max(10, 4 * scale))
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    wrapped = [_wrap(scratch, c, font, cell[0] - 4) for c in captions] if captions else [[]]
    line_h = font.getbbox("Ag")[3] + 3
    cell_h = cell[1] + max(len(lines) for lines in wrapped) * line_h + (4 if captions else 0)
    sheet = Image.new("RGB", (cols * cell[0], -(-n // cols) * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, lines in enumerate(wrapped if captions else []):
        x0, y0 = (i % cols) * cell[0] + 2, (i // cols) * cell_h + cell[1] + 2
        for k, line in enumerate(lines):
            draw.text((x0, y0 + k * line_h), line, fill="black", font=font)
    return sheet, cell_h


def _grid_frames(clips: np.ndarray, captions: Sequence[str] | None, scale: int, cols: int) -> list[Image.Image]:
    """One RGB image per frame: the clips side by side (`cols` a row), captions under each."""
    n, t, h, w, _ = clips.shape
    cols = min(n, cols)
    sheet, cell_h = _caption_sheet(captions, n, cols, (w * scale, h * scale), scale)
    big = clips.repeat(scale, axis=2).repeat(scale, axis=3)  # nearest-neighbour upscale
    frames = []
    for f in range(t):
        frame = sheet.copy()
        for i in range(n):
            frame.paste(Image.fromarray(big[i, f]), ((i % cols) * w * scale, (i // cols) * cell_h))
        frames.append(frame)
    return frames


def _sheet_frames(
    clips: np.ndarray, captions: Sequence[str] | None, scale: int, fps: int, cols: int
) -> list[Image.Image]:
    """`_grid_frames` after checking the arguments `save_gif` and `save_mp4` share."""
    clips = np.asarray(clips)
    if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
        raise ValueError(f"clips must be uint8 (N, T, H, W, 3), got {clips.dtype} {clips.shape}")
    if captions is not None and len(captions) != len(clips):
        raise ValueError(f"got {len(captions)} captions for {len(clips)} clips")
    if scale < 1 or fps < 1 or cols < 1:
        raise ValueError(f"scale, fps and cols must be >= 1, got scale={scale}, fps={fps}, cols={cols}")
    return _grid_frames(clips, captions, scale, cols)


def save_gif(
    path: str | os.PathLike,
    clips: np.ndarray,
    captions: Sequence[str] | None = None,
    scale: int = 3,
    fps: int = 8,
    cols: int = 4,
) -> None:
    """Write uint8 clips `(N, T, H, W, 3)` as one looping GIF, `cols` a row, each with its caption."""
    frames = _sheet_frames(clips, captions, scale, fps, cols)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0)


def save_mp4(
    path: str | os.PathLike,
    clips: np.ndarray,
    captions: Sequence[str] | None = None,
    scale: int = 3,
    fps: int = 8,
    cols: int = 4,
) -> None:
    """Write uint8 clips `(N, T, H, W, 3)` as one H.264 MP4 (libx264, yuv420p), laid out as `save_gif`.

    yuv420p needs even sizes: an odd width or height gets one white column or row.
    """
    import av  # lazy: only MP4 output needs PyAV's encoders

    frames = _sheet_frames(clips, captions, scale, fps, cols)
    w, h = frames[0].size
    size = (w + w % 2, h + h % 2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".mp4") as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
            stream.options = {"crf": "18"}  # near-lossless: the clips are small and sharp-edged
            for frame in frames:
                canvas = Image.new("RGB", size, "white")
                canvas.paste(frame)
                container.mux(stream.encode(av.VideoFrame.from_image(canvas)))
            container.mux(stream.encode())  # flush the encoder
