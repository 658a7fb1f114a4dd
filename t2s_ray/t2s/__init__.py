"""The bundled study: the text-to-sign video DiT with its MiniLM text encoder on SynthSign (or a real corpus):
its models, diffusion, EMA, training, evaluation, gloss evaluator, sampling and calibration.

`study` (in `t2s_ray.t2s.bundled`) is a `t2s_ray.Study` like a user's: its `train(cfg, session)` and `evaluate`
run in the same generic Ray Tune trainable (`t2s_ray.runner`) as any study's. `t2s-ray sweep` without
`--study` sweeps it.
"""

from typing import Any

__all__ = ["study"]


def __getattr__(name: str) -> Any:
    # lazy: the config imports the model size registry from this package, and the study imports the config
    if name == "study":
        from t2s_ray.t2s.bundled import study

        return study
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
