"""The function Ray Tune is given for every trial: `t2s_ray.runner.study_trial`, imported in the trial's own
process only.

The runner imports torch and the study; the driver that builds the `Tuner` needs neither (a CPU-only driver
spent ~3 s importing torch for a function it only pickles by name), so it hands Tune this one.
"""

from __future__ import annotations

import time
from typing import Any


def study_trial(params: dict[str, Any]) -> None:
    """Ray Tune function trainable: `t2s_ray.runner.study_trial`, the trial's start time taken before its imports."""
    started_at = time.time()
    from t2s_ray.runner import study_trial as run

    run(params, started_at=started_at)
