"""`AblationRunner`: the original study's integration pattern, for users who keep their own launcher.

One process per (ablation, seed), e.g. three terminals on three GPUs, each writing into the same `save_dir`:

    runner = AblationRunner("text_finetuned", save_dir="ablations", experiment_scale="full", seed=0)
    cfg = runner.config
    for step in ...:
        runner.log_training_step(epoch, step, loss, learning_rate, elapsed_time)
    runner.log_evaluation(fvd=..., lpips=..., temporal_consistency=..., inference_time_ms=...)
    runner.save_results()

Each run is a folder `<save_dir>/<ablation>_seed<seed>/` laid out as a sweep's trial folder (`params.json`,
`result.json`, `training_metrics.csv`, checkpoints), so `t2s-ray analyze <save_dir>` reads them as one
experiment: tables, paired verdicts, report.html. No Ray.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from t2s_ray.checkpoint import prune_checkpoints
from t2s_ray.io import write_text_atomic
from t2s_ray.outputs import ARMS_PARAM, DEFAULT_STUDY, SWEEP_FILE
from t2s_ray.study import (
    Session,
    SessionCheckpointLoader,
    Study,
    load_study,
    pick_device,
    train_and_score,
    with_seed,
    write_session_checkpoint,
    write_trial_configs,
)

RESULT_FILE = "result.json"
KEEP_CHECKPOINTS = 2

# the seed's keyword names -> the catalog's metric names
SEED_METRICS = {
    "fvd": "eval/fvd",
    "lpips": "eval/lpips",
    "temporal_consistency": "eval/temporal_consistency",
    "inference_time_ms": "eval/inference_ms_per_video",
    "inference_memory_gb": "eval/inference_peak_mem_gb",
    "num_parameters_millions": "params/total_m",
}


class FolderSink:
    """A `Session`'s sink without Ray: reports are rows of the folder's `result.json`, checkpoints live in
    `<folder>/checkpoints/checkpoint_<step>` (written atomically, the newest `KEEP_CHECKPOINTS` kept)."""

    def __init__(self, folder: Path, what: str, extra: dict[str, Any]):
        self.folder, self.what, self.extra = folder, what, extra
        self.root = folder / "checkpoints"

    def report(self, metrics: dict[str, Any]) -> None:
        with open(self.folder / RESULT_FILE, "a") as f:
            f.write(json.dumps({**metrics, **self.extra, "timestamp": time.time()}) + "\n")

    def save(self, state: dict[str, Any] | Path, metrics: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        step = int(metrics.get("step", 0))
        write_session_checkpoint(self.root / f"checkpoint_{step:06d}", state, metrics, meta)
        prune_checkpoints(self.root, KEEP_CHECKPOINTS)
        self.report(metrics)

    def restore(self) -> tuple[dict[str, Any] | Path, dict[str, Any]] | None:
        import pyarrow.fs

        from t2s_ray.checkpoint_store import restore_newest_in

        self.root.mkdir(parents=True, exist_ok=True)
        loader = SessionCheckpointLoader(self.folder)
        restore_newest_in(pyarrow.fs.LocalFileSystem(), str(self.root), loader, None, self.what)
        return loader.loaded


class AblationRunner:
    """One (ablation, seed) run of the user's own launcher, logged as a trial of an experiment in `save_dir`.

    `config_name` is an ablation of `study` (a `t2s_ray.Study`), or of the bundled study when `study` is None.
    `.config` is its resolved config at `experiment_scale`.
    """

    def __init__(
        self,
        config_name: str,
        save_dir: str | Path,
        experiment_scale: str = "full",
        seed: int = 0,
        study: Study | None = None,
        report_every: int = 10,
    ):
        self.ablation, self.seed, self.scale, self.study = config_name, int(seed), experiment_scale, study
        if study is None:
            from t2s_ray.t2s.ablations import resolve

            self.config = resolve(config_name, scale=experiment_scale, seed=self.seed)
            baseline, directions = "baseline", {}
        else:
            self.config = with_seed(study.resolve(config_name, experiment_scale), self.seed)
            baseline, directions = study.baseline, dict(study.metrics or {})
        self.save_dir = Path(save_dir).absolute()
        self.folder = self.save_dir / f"{config_name}_seed{self.seed}"
        self.folder.mkdir(parents=True, exist_ok=True)
        described = study or load_study(DEFAULT_STUDY)
        params = {
            "ablation": config_name,
            "seed": self.seed,
            "scale": experiment_scale,
            "study": study.name if study else None,
            ARMS_PARAM: {config_name: described.describe(config_name)},
        }
        write_text_atomic(self.folder / "params.json", json.dumps(params, indent=2) + "\n")
        write_trial_configs(described, self.folder, self.config)
        if study is not None:  # the experiment's baseline and metric directions, as a study sweep records them
            record = {"study_name": study.name, "baseline": baseline, "metrics": directions}
            write_text_atomic(self.save_dir / SWEEP_FILE, json.dumps(record, indent=2) + "\n")
        self.sink = FolderSink(self.folder, f"{config_name} seed {self.seed}", {"ablation": config_name})
        self.session = Session(
            ablation=config_name,
            seed=self.seed,
            device=pick_device(),  # the GPU this process sees (the launcher chose it), else the CPU
            trial_dir=self.folder,
            sink=self.sink,
            report_every=report_every,
            back_translator=study.back_translator if study is not None else None,
        )

    def log_training_step(
        self, epoch: int, step: int, loss: float, learning_rate: float, elapsed_time: float, **scalars: float
    ) -> None:
        """One training step: `training_metrics.csv`/`.jsonl` and TensorBoard at every call, `result.json` every
        `report_every` calls."""
        self.session.log_step(step, loss, epoch=epoch, lr=learning_rate, train_elapsed_s=elapsed_time, **scalars)

    def log_evaluation(
        self,
        fvd: float | None = None,
        lpips: float | None = None,
        temporal_consistency: float | None = None,
        inference_time_ms: float | None = None,
        inference_memory_gb: float | None = None,
        num_parameters_millions: float | None = None,
        **more: float,
    ) -> None:
        """The run's final metrics: the seed's names (mapped to the catalog's) and any more (`name` -> `eval/name`
        unless it already has a `group/`)."""
        seed_values = {
            "fvd": fvd,
            "lpips": lpips,
            "temporal_consistency": temporal_consistency,
            "inference_time_ms": inference_time_ms,
            "inference_memory_gb": inference_memory_gb,
            "num_parameters_millions": num_parameters_millions,
        }
        metrics = {SEED_METRICS[k]: v for k, v in seed_values.items() if v is not None}
        metrics.update({(k if "/" in k else f"eval/{k}"): v for k, v in more.items()})
        self.session.log_evaluation(metrics)

    def checkpoint(self, state: dict[str, Any] | str | Path) -> None:
        """As `Session.checkpoint`: `state` (a dict, or a folder) saved atomically with its checksum under
        `<run>/checkpoints/`."""
        self.session.checkpoint(state)

    def restore(self) -> dict[str, Any] | Path | None:
        """As `Session.restore`: the newest valid checkpoint's state (or folder), or None."""
        return self.session.restore()

    def save_results(self) -> Path:
        """Write the run's final row into `result.json` (again: the same file, one final row); return the folder.
        A study's run that logged no evaluation is scored first by the study's `evaluate` on its last checkpoint."""
        if self.session.final is None and self.study is not None and self.study.evaluate is not None:
            self.study.evaluate(self.config, self.session.final_state(), self.session)  # as a sweep's trial does
        final = self.session.final_metrics()
        path = self.folder / RESULT_FILE
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
        rows = [r for r in rows if not r.get("final")]
        rows.append({**final, "ablation": self.ablation, "timestamp": time.time()})
        write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
        self.session.close()
        return self.folder

    @property
    def trial_dir(self) -> Path:
        return self.folder


def train_in_process(
    study: Study, ablation: str, scale: str | None, seed: int, overrides: list[str], out: Path
) -> dict[str, Any]:
    """`t2s-ray train --study`: one (ablation, seed) of `study` in this process, no Ray, into the run folder `out`
    (resumed from its checkpoints when it has some); returns the final metrics."""

    cfg = with_seed(study.resolve(ablation, scale, overrides), seed)
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "ablation": ablation,
        "seed": seed,
        "scale": scale or study.scale_names[0],
        "study": study.name,
        ARMS_PARAM: {ablation: study.describe(ablation)},
        "overrides": list(overrides),
    }
    write_text_atomic(out / "params.json", json.dumps(params, indent=2) + "\n")
    write_trial_configs(study, out, cfg)
    device = pick_device()
    sink = FolderSink(out, f"{ablation} seed {seed}", {"ablation": ablation})
    session = Session(
        ablation=ablation,
        seed=seed,
        device=device,
        trial_dir=out,
        sink=sink,
        report_every=study.report_every,
        back_translator=study.back_translator,
    )
    try:
        final = train_and_score(study, cfg, session)
    finally:
        session.close()
    sink.report(final)
    return final
