"""Decoding one clip into uint8 `(T, H, W, 3)`: a video file (PyAV) or a folder of frames (Pillow).

T frames are sampled uniformly over the clip (`sample_indices`), each resized so that it covers
H x W and centre-cropped (`resize_crop`). Only the sampled frames are converted: a video is
decoded sequentially and the other frames are dropped; a frame folder opens only the sampled files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import av

__all__ = [
    "FRAME_SUFFIXES",
    "ClipError",
    "decode_clip",
    "decode_frames",
    "decode_video",
    "frame_files",
    "resize_crop",
    "sample_indices",
]

FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
"""Image files a frame folder may hold (upper case too)."""


class ClipError(ValueError):
    """A clip could not be read; `path` and `reason` say which and why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def sample_indices(num_frames: int, frames: int) -> np.ndarray:
    """`frames` indices spread uniformly over `[0, num_frames)`, first and last included.

    A clip shorter than `frames` repeats frames (nearest index), so every clip yields exactly T.
    """
    if num_frames < 1 or frames < 1:
        raise ValueError(f"need num_frames >= 1 and frames >= 1, got {num_frames} and {frames}")
    return np.linspace(0, num_frames - 1, frames).round().astype(np.int64)


def resize_crop(image: Image.Image, height: int, width: int) -> np.ndarray:
    """Scale `image` (antialiased bilinear) until it covers `height x width`, centre-crop: uint8 `(H, W, 3)`."""
    iw, ih = image.size
    scale = max(width / iw, height / ih)
    bw, bh = width / scale, height / scale  # the centred source box with the target's aspect ratio
    box = ((iw - bw) / 2, (ih - bh) / 2, (iw + bw) / 2, (ih + bh) / 2)
    # reducing_gap: a cheap integer box-reduction first when shrinking a lot (720p -> 64 px)
    out = image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR, box=box, reducing_gap=3.0)
    return np.asarray(out, dtype=np.uint8)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frame folder in natural order (`images2.png` before `images10.png`)."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()]
    return sorted(files, key=lambda p: _natural_key(p.name))


def decode_frames(folder: Path, frames: int, height: int, width: int) -> np.ndarray:
    """T frames of a folder of images, uniformly sampled, resized and cropped: uint8 `(T, H, W, 3)`."""
    files = frame_files(folder)
    if not files:
        raise ClipError(folder, f"no {'/'.join(FRAME_SUFFIXES)} frames in the folder")
    out = np.empty((frames, height, width, 3), np.uint8)
    loaded: dict[int, np.ndarray] = {}  # a short clip samples some frames twice: read each once
    for t, i in enumerate(sample_indices(len(files), frames)):
        if i not in loaded:
            try:
                with Image.open(files[i]) as img:
                    img.draft("RGB", (width, height))  # JPEG: decode at a reduced scale; no-op for PNG
                    loaded[i] = resize_crop(img, height, width)
            except OSError as err:  # also PIL.UnidentifiedImageError and truncated files
                raise ClipError(files[i], f"unreadable frame ({err})") from None
        out[t] = loaded[i]
    return out


def _count_frames(stream: av.video.stream.VideoStream) -> int:
    """Frames the container says the stream has (0 when it does not say)."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and stream.average_rate:
        return int(round(float(stream.duration * stream.time_base * stream.average_rate)))
    return 0


def _decode_pass(path: Path, wanted: set[int], height: int, width: int) -> tuple[dict[int, np.ndarray], int]:
    """Decode the whole video once, converting only frames `wanted`; also returns the true frame count."""
    import av

    kept: dict[int, np.ndarray] = {}
    n = 0
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ClipError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if n in wanted:
                kept[n] = resize_crop(frame.to_image(), height, width)
            n += 1
    return kept, n


def decode_video(path: Path, frames: int, height: int, width: int) -> np.ndarray:
    """T frames of a video file, uniformly sampled, resized and cropped: uint8 `(T, H, W, 3)`."""
    import av  # here, not at the top: SynthSign (frame-free) runs need no PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(path, "no video stream")
            expected = _count_frames(container.streams.video[0])
        idx = sample_indices(expected, frames) if expected else np.zeros(0, np.int64)
        kept, n = _decode_pass(path, set(idx.tolist()), height, width)
        if n == 0:
            raise ClipError(path, "no decodable frames")
        if n != expected:  # the header's frame count was wrong or missing: decode again with the true one
            idx = sample_indices(n, frames)
            kept, _ = _decode_pass(path, set(idx.tolist()), height, width)
    except av.error.FFmpegError as err:
        raise ClipError(path, f"undecodable video ({err})") from None
    except OSError as err:
        raise ClipError(path, f"unreadable ({err})") from None
    return np.stack([kept[i] for i in idx.tolist()])


def decode_clip(path: Path, frames: int, height: int, width: int) -> np.ndarray:
    """A video file or a frame folder as uint8 `(frames, height, width, 3)`; `ClipError` if unreadable."""
    if path.is_dir():
        return decode_frames(path, frames, height, width)
    if not path.exists():
        raise ClipError(path, "no such file or folder")
    return decode_video(path, frames, height, width)
