"""Ray Tune trainables: the only Ray-aware training code (wires `training.py` to `tune.report`)."""

from t2s_ray.trainables.t2s_trial import t2s_trial

__all__ = ["t2s_trial"]
