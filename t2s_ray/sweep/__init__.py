"""Building, running and restoring the Ray Tune experiment of any study: grid, resources, storage, failures.

Everything here runs in the driver, in the order of its modules: `spec` (what the user asked for, and the hooks a
study's spec fills in), `validate` (every option, before Ray starts: a bad option costs nothing and writes
nothing), `estimate` (resources per trial and the cost), `run` (what the study prepares, Ray, the Tuner) and
`resume`; `study` is a user study's spec. The bundled study's spec is `t2s_ray.t2s.sweep.BundledSweepSpec`:
nothing here imports it.
"""

from t2s_ray.sweep.estimate import dry_run
from t2s_ray.sweep.resume import resume_sweep, saved_resources, saved_study
from t2s_ray.sweep.run import SweepOutcome, build_tuner, run_sweep, save_resources, trainable_with_resources
from t2s_ray.sweep.spec import SweepError, SweepSpec, check_name, parse_grid
from t2s_ray.sweep.validate import validate

__all__ = [
    "SweepError",
    "SweepOutcome",
    "SweepSpec",
    "build_tuner",
    "check_name",
    "dry_run",
    "parse_grid",
    "resume_sweep",
    "run_sweep",
    "save_resources",
    "saved_resources",
    "saved_study",
    "trainable_with_resources",
    "validate",
]
