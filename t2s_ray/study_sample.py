"""`t2s-ray sample` of a user study's experiment or run: clips from the study's own `sample(cfg, checkpoint_state,
texts, seed)`, a column per ablation, side by side as for the bundled study."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from t2s_ray.checkpoint import read_meta
from t2s_ray.outputs import ablation_of
from t2s_ray.study import SessionCheckpointLoader, Study, StudyError
from t2s_ray.t2s.sample import Column, SampleError, experiment_checkpoints


def _params(checkpoint: Path) -> dict:
    """params.json of the trial (`<trial>/checkpoint_N`) or `train --out` run (`<run>/checkpoints/checkpoint_N`)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "params.json").is_file():
            return json.loads((folder / "params.json").read_text())
    raise SampleError(
        f"{checkpoint}: no params.json beside it, so its ablation is unknown; pass the trial or run "
        f"folder that holds it"
    )


def sample_study_checkpoint(
    study: Study, checkpoint: Path, texts: list[str], seed: int, ablation: str | None = None
) -> Column:
    """`study.sample` on one checkpoint, as its own ablation or as `ablation`, which shared its training."""
    if study.sample is None:
        raise SampleError(
            f"study {study.name!r} gives no sample(cfg, checkpoint_state, texts, seed); add one "
            f"(Study(..., sample=my_sample)) to sample its checkpoints"
        )
    params = _params(checkpoint)
    try:
        cfg = study.trial_config(params, ablation)
    except StudyError as e:
        raise SampleError(f"{checkpoint}: {e}") from None
    with tempfile.TemporaryDirectory(prefix="t2s-sample-") as tmp:
        loader = SessionCheckpointLoader(Path(tmp))
        loader(checkpoint)
        clips = np.asarray(study.sample(cfg, loader.loaded[0], list(texts), seed))
    if clips.dtype != np.uint8 or clips.ndim != 5 or clips.shape[-1] != 3 or len(clips) != len(texts):
        raise SampleError(
            f"study {study.name!r}: sample returned {clips.dtype} {clips.shape} for {len(texts)} "
            f"sentence(s); it must return uint8 clips x frames x height x width x 3, one per sentence"
        )
    step = int(read_meta(checkpoint).get("step", 0))
    return Column(ablation or str(params["ablation"]), clips, checkpoint, step, "the study's", f"{study.name}'s sample")


def sample_study_experiment(
    study: Study, exp: Path, texts: list[str], seed: int, trial_seed: int = 0
) -> tuple[list[Column], list[str]]:
    """A column per ablation (per arm of a --grid sweep) of the study experiment `exp`: its finished trials of
    `trial_seed`, the same sentences and noise seed each."""
    checkpoints, notes = experiment_checkpoints(exp, trial_seed)
    columns = []
    for name, ckpt in checkpoints:
        column = sample_study_checkpoint(study, ckpt, texts, seed, ablation_of(name))
        column.name = name
        columns.append(column)
    if len({c.clips.shape[1:] for c in columns}) > 1:
        raise SampleError(
            f"the ablations of {exp} generate clips of different shapes "
            f"({', '.join(f'{c.name} {c.clips.shape[1:4]}' for c in columns)}); "
            "they cannot stand side by side"
        )
    return columns, notes
