"""The shared base of the real corpora (How2Sign, PHOENIX-2014T, CSV manifests).

A corpus module only finds a split's annotation file (`locate`) and parses it into rows
(`read`); this base turns the rows into a cached split: on first use every clip is decoded, sampled
to T frames, resized and centre-cropped into `<cache>/<corpus>/<key>/<split>.npy` (uint8
`(N, T, H, W, 3)`) plus `<split>.json` (captions, source ids, per-row info, skipped rows), and every
later use (each trial of a sweep) memory-maps it. The key hashes the DataConfig fields that
change the pixels, the spec's path and the annotation file's path, size and mtime, and `CACHE_VERSION`.

Bad rows and unreadable clips are skipped with one warning, up to `max_skipped(rows, fraction)` =
max(1, `data.max_bad_fraction` (default 5%) of the split's rows); past that the build raises
`ValueError` naming up to 3 of them. The fraction is not in the cache key (it decides whether a
build is accepted, not what it holds): opening a cached split checks its recorded skips again.
An empty train split raises; an empty val or test split is a 0-length dataset (with a warning).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from t2s_ray.data import decode
from t2s_ray.data.cache import CachedSplit, cache_root, locked, read_cached
from t2s_ray.data.config import DataConfig
from t2s_ray.io import atomic_path, content_hash

log = logging.getLogger(__name__)

CACHE_VERSION = 1
"""Bump whenever decoding, sampling, resizing or the sidecar change: it invalidates every corpus cache."""


def max_skipped(rows: int, fraction: float) -> int:
    """How many of a split's `rows` may be skipped: `fraction` of them (`data.max_bad_fraction`), at least one."""
    return max(1, int(fraction * rows + 1e-9))  # + 1e-9: 0.29 * 100 is 28.999...


def decode_workers() -> int:
    """Threads decoding clips at once: `$T2S_RAY_DECODE_WORKERS`, else min(8, usable CPUs)."""
    env = os.environ.get("T2S_RAY_DECODE_WORKERS", "")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"T2S_RAY_DECODE_WORKERS must be a positive integer, got {env!r}")
        return int(env)
    return min(8, len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Row:
    """One clip of an annotation file."""

    source: str
    """Its id in the corpus (How2Sign SENTENCE_NAME, PHOENIX name, manifest `video` cell)."""
    text: str
    """Caption."""
    path: Path
    """Video file or frame folder."""
    info: dict[str, Any] = field(default_factory=dict)
    """Other annotation columns worth keeping (times, speaker, gloss string ...)."""


@dataclass
class SplitRows:
    """What a corpus reads from a split's annotation file."""

    rows: list[Row]
    """Rows to decode, in file order."""
    total: int
    """Rows of the split in the file, bad ones included (the skip threshold's denominator)."""
    bad: list[tuple[str, str]] = field(default_factory=list)
    """`(where, reason)` of each row rejected while parsing (missing cell, empty text ...)."""


def spec_path(cfg: DataConfig, name: str, what: str) -> Path:
    """The absolute path after `name:` in `cfg.spec` (`~` expanded); `what` names it in errors."""
    prefix, _, arg = cfg.spec.partition(":")
    if prefix != name or not arg.strip():
        raise ValueError(f"data.spec must be '{name}:{what}', got {cfg.spec!r}")
    path = Path(arg.strip()).expanduser()
    if not path.is_absolute():
        # Ray Tune runs each trial in its own working directory: a relative path means another folder there
        raise ValueError(f"data.spec={cfg.spec!r}: {what} must be an absolute path, e.g. {name}:{Path.cwd() / path}")
    return path


def read_table(
    path: Path, delimiter: str, required: Sequence[str]
) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Header and `(line number, row dict)` of a delimited text file; raises if `required` columns are missing."""
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets prepend a BOM
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in required if c not in header]
        if missing:
            sep = {"\t": "tab", "|": "'|'", ",": "comma"}.get(delimiter, repr(delimiter))
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; expected a {sep}-separated header "
                f"with {', '.join(required)}, got {header[:10]}"
            )
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank line
            cells = dict(zip(header, values)) if len(values) == len(header) else {}
            rows.append((reader.line_num, cells))  # {} = wrong number of cells: the reader rejects it
    return header, rows


def annotation_stamp(path: Path) -> dict[str, Any]:
    """Path, size and mtime of an annotation file: a change to any rebuilds the cache."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class Corpus(CachedSplit):
    """A cached split of a real corpus; implements the `ClipDataset` protocol.

    Subclasses set `name` and `what` (the spec argument, for messages) and implement
    `locate(root, split)` -> the annotation file and `read(root, annotation, split)` -> `SplitRows`.
    Real corpora carry no SynthSign gloss ids (PHOENIX's gloss strings are in `info`).
    """

    name: ClassVar[str] = ""
    what: ClassVar[str] = "ROOT"

    # --- what a corpus module provides ---------------------------------------------------------

    @classmethod
    def locate(cls, root: Path, split: str) -> Path:
        """The annotation file of `split` under `root`; `ValueError` naming the expected layout if absent."""
        raise NotImplementedError

    @classmethod
    def read(cls, root: Path, annotation: Path, split: str) -> SplitRows:
        """The rows of `split` in `annotation`."""
        raise NotImplementedError

    # --- cache ---------------------------------------------------------------------------------

    def _extra(self, i: int) -> dict[str, Any]:
        return {"source": self.sources[i], "info": self.info[i]}

    def _open(self) -> None:
        root = spec_path(self.cfg, self.name, self.what)
        self.videos, sidecar, self.path = load_split(type(self), self.cfg, root, self.split)
        self.texts = list(sidecar["texts"])
        self.sources: list[str] = list(sidecar["sources"])
        self.info: list[dict[str, Any]] = list(sidecar["info"])
        self.skipped: list[tuple[str, str]] = [tuple(s) for s in sidecar["skipped"]]
        self.glosses = [()] * len(self.texts)
        if not self.texts:
            log.warning(
                "%s %s split is empty (%s has no usable %s rows)",
                self.name,
                self.split,
                sidecar["annotation"]["path"],
                self.split,
            )


def cache_key(corpus: type[Corpus], cfg: DataConfig, root: Path, annotation: Path) -> str:
    """Hash of everything that changes a split's pixels or captions."""
    fields = {
        "dataset": corpus.name,
        "version": CACHE_VERSION,
        "root": str(root.resolve()),
        "frames": cfg.frames,
        "height": cfg.height,
        "width": cfg.width,
        "annotation": annotation_stamp(annotation),
    }
    return content_hash(fields)


def load_split(corpus: type[Corpus], cfg: DataConfig, root: Path, split: str) -> tuple[np.ndarray, dict, Path]:
    """The split's memory-mapped clips, its sidecar and the `.npy` path, building them if needed."""
    annotation = corpus.locate(root, split)
    key = cache_key(corpus, cfg, root, annotation)
    folder = cache_root(cfg) / corpus.name / key
    folder.mkdir(parents=True, exist_ok=True)
    npy, meta = folder / f"{split}.npy", folder / f"{split}.json"
    clip_shape = (cfg.frames, cfg.height, cfg.width, 3)
    cached = _load_cached(npy, meta, key, clip_shape)
    if cached is None:
        with locked(folder / f"{split}.lock"):
            cached = _load_cached(npy, meta, key, clip_shape)  # another process may have built it meanwhile
            if cached is None:
                table = corpus.read(root, annotation, split)
                _build(corpus, cfg, split, table, npy, meta, key, annotation)
                cached = _load_cached(npy, meta, key, clip_shape)
    if cached is None:
        raise RuntimeError(f"{corpus.name} cache {npy} is unreadable right after building it")
    sidecar = cached[1]  # it may have been built under a looser data.max_bad_fraction
    _check_skipped(corpus, cfg, split, [tuple(s) for s in sidecar["skipped"]], sidecar["rows"])
    return (*cached, npy)


def _load_cached(npy: Path, meta: Path, key: str, clip_shape: tuple[int, ...]) -> tuple[np.ndarray, dict] | None:
    """The memory-mapped split and its sidecar, or None (with the reason logged) if missing or unusable."""
    if (cached := read_cached(npy, meta, "corpus")) is None:
        return None
    videos, sidecar = cached
    n = len(videos)
    good = (
        videos.dtype == np.uint8
        and videos.shape[1:] == clip_shape
        and sidecar.get("key") == key
        and sidecar.get("shape") == list(videos.shape)
        and all(len(sidecar.get(k, ())) == n for k in ("texts", "sources", "info"))
    )
    if not good:
        log.warning("cache %s does not match its sidecar or the config (shape %s); rebuilding it", npy, videos.shape)
        return None
    return videos, sidecar


def _check_skipped(
    corpus: type[Corpus], cfg: DataConfig, split: str, skipped: list[tuple[str, str]], total: int
) -> None:
    """Raise `ValueError` if more of the split's `total` rows were skipped than `cfg.max_bad_fraction` allows."""
    allowed = max_skipped(total, cfg.max_bad_fraction)
    if len(skipped) <= allowed:
        return
    examples = "; ".join(f"{where}: {reason}" for where, reason in skipped[:3])
    enough = min(0.9, math.ceil(10 * len(skipped) / total) / 10)  # a lower bound while still decoding
    raise ValueError(
        f"{corpus.name} {split}: {len(skipped)} of {total} rows are bad or unreadable, more than "
        f"data.max_bad_fraction={cfg.max_bad_fraction:g} allows ({allowed} row(s)); fix or remove the "
        f"bad rows, or allow more with --set data.max_bad_fraction={enough:g}. First bad rows: {examples}"
    )


def _decoded(rows: list[Row], cfg: DataConfig, workers: int) -> Iterator[tuple[Row, np.ndarray | None, str]]:
    """`(row, clip or None, reason)` in row order, decoding up to `workers` clips at once."""

    def one(row: Row) -> tuple[Row, np.ndarray | None, str]:
        try:
            return row, decode.decode_clip(row.path, cfg.frames, cfg.height, cfg.width), ""
        except decode.ClipError as err:
            return row, None, err.reason

    if workers <= 1:
        yield from map(one, rows)
        return
    pool = ThreadPoolExecutor(workers)  # PyAV and Pillow release the GIL while decoding
    try:
        window = 4 * workers  # bounded look-ahead: decoded clips wait in memory only briefly
        pending = deque(pool.submit(one, r) for r in rows[:window])
        for k in range(window, len(rows) + window):
            yield pending.popleft().result()
            if k < len(rows):
                pending.append(pool.submit(one, rows[k]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed build stops decoding at once


def _build(
    corpus: type[Corpus],
    cfg: DataConfig,
    split: str,
    table: SplitRows,
    npy: Path,
    meta: Path,
    key: str,
    annotation: Path,
) -> None:
    """Decode every row of `table` into `npy` (+ sidecar `meta`), skipping up to `max_skipped` rows."""
    t0 = time.perf_counter()
    skipped = list(table.bad)
    _check_skipped(corpus, cfg, split, skipped, table.total)
    rows, clip_shape = table.rows, (cfg.frames, cfg.height, cfg.width, 3)
    texts, sources, info = [], [], []
    with atomic_path(npy, ".npy.tmp") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(rows), *clip_shape))
        bar = tqdm(
            total=len(rows),
            desc=f"{corpus.name} {split}: decoding",
            unit="clip",
            disable=None,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        with bar, closing(_decoded(rows, cfg, decode_workers())) as clips:
            for row, clip, reason in clips:
                bar.update()
                if clip is None:
                    skipped.append((str(row.path), reason))
                    _check_skipped(corpus, cfg, split, skipped, table.total)
                    continue
                out[len(texts)] = clip
                texts.append(row.text)
                sources.append(row.source)
                info.append(row.info)
        if not texts and split == "train":
            raise ValueError(f"{corpus.name} train split in {annotation} has no usable clips")
        out.flush()
        if len(texts) < len(rows):  # rows were skipped: keep only the clips written
            out = _compact(out, tmp, len(texts))
        shape = list(out.shape)
        del out
    sidecar = {
        "dataset": corpus.name,
        "version": CACHE_VERSION,
        "key": key,
        "split": split,
        "spec": cfg.spec,
        "shape": shape,
        "annotation": annotation_stamp(annotation),
        "rows": table.total,
        "texts": texts,
        "sources": sources,
        "info": info,
        "skipped": skipped,
    }
    with atomic_path(meta, ".json.tmp") as tmp, open(tmp, "w") as f:
        json.dump(sidecar, f, ensure_ascii=False)
    if skipped:
        log.warning(
            "%s %s: skipped %d of %d rows (bad row or unreadable clip), e.g. %s",
            corpus.name,
            split,
            len(skipped),
            table.total,
            "; ".join(f"{w}: {r}" for w, r in skipped[:3]),
        )
    tqdm.write(
        f"{corpus.name} {split}: kept {len(texts)} clips, skipped {len(skipped)} of {table.total} rows "
        f"({time.perf_counter() - t0:.1f} s) -> {npy}",
        file=sys.stderr,
    )


def _compact(out: np.memmap, tmp: Path, n: int) -> np.memmap:
    """Rewrite the temp `.npy` at `tmp` with only its first `n` clips; returns the new memmap."""
    part = tmp.with_name(tmp.name + ".part")
    try:
        small = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=(n, *out.shape[1:]))
        for i in range(0, n, 256):
            small[i : i + 256] = out[i : min(n, i + 256)]
        small.flush()
        del out
        os.replace(part, tmp)
    finally:
        part.unlink(missing_ok=True)
    return small
