"""Fault injection in Ray's workers: the copy of a checkpoint into storage cut short.

`cut_checkpoint_copy` is a `worker_process_setup_hook` (Ray's runtime_env): every worker the test's Ray
starts runs it. It replaces the function Ray's `StorageContext.persist_current_checkpoint` copies with
(`ray.train._internal.storage._pyarrow_fs_copy_files`) by one that applies the cuts listed in `T2S_FAULTS`
(JSON, `fault_env` writes it). A cut names the checkpoint `index` whose copy it cuts, in a destination whose
path contains `only` (an experiment's `/<name>/`, a trial's name); it copies the files in name order up to
`fraction` of their bytes (the file in flight is cut there), writes the file `marker` and then, by `then`:
`die` SIGKILLs its own process (a trial lost mid-copy), `hold` sleeps, so the test can kill the whole sweep
during the copy. Once its marker exists a cut copies whole again (the retry and the resume).
"""

from __future__ import annotations

import json
import os
import posixpath
import signal
import time

ENV = "T2S_FAULTS"


def fault_env(*cuts: dict) -> dict[str, str]:
    """The environment variable that asks the workers for `cuts`: dicts of index, fraction, marker, and
    optionally then (`die`) and only (`""`: any destination)."""
    return {ENV: json.dumps([{"then": "die", "only": "", **c} for c in cuts])}


def _cut_copy(source: str, destination: str, fs, fraction: float) -> None:
    names = sorted(os.listdir(source))
    budget = int(fraction * sum(os.path.getsize(os.path.join(source, n)) for n in names))
    fs.create_dir(destination, recursive=True)
    for name in names:
        with open(os.path.join(source, name), "rb") as f:
            data = f.read(budget)
        budget -= len(data)
        with fs.open_output_stream(posixpath.join(destination, name)) as out:
            out.write(data)
        if budget <= 0:
            return


def cut_checkpoint_copy() -> None:
    """Install the cut copy in this worker when the test's environment asks for one."""
    if ENV not in os.environ:
        return
    import ray.train._internal.storage as ray_storage

    cuts = json.loads(os.environ[ENV])
    whole_copy = ray_storage._pyarrow_fs_copy_files

    def copy(source, destination, source_filesystem=None, destination_filesystem=None, **kwargs):
        target = posixpath.basename(str(destination).rstrip("/"))
        cut = next(
            (
                c
                for c in cuts
                if target == f"checkpoint_{c['index']:06d}"
                and c["only"] in str(destination)
                and not os.path.exists(c["marker"])
            ),
            None,
        )
        if cut is None:
            return whole_copy(
                source,
                destination,
                source_filesystem=source_filesystem,
                destination_filesystem=destination_filesystem,
                **kwargs,
            )
        _cut_copy(source, destination, destination_filesystem, cut["fraction"])
        with open(cut["marker"], "w") as f:
            f.write(f"{os.getpid()} {destination}\n")
        if cut["then"] == "hold":
            time.sleep(3600)
        os.kill(os.getpid(), signal.SIGKILL)

    ray_storage._pyarrow_fs_copy_files = copy
