"""Datasets: one file per corpus; `build_dataset(cfg, split)` picks one by the spec prefix.

`synthsign` renders clips; `how2sign:ROOT`, `phoenix:ROOT` and `manifest:FILE.csv` decode real
videos once into a cache (`corpus.py`) that every later use memory-maps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

import numpy as np

from t2s_ray.data.cache import SPLITS
from t2s_ray.data.config import DataConfig
from t2s_ray.data.corpus import Corpus, spec_path
from t2s_ray.data.how2sign import How2Sign
from t2s_ray.data.manifest import Manifest
from t2s_ray.data.phoenix import Phoenix
from t2s_ray.data.synthsign import SynthSign

__all__ = [
    "DATASETS",
    "SPLITS",
    "ClipDataset",
    "DataNotVisible",
    "build_dataset",
    "check_layout",
    "check_visible",
    "dataset_path",
]


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
    "synthsign": SynthSign,
    "how2sign": How2Sign,
    "phoenix": Phoenix,
    "manifest": Manifest,
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


class DataNotVisible(ValueError):
    """The dataset or the given `data.cache_dir` does not exist on the machine (Ray node) that needs it."""


def dataset_path(cfg: DataConfig) -> Optional[Path]:
    """The folder or file after `name:` in `cfg.spec` (`~` expanded), None for a spec without one (`synthsign`)."""
    arg = cfg.spec.partition(":")[2].strip()
    return Path(arg).expanduser() if arg else None


def check_visible(cfg: DataConfig, where: str) -> None:
    """Raise `DataNotVisible` if the dataset of `cfg.spec` or a given `data.cache_dir` does not exist here.

    `where` names this machine (e.g. a Ray node) in the message. On a cluster every trial reads the data and
    its cache on its own node; building a private cache where the user placed a shared one would hide that.
    """
    fix = "put it on a filesystem every node mounts, or copy it to the same path on every node"
    checks = [(dataset_path(cfg), f"the dataset of data.spec={cfg.spec}", fix)]
    if cfg.cache_dir:
        checks.append(
            (
                Path(cfg.cache_dir).expanduser(),
                "data.cache_dir",
                "set data.cache_dir to a folder every node mounts (e.g. --set data.cache_dir=/shared/t2s-cache)"
                ", create it on every node, or leave it unset so that each node builds its own cache",
            )
        )
    for path, what, how in checks:
        if path is not None and path.is_absolute() and not path.exists():
            raise DataNotVisible(f"{where} cannot see {path} ({what}): no such file or folder there; {how}")


def check_layout(cfg: DataConfig) -> bool:
    """Check `cfg.spec` without building anything: a known dataset and, for a real corpus whose files are on
    this machine, the annotation files of its train and val splits. False when they are not on this machine."""
    name = cfg.spec.split(":", 1)[0]
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} in data.spec={cfg.spec!r}; known datasets: {', '.join(DATASETS)}")
    corpus = DATASETS[name]
    if not (isinstance(corpus, type) and issubclass(corpus, Corpus)):
        return True  # rendered, nothing to find
    root = spec_path(cfg, name, corpus.what)
    if not root.exists():
        return False
    for split in ("train", "val"):
        corpus.locate(root, split)
    return True
