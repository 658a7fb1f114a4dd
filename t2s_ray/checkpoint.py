"""Checkpoint directories on disk: atomic writes, a checksum, `weights_only` loads.

A checkpoint is one directory holding `state.pt` (one state dict of tensors and plain values)
and `meta.json` (format version, step, sha256 of `state.pt`, resolved config). It is written
into a temporary sibling directory, fsynced and renamed into place (`t2s_ray.io.atomic_dir`),
so a crash never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from t2s_ray.io import atomic_dir

FORMAT_VERSION = 1
STATE_FILE = "state.pt"
META_FILE = "meta.json"
FILES_DIR = "files"
"""In a checkpoint given as a folder (`Session.checkpoint(path)`): that folder's files, each checksummed in meta."""
CHECKPOINT_PREFIX = "checkpoint_"
CHECKPOINT_NAME = re.compile(rf"{CHECKPOINT_PREFIX}\d+")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or of another format; the message names its path."""


class CheckpointDamaged(CheckpointError):
    """A checkpoint's files are incomplete or do not match their checksum (a copy cut short, a bad disk):
    it can never load, unlike a checkpoint of another config or format, which is the caller's mistake."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checkpoint(
    directory: str | Path, state: dict[str, Any], meta: dict[str, Any], files: str | Path | None = None
) -> Path:
    """Write `state` + `meta` into `directory` atomically (temp dir, fsync, rename); return it. `files`, a folder
    of the caller's (a user study's own checkpoint format), is copied into `FILES_DIR` with a checksum per file.

    The same step written again (e.g. after a restore) replaces the old directory whole.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        torch.save(state, tmp / STATE_FILE)
        full_meta = {**meta, "format_version": FORMAT_VERSION, "sha256": _sha256(tmp / STATE_FILE)}
        if files is not None:
            shutil.copytree(files, tmp / FILES_DIR)
            full_meta["files"] = {
                p.relative_to(tmp / FILES_DIR).as_posix(): _sha256(p)
                for p in sorted((tmp / FILES_DIR).rglob("*"))
                if p.is_file()
            }
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
    return final


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's `meta.json`, checked for format version."""
    path = Path(directory) / META_FILE
    try:
        text = path.read_text()
    except OSError as e:
        raise CheckpointDamaged(f"checkpoint {Path(directory)} has no readable {META_FILE} ({e})") from None
    return parse_meta(text, directory)


def parse_meta(text: str, where: str | Path) -> dict[str, Any]:
    """A `meta.json`'s text, checked for format version; `where` names the checkpoint in errors."""
    try:
        meta = json.loads(text)
    except ValueError as e:
        raise CheckpointDamaged(f"checkpoint {where} has no readable {META_FILE} ({e})") from None
    if not isinstance(meta, dict) or "sha256" not in meta:
        raise CheckpointDamaged(f"checkpoint {where} has a {META_FILE} without a checksum")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format version {meta.get('format_version')!r}, "
            f"this t2s-ray reads version {FORMAT_VERSION}"
        )
    return meta


def read_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[dict, dict]:
    """Verify the checksum and load `(state, meta)` with `torch.load(weights_only=True)`."""
    d = Path(directory)
    meta = read_meta(d)
    state_path = d / STATE_FILE
    if not state_path.is_file():
        raise CheckpointDamaged(f"checkpoint {d} is missing {STATE_FILE}")
    digest = _sha256(state_path)
    if digest != meta.get("sha256"):
        raise CheckpointDamaged(
            f"checkpoint {d} is corrupt: {STATE_FILE} checksum {digest[:12]}… "
            f"does not match the recorded {str(meta.get('sha256'))[:12]}…"
        )
    for name, recorded in (meta.get("files") or {}).items():
        path = d / FILES_DIR / name
        if not path.is_file() or _sha256(path) != recorded:
            raise CheckpointDamaged(
                f"checkpoint {d}: {FILES_DIR}/{name} is "
                f"{'missing' if not path.is_file() else 'corrupt (checksum mismatch)'}"
            )
    state = torch.load(state_path, map_location=map_location, weights_only=True)
    return state, meta


def is_checkpoint_name(name: str) -> bool:
    """`checkpoint_<digits>` (Ray's and ours); a folder set aside as `checkpoint_000003.corrupt` is not."""
    return CHECKPOINT_NAME.fullmatch(name) is not None


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint directories directly under `root` (named `checkpoint_<digits>` and holding a `meta.json`,
    which is written last), oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.is_dir() and is_checkpoint_name(d.name) and (d / META_FILE).exists():
            try:
                found.append((int(read_meta(d).get("step", -1)), d.name, d))
            except CheckpointError:
                found.append((-1, d.name, d))  # unreadable meta: sorts first, reported when loaded
    return [d for _, _, d in sorted(found)]


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints under `root`."""
    for d in list_checkpoints(root)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
