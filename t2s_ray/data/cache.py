"""Where datasets cache their preprocessed splits, and how they write them safely.

Every dataset caches a split as a uint8 `.npy` (memory-mapped when read) plus a JSON sidecar.
Writers hold a per-split file lock (one process builds while the others wait) and write through
`t2s_ray.io.atomic_path` (a temp file that replaces the final one only when complete), so a
reader never sees half a cache.
"""

from __future__ import annotations

import fcntl
import json
import logging
import operator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from t2s_ray.data.config import DataConfig
from t2s_ray.storage import cache_root as default_cache_root

__all__ = ["SPLITS", "CachedSplit", "cache_root", "check_index", "locked", "read_cached", "take_batch"]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def cache_root(cfg: DataConfig) -> Path:
    """`cfg.cache_dir`, else `$T2S_RAY_CACHE`, else `~/.cache/t2s-ray` (must be absolute)."""
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()
    if not root.is_absolute():
        # Ray Tune runs each trial in its own working directory: a relative cache is per trial
        raise ValueError(f"data.cache_dir must be an absolute path, got {str(root)!r}")
    return root


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if missing) for the duration of the block."""
    # one process builds a split while the others wait, instead of all building it at once
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_index(i: int, n: int, what: str) -> int:
    """`i` as a non-negative index into `n` clips (negative counts from the end); IndexError naming `what`."""
    i = operator.index(i)
    if not -n <= i < n:
        raise IndexError(f"clip {i} out of range for the {n}-clip {what}")
    return i % n


def take_batch(videos: np.ndarray, texts: list[str], indices: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Clips `(B, T, H, W, 3)` uint8 (one writable copy out of a memmap) and their captions."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(texts))):
        raise IndexError(f"indices must be a flat list in [0, {len(texts)}), got {indices!r}")
    out = np.empty((len(idx), *videos.shape[1:]), np.uint8)
    np.take(videos, idx, axis=0, out=out, mode="clip")  # one copy; indices checked above
    return out, [texts[i] for i in idx]


def read_cached(npy: Path, meta: Path, label: str) -> tuple[np.ndarray, dict] | None:
    """The memory-mapped clips and their JSON sidecar, or None (reason logged) if a half is missing or unreadable.

    Callers still check that the contents match what they expect.
    """
    if not (npy.exists() and meta.exists()):
        if npy.exists() or meta.exists():
            log.warning("%s cache %s lacks its .npy or .json half; rebuilding it", label, npy)
        return None
    try:
        with open(meta) as f:
            sidecar = json.load(f)
        videos = np.load(npy, mmap_mode="r")
    except (OSError, ValueError) as err:  # truncated or garbled file (JSONDecodeError is a ValueError)
        log.warning("%s cache %s is unreadable (%s); rebuilding it", label, npy, err)
        return None
    return videos, sidecar


class CachedSplit:
    """A dataset split cached as a uint8 memmap + JSON sidecar; implements the `ClipDataset` protocol.

    Subclasses implement `_open()`, which (re)opens the cache, building it if needed, and sets
    `videos`, `texts`, `glosses` and `path`; `_extra(i)` adds their own fields to `dataset[i]`.
    Pickling ships the config and re-opens the cache: a memmap would pickle as its full contents.
    """

    name = ""
    num_glosses = 0
    videos: np.ndarray
    texts: list[str]
    glosses: list[tuple[int, ...]]
    path: Path

    def __init__(self, cfg: DataConfig, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.cfg, self.split = cfg, split
        self._open()

    def _open(self) -> None:
        raise NotImplementedError

    def _extra(self, i: int) -> dict[str, Any]:
        return {}

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = check_index(i, len(self), f"{self.name} {self.split} split")
        return {
            "video": np.array(self.videos[i]),
            "text": self.texts[i],
            "glosses": self.glosses[i],
            "index": i,
            **self._extra(i),
        }

    def get_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, list[str]]:
        """Videos `(B, T, H, W, 3)` uint8 (a writable copy) and their captions."""
        return take_batch(self.videos, self.texts, indices)

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "split": self.split}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.cfg, self.split = state["cfg"], state["split"]
        self._open()
