"""Building, running and restoring the Ray Tune experiment: grid, resources, storage, failures.

Everything here runs in the driver, in the order of its modules: `spec` (what the user asked for), `validate`
(every option, before Ray starts: a bad option costs nothing and writes nothing), `estimate` (resources per
trial and the cost), `run` (data prepared once, Ray, the Tuner) and `resume`; `study` is a user study's spec.
"""

from t2s_ray.sweep.estimate import dry_run
from t2s_ray.sweep.resume import resume_sweep, saved_resources, saved_study
from t2s_ray.sweep.run import (
    SweepOutcome,
    build_tuner,
    prepare_cluster_data,
    prepare_data,
    prepare_evaluators,
    run_sweep,
    save_resources,
    trainable_with_resources,
)
from t2s_ray.sweep.spec import SweepError, SweepSpec, absolutize_override, absolutize_spec, check_name, parse_grid
from t2s_ray.sweep.validate import validate

__all__ = ["SweepError", "SweepOutcome", "SweepSpec", "absolutize_override", "absolutize_spec", "build_tuner",
           "check_name", "dry_run", "parse_grid", "prepare_cluster_data", "prepare_data", "prepare_evaluators",
           "resume_sweep", "run_sweep", "save_resources", "saved_resources", "saved_study",
           "trainable_with_resources", "validate"]
