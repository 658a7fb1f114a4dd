"""t2s-ray: ablation studies of text-to-sign video models on Ray Tune.

The public API: `Study` (your config, your `train(cfg, session)`, your ablations), `Session` (what `train` is
handed) and `AblationRunner` (the same logging for runs launched by your own scripts). They are imported on
first use, so `import t2s_ray` (and every `t2s-ray` command) stays light, and none of them imports Ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AblationRunner", "Session", "Study", "StudyError"]

_HOMES = {
    "AblationRunner": "t2s_ray.ablation_runner",
    "Session": "t2s_ray.study",
    "Study": "t2s_ray.study",
    "StudyError": "t2s_ray.study",
}

if TYPE_CHECKING:
    from t2s_ray.ablation_runner import AblationRunner
    from t2s_ray.study import Session, Study, StudyError


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 't2s_ray' has no attribute {name!r}")
