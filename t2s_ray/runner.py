"""The one Ray Tune function trainable, for every study: one (ablation, seed) per trial.

It owns what every study gets without writing it: the device Ray assigned, the trial's folder, reports to
Tune every `report_every` steps, checkpoints that land whole in the experiment's storage and come back after
a crash (`t2s_ray.persist`), the GPU-memory sampler, node facts, and the final report. The study's
`train(cfg, session)` owns the rest. A trial's params name its study (`study`: `package.module:attr`); without
one it is the bundled study, `DEFAULT_STUDY`, which runs through this same code.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from t2s_ray.metrics.sampler import MemorySampler
from t2s_ray.outputs import DEFAULT_STUDY, STUDY_PARAM, shared_members
from t2s_ray.outputs import MEMORY_CSV as SAMPLER_CSV
from t2s_ray.persist import artifact_dir, report_with_checkpoint, restore_newest, trial_storage_dir
from t2s_ray.study import (
    Session,
    SessionCheckpointLoader,
    load_study,
    train_and_score,
    write_session_checkpoint,
    write_trial_configs,
)

log = logging.getLogger(__name__)


class TuneSink:
    """`Session`'s link to Tune: reports, checkpoints into the trial's storage, restores."""

    def __init__(self, what: str, extra: dict[str, Any], trial_dir: Path):
        self.what, self.extra, self.trial_dir = what, extra, trial_dir

    def report(self, metrics: dict[str, Any]) -> None:
        tune.report({**metrics, **self.extra, "timesteps_total": metrics.get("step", 0)})

    def save(self, state: dict[str, Any] | Path, metrics: dict[str, Any], meta: dict[str, Any] | None = None) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_session_checkpoint(Path(tmp) / "ckpt", state, metrics, meta)
            report_with_checkpoint({**metrics, **self.extra, "timesteps_total": metrics.get("step", 0)}, folder)

    def restore(self) -> tuple[dict[str, Any] | Path, dict[str, Any]] | None:
        loader = SessionCheckpointLoader(self.trial_dir)
        path = restore_newest(loader, tune.get_checkpoint(), self.what)
        if path is not None:
            step = (loader.loaded[1] if loader.loaded else {}).get("step")
            log.warning("resumed %s at step %s from %s", self.what, step, path)
        return loader.loaded


def node_facts(device: torch.device, gpu_ids: list) -> dict[str, Any]:
    """Where a trial runs (`node/*` in its results; the report's environment section reads them)."""
    return {
        "node/hostname": socket.gethostname(),
        "node/id": ray.get_runtime_context().get_node_id(),
        "node/gpu_ids": ",".join(map(str, gpu_ids)),
        "node/device": str(device),
        "node/pid": os.getpid(),
        "node/device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)",
        "node/torch": str(torch.__version__),  # a TorchVersion: the driver would import torch to unpickle it
        "node/ray": ray.__version__,
        "node/python": platform.python_version(),
    }


def study_trial(params: dict[str, Any], started_at: float | None = None) -> None:
    """Ray Tune function trainable: run the study's `train(cfg, session)` for (params["ablation"], params["seed"]).
    Tune is given `t2s_ray.sweep.trainable.study_trial`, which calls this with the time the trial started
    (`node/started_at`), before this module's imports."""
    started_at = time.time() if started_at is None else started_at
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    study = load_study(params.get(STUDY_PARAM) or DEFAULT_STUDY)
    cfg = study.trial_config(params)
    gpu_ids = ray.get_gpu_ids()
    device = study.trial_device(cfg, gpu_ids)
    what = f"{params['ablation']} seed {params['seed']}"
    # the trial's own files (samples, step logs, configs) reach the experiment from any node: written straight
    # into its folder when the storage is a filesystem (local or shared), else into the working directory that
    # Ray uploads at each checkpoint and before the trial ends (the driver's copy of a trial folder would only
    # carry what was written on its node, and only later)
    trial_dir = trial_storage_dir() or artifact_dir()
    node = {**node_facts(device, gpu_ids), "node/started_at": started_at}
    sink = TuneSink(what, node, artifact_dir())  # a restored folder checkpoint is copied there
    with MemorySampler(trial_dir / SAMPLER_CSV, device) as sampler:

        def on_step(step: int) -> dict[str, Any]:
            sampler.set_step(step)
            return sampler.summary()

        session = Session(
            ablation=params["ablation"],
            seed=int(params["seed"]),
            device=device,
            trial_dir=trial_dir,
            sink=sink,
            report_every=study.report_every,
            on_step=on_step,
            progress=sampler.set_step,
            node=f"Ray node {node['node/id']} ({node['node/hostname']})",
            back_translator=study.back_translator,
        )
        members = {m: study.trial_config(params, m) for m in shared_members(params)}
        write_trial_configs(study, trial_dir, cfg, members)
        try:
            final = train_and_score(study, cfg, session, members)
        finally:
            session.close()
        sink.report({**final, **sampler.summary()})
