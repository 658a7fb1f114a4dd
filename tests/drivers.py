"""For the driver scripts tests start in subprocesses (`python -c ...`): nothing here imports torch, so a driver
that imports it can still assert that it never needed torch."""

from __future__ import annotations

import os


def joined_runtime_env(**extra) -> dict:
    """Ray's runtime_env for a driver script that joins a running Ray (conftest's `ray_address`): the workers of a
    joined Ray do not inherit the driver's environment, so this hands them its PYTHONPATH (the repository, a
    study), the fault cuts of `tests.faults` and the S3 endpoint's variables; `extra`: more runtime_env keys."""
    env = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "T2S_FAULTS") or k.startswith("AWS_")}
    return {**extra, "env_vars": env}
