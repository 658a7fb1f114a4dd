"""Datasets: one file per corpus; `build_dataset(cfg, split)` picks one by the spec prefix.

`synthsign` renders clips; `how2sign:ROOT`, `phoenix:ROOT` and `manifest:FILE.csv` decode real
videos once into a cache (`corpus.py`) that every later use memory-maps.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from t2s_ray.config import DataConfig
from t2s_ray.data.cache import SPLITS
from t2s_ray.data.how2sign import How2Sign
from t2s_ray.data.manifest import Manifest
from t2s_ray.data.phoenix import Phoenix
from t2s_ray.data.synthsign import SynthSign

__all__ = ["DATASETS", "SPLITS", "ClipDataset", "build_dataset"]


class ClipDataset(Protocol):
    """What training and evaluation read: uint8 `(N, T, H, W, 3)` clips with captions."""

    videos: np.ndarray
    """uint8 `(N, T, H, W, 3)`, usually a read-only memmap."""
    texts: list[str]
    """One caption per clip."""
    glosses: list[tuple[int, ...]]
    """Gloss ids per clip (empty tuples where a corpus has no gloss labels)."""
    num_glosses: int
    """Size of the gloss vocabulary."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict[str, Any]: ...

    def get_batch(self, indices: Sequence[int]) -> tuple[np.ndarray, list[str]]: ...


DATASETS: dict[str, Callable[[DataConfig, str], ClipDataset]] = {
    "synthsign": SynthSign, "how2sign": How2Sign, "phoenix": Phoenix, "manifest": Manifest,
}
"""Dataset constructors keyed by the part of `data.spec` before the first ':'."""


def build_dataset(cfg: DataConfig, split: str) -> ClipDataset:
    """The `split` ('train', 'val' or 'test') of the dataset named by `cfg.spec`."""
    name = cfg.spec.split(":", 1)[0]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} in data.spec={cfg.spec!r}; known datasets: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return DATASETS[name](cfg, split)
