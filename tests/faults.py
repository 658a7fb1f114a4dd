"""Fault injection in Ray's workers: the copy of a checkpoint into storage cut short.

`cut_checkpoint_copy` is a `worker_process_setup_hook` (Ray's runtime_env): every worker the test's Ray
starts runs it. It replaces the function Ray's `StorageContext.persist_current_checkpoint` copies with
(`ray.train._internal.storage._pyarrow_fs_copy_files`) by one that, for the checkpoint numbered
`T2S_FAULT_INDEX`, copies the files in name order up to `T2S_FAULT_FRACTION` of their bytes (the file in
flight is cut there), writes the marker file `T2S_FAULT_MARKER` and then, by `T2S_FAULT_THEN`:
`die` SIGKILLs its own process (a trial lost mid-copy), `hold` sleeps, so the test can kill the whole sweep
during the copy. Once the marker exists every copy is whole again (the retry and the resume). With
`T2S_FAULT_TRIAL` set, only a destination whose path contains it is cut.
"""

from __future__ import annotations

import os
import posixpath
import signal
import time


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
    if "T2S_FAULT_INDEX" not in os.environ:
        return
    import ray.train._internal.storage as ray_storage

    index = int(os.environ["T2S_FAULT_INDEX"])
    fraction = float(os.environ["T2S_FAULT_FRACTION"])
    marker, then = os.environ["T2S_FAULT_MARKER"], os.environ.get("T2S_FAULT_THEN", "die")
    whole_copy = ray_storage._pyarrow_fs_copy_files

    def copy(source, destination, source_filesystem=None, destination_filesystem=None, **kwargs):
        target = posixpath.basename(str(destination).rstrip("/"))
        only = os.environ.get("T2S_FAULT_TRIAL", "")
        if target != f"checkpoint_{index:06d}" or os.path.exists(marker) or only not in str(destination):
            return whole_copy(
                source,
                destination,
                source_filesystem=source_filesystem,
                destination_filesystem=destination_filesystem,
                **kwargs,
            )
        _cut_copy(source, destination, destination_filesystem, fraction)
        with open(marker, "w") as f:
            f.write(f"{os.getpid()} {destination}\n")
        if then == "hold":
            time.sleep(3600)
        os.kill(os.getpid(), signal.SIGKILL)

    ray_storage._pyarrow_fs_copy_files = copy
