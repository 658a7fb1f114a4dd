"""`t2s-ray sample`: sign videos for given sentences, from a checkpoint or from every ablation of an experiment.

A SOURCE is read as, in this order:

- a checkpoint folder: it holds `meta.json`;
- a run folder: `checkpoint_*/` inside it (a sweep trial) or in `checkpoints/` (`t2s-ray train --out`);
  its newest checkpoint is used;
- an experiment folder: sub-folders holding `params.json` (the trials of `t2s-ray sweep`); each
  ablation's finished trial of one seed gives one column, from its newest checkpoint.

Clips are sampled as the evaluation does (DDIM + classifier-free guidance, `evaluation.sample_with`)
with the weights the ablation evaluates (EMA when enabled) unless `raw` asks for the raw ones, and
noise from one seed, so every column of an experiment starts from the same noise.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from t2s_ray.checkpoint import META_FILE, list_checkpoints, read_meta
from t2s_ray.data.video import save_gif, save_mp4, to_uint8
from t2s_ray.outputs import ablation_of
from t2s_ray.t2s.ablations import resolve_params
from t2s_ray.t2s.config import Config, merge, parse_override

WRITERS = {".gif": save_gif, ".mp4": save_mp4}
"""Output formats by suffix: GIF through Pillow, MP4 (H.264) through PyAV; both show the same grid."""


class SampleError(ValueError):
    """Bad input to sampling (a path, a sentence, an output name); the message names it and the fix."""


@dataclass
class Column:
    """One ablation's clips, one per sentence, and where they came from."""

    name: str
    clips: np.ndarray
    """uint8 `(N, T, H, W, 3)`."""
    checkpoint: Optional[Path] = None
    """None for clips that no checkpoint made (real ones)."""
    step: int = 0
    weights: str = ""
    sampler: str = ""


def check_output(out: Path) -> None:
    """`out` must end in a known suffix and not be a folder."""
    if out.suffix.lower() not in WRITERS:
        shown = f"suffix {out.suffix!r}" if out.suffix else "no suffix"
        raise SampleError(f"-o {out}: {shown}; choose one of {', '.join(WRITERS)}")
    if out.is_dir():
        raise SampleError(f"-o {out} is a folder; give a file name ending in {' or '.join(WRITERS)}")
    anchor = out.parent.absolute()  # the folder, or the nearest existing one it will be created in
    while not anchor.exists() and anchor != anchor.parent:
        anchor = anchor.parent
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise SampleError(f"-o {out}: {anchor} is not writable; choose another path")


def check_texts(texts: Optional[Sequence[str]]) -> list[str]:
    """The sentences, stripped; none at all or an empty one is an error."""
    if not texts:
        raise SampleError('no sentence to sign: pass --text "..." (repeat it for several clips)')
    stripped = [t.strip() for t in texts]
    if not all(stripped):
        k = stripped.index("") + 1
        raise SampleError(f"--text number {k} is empty; give every --text a sentence")
    return stripped


def newest_checkpoint(folder: Path) -> Optional[Path]:
    """The newest checkpoint directly in `folder` (a sweep trial) or in `folder/checkpoints` (a train run)."""
    found = list_checkpoints(folder) or list_checkpoints(folder / "checkpoints")
    return found[-1] if found else None


def _is_experiment(folder: Path) -> bool:
    return any((p / "params.json").is_file() for p in folder.iterdir() if p.is_dir())


def resolve_source(path: Path) -> tuple[str, Path]:
    """`("checkpoint", checkpoint_dir)` or `("experiment", experiment_dir)`; SampleError for anything else."""
    if not path.exists():
        raise SampleError(f"{path} does not exist; expected a checkpoint, run or experiment folder")
    if not path.is_dir():
        raise SampleError(f"{path} is a file; expected a checkpoint, run or experiment folder")
    if (path / META_FILE).is_file():
        return "checkpoint", path
    newest = newest_checkpoint(path)
    if newest is not None:
        return "checkpoint", newest
    if (path / "params.json").is_file() or (path / "config.json").is_file():
        raise SampleError(
            f"run folder {path} holds no checkpoint yet (no checkpoint_*/{META_FILE} in it or in "
            f"checkpoints/); train it further or pass another run"
        )
    if _is_experiment(path):
        return "experiment", path
    nested = sorted(p.name for p in path.iterdir() if p.is_dir() and _is_experiment(p))
    hint = f"; it holds experiments: {', '.join(nested[:5])}, pass one of them" if nested else ""
    raise SampleError(
        f"{path} is neither a checkpoint folder ({META_FILE}), a run folder (checkpoint_*/ or "
        f"checkpoints/) nor an experiment folder (trial sub-folders with params.json){hint}"
    )


def experiment_checkpoints(exp: Path, trial_seed: int) -> tuple[list[tuple[str, Path]], list[str]]:
    """`(ablation, newest checkpoint)` of every finished trial of `trial_seed`, in sweep order, and notes
    on the ablations left out. SampleError when none is left. An ablation that shared another's training
    run gets that run's checkpoint (see `member_config`)."""
    from t2s_ray.analysis import load_trials, select_trials  # lazy: pandas

    try:
        trials = select_trials(load_trials(exp))
    except ValueError as e:
        raise SampleError(str(e)) from None
    found, notes = [], []
    for _, row in trials[trials["seed"] == trial_seed].iterrows():
        ckpt = newest_checkpoint(Path(row["trial_dir"])) if row["status"] == "finished" else None
        if ckpt is not None:
            found.append((str(row["ablation"]), ckpt))
        else:
            why = "no checkpoint" if row["status"] == "finished" else row["status"]
            notes.append(f"{row['ablation']} left out ({why}: {row['trial_dir']})")
    if not found:
        seeds = sorted({int(s) for s in trials.loc[trials["status"] == "finished", "seed"]})
        have = f"finished seeds: {', '.join(map(str, seeds))}" if seeds else "no trial has finished"
        raise SampleError(
            f"{exp} has no finished trial of seed {trial_seed} with a checkpoint ({have}); "
            f"pass --trial-seed K or finish the sweep with: t2s-ray resume {exp}"
        )
    return found, notes


def load_for_sampling(checkpoint: Path, overrides: Sequence[str] = (), text_encoder=None):
    """A `TrainState` loaded from `checkpoint`, its config changed by `overrides` (device, eval.*)."""
    from t2s_ray.t2s.training import build_state, load_state  # lazy: torch

    meta = read_meta(checkpoint)
    if "config" not in meta:
        raise SampleError(
            f"{checkpoint} is a checkpoint of your own study (its meta.json holds no t2s-ray config); "
            f"sample it with --study package.module:attr"
        )
    d = meta["config"]
    for item in overrides:
        d = merge(d, parse_override(item))
    state = build_state(Config.from_dict(d), text_encoder=text_encoder)
    load_state(state, checkpoint)
    return state


def sample_state(state, texts: list[str], seed: int, raw: bool = False) -> tuple[np.ndarray, str]:
    """uint8 clips `(N, T, H, W, 3)` for `texts` from noise `seed`, and which weights made them."""
    from t2s_ray.t2s.evaluation import sample, sample_with  # lazy: torch

    if state.ema is None:
        return to_uint8(sample(state, texts, seed)), "raw (EMA disabled)"
    if raw:
        state.model.eval()
        return to_uint8(sample_with(state.model, state, texts, seed)), "raw"
    return to_uint8(sample(state, texts, seed)), "EMA"


def member_config(checkpoint: Path, ablation: str, overrides: Sequence[str] = ()) -> Config:
    """The config of `ablation`, which shared the training run that wrote `checkpoint` (a sweep trial's, whose
    folder holds params.json): resolved as that sweep resolved it, with `overrides`."""
    params = json.loads((checkpoint.parent / "params.json").read_text())
    return resolve_params(params, ablation=ablation, overrides=overrides)


def sample_checkpoint(
    checkpoint: Path,
    texts: list[str],
    seed: int,
    overrides: Sequence[str] = (),
    raw: bool = False,
    text_encoder=None,
    member: Optional[str] = None,
) -> Column:
    """One checkpoint's clips for `texts`; as ablation `member` when it is another than the checkpoint's own
    (it shared that training run: the same weights, its own EMA/evaluation settings)."""
    from t2s_ray.t2s.training import member_state  # lazy: torch

    state = load_for_sampling(checkpoint, overrides, text_encoder)
    if member is not None and member != state.cfg.ablation:
        state = member_state(state, member_config(checkpoint, member, overrides))
    clips, weights = sample_state(state, texts, seed, raw)
    e = state.cfg.eval
    # trained on the empty caption alone: sampled unconditionally (evaluation.sample_with)
    guidance = "unconditional" if state.cfg.diffusion.caption_dropout >= 1 else f"guidance {e.guidance:g}"
    sampler = f"DDIM {e.sampling_steps} steps, {guidance}"
    return Column(state.cfg.ablation, clips, checkpoint, state.step, weights, sampler)


def sample_experiment(
    exp: Path, texts: list[str], seed: int, overrides: Sequence[str] = (), raw: bool = False, trial_seed: int = 0
) -> tuple[list[Column], list[str]]:
    """One column per ablation (per arm of a --grid sweep) of `exp` (finished trials of `trial_seed`), the same
    sentences and noise each."""
    checkpoints, notes = experiment_checkpoints(exp, trial_seed)
    columns = []
    for name, ckpt in checkpoints:  # one state in memory at a time; a --grid arm is named `<ablation> @ <point>`
        column = sample_checkpoint(ckpt, texts, seed, overrides, raw, member=ablation_of(name))
        column.name = name
        columns.append(column)
    shapes = {c.clips.shape[1:] for c in columns}
    if len(shapes) > 1:
        raise SampleError(
            f"the ablations of {exp} generate clips of different shapes "
            f"({', '.join(f'{c.name} {c.clips.shape[1:4]}' for c in columns)}); "
            "they cannot stand side by side"
        )
    return columns, notes


def write(out: Path, columns: list[Column], texts: list[str], named: bool = True, fps: int = 8, zoom: int = 3) -> None:
    """One grid, one row per sentence and one column per `Column` (captioned with its name), as `out`'s
    format (atomically). With `named` false, one `Column`'s clips stand in one row, captioned with their sentence.
    """
    if not named:
        clips, captions, cols = columns[0].clips, texts, len(texts)
    else:
        clips = np.stack([c.clips[k] for k in range(len(texts)) for c in columns])
        captions = [f"{c.name}: {text}" if j == 0 else c.name for text in texts for j, c in enumerate(columns)]
        cols = len(columns)
    try:
        WRITERS[out.suffix.lower()](out, clips, captions, scale=zoom, fps=fps, cols=cols)
    except OSError as e:  # the file system refused it (the message would name the temp file it is written as)
        raise SampleError(f"-o {out} cannot be written: {e.strerror or e}; choose another path") from None
