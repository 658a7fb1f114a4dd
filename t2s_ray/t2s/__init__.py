"""The bundled study: the text-to-sign video DiT with its MiniLM text encoder on SynthSign (or a real corpus).

`study` is a `t2s_ray.Study` like a user's: its `train(cfg, session)` and `evaluate` run in the same generic
Ray Tune trainable (`t2s_ray.runner`) as any study's. `t2s-ray sweep` without `--study` sweeps it.
"""

from t2s_ray.t2s.study import study

__all__ = ["study"]
