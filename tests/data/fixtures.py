"""Tiny real-corpus fixtures on disk: videos written with PyAV, PNG frame folders, annotation files.

Frame `i` of every clip is a flat grey of level `frame_level(i)`, so a test can tell which source
frames a decoder sampled even through a lossy codec.
"""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
from PIL import Image

HOW2SIGN_COLUMNS = (
    "VIDEO_ID",
    "VIDEO_NAME",
    "SENTENCE_ID",
    "SENTENCE_NAME",
    "START_REALIGNED",
    "END_REALIGNED",
    "SENTENCE",
)
PHOENIX_COLUMNS = ("name", "video", "start", "end", "speaker", "orth", "translation")
PHOENIX_SPLITS = {"train": "train", "val": "dev", "test": "test"}
CODEC = "libx264" if "libx264" in av.codecs_available else "mpeg4"


def frame_level(i: int) -> int:
    """Grey level of frame `i` (distinct for i < 12, far apart enough to survive compression)."""
    return 20 + 20 * (i % 12)


def frame(i: int, width: int, height: int) -> np.ndarray:
    """Frame `i`: flat grey `frame_level(i)` with a small dark square moving left to right."""
    img = np.full((height, width, 3), frame_level(i), np.uint8)
    x = (4 * i) % max(1, width - 8)
    img[height // 2 - 4 : height // 2 + 4, x : x + 8] = 0
    return img


def write_video(path: Path, frames: int = 12, width: int = 64, height: int = 48, fps: int = 24) -> Path:
    """An H.264 (else MPEG-4) `.mp4` of `frames` frames of `frame(i)`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC, rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if CODEC == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18"}
        for i in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(i, width, height), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frames(folder: Path, frames: int = 8, width: int = 210, height: int = 260) -> Path:
    """A folder of `images0001.png`... (PHOENIX naming) holding `frame(i)`."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        Image.fromarray(frame(i, width, height)).save(folder / f"images{i + 1:04d}.png", compress_level=1)
    return folder


def sentence(split: str, i: int) -> str:
    return f"{split} sentence number {i}."


def make_how2sign(
    root: Path,
    counts: dict[str, int],
    realigned: bool = True,
    raw_videos: bool = True,
    frames: int = 12,
    width: int = 64,
    height: int = 48,
    csv_dir: str = "",
    extra_rows: Sequence[Sequence[str]] = (),
) -> Path:
    """How2Sign under `root`: `{csv_dir}/how2sign[_realigned]_{split}.csv` (tab-separated) and clips in
    `{split}_rgb_front_clips[/raw_videos]/<SENTENCE_NAME>.mp4`. `extra_rows` go into the train CSV as is."""
    columns = list(HOW2SIGN_COLUMNS) if realigned else [c.replace("_REALIGNED", "") for c in HOW2SIGN_COLUMNS]
    for split, n in counts.items():
        clips = root / f"{split}_rgb_front_clips" / ("raw_videos" if raw_videos else "")
        rows = []
        for i in range(n):
            video_id = f"vid{split}{i // 2}"
            name = f"{video_id}_{i}-5-rgb_front"
            write_video(clips / f"{name}.mp4", frames, width, height)
            rows.append(
                [
                    video_id,
                    f"{video_id}-5-rgb_front",
                    f"{video_id}_{i}",
                    name,
                    f"{i:.2f}",
                    f"{i + 2:.2f}",
                    sentence(split, i),
                ]
            )
        if split == "train":
            rows += [list(r) for r in extra_rows]
        stem = "how2sign_realigned" if realigned else "how2sign"
        csv_path = root / csv_dir / f"{stem}_{split}.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(columns)
            w.writerows(rows)
    return root


def make_phoenix(release: Path, counts: dict[str, int], frames: int = 8, one_subfolder: bool = False) -> Path:
    """`release/PHOENIX-2014-T/` with the manual annotations (`|`-separated) and 210x260 PNG frames.
    Returns the `PHOENIX-2014-T` folder."""
    root = release / "PHOENIX-2014-T"
    manual = root / "annotations" / "manual"
    manual.mkdir(parents=True, exist_ok=True)
    for split, n in counts.items():
        ph = PHOENIX_SPLITS[split]
        rows = []
        for i in range(n):
            name = f"{i + 1:02d}August_2010_Wednesday_tagesschau-{split}{i}"
            folder = root / "features" / "fullFrame-210x260px" / ph / name
            write_frames(folder / "1" if one_subfolder else folder, frames)
            rows.append(
                [
                    name,
                    f"{name}/1/*.png",
                    "-1",
                    "-1",
                    f"Signer0{i % 3 + 1}",
                    f"DRUCK TIEF KOMMEN {i}",
                    f"tiefer luftdruck bestimmt in den nächsten tagen unser wetter {split} {i}",
                ]
            )
        with open(manual / f"PHOENIX-2014-T.{ph}.corpus.csv", "w", newline="") as f:
            w = csv.writer(f, delimiter="|", lineterminator="\n")
            w.writerow(PHOENIX_COLUMNS)
            w.writerows(rows)
    return root


def write_manifest(
    path: Path, rows: Sequence[dict[str, str]], columns: Sequence[str] = ("video", "text", "split")
) -> Path:
    """A comma-separated manifest with `columns` (missing keys are written empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path
