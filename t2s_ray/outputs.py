"""Names of the files an experiment's analysis writes, and the table formats `analyze` offers.

Apart from the `analysis` package (which needs pandas) so that the CLI can offer the choices without
loading it.
"""

TABLE_CSV = "comparison_table.csv"
TABLE_MD = "comparison_table.md"
REPORT_TXT = "ABLATION_RESULTS_REPORT.txt"
CURVES_CSV = "training_curves.csv"
COMPARISON_STATS_CSV = "comparison_stats.csv"
FORMATS = ("csv", "md", "both")
"""`analyze --format`: which comparison tables to write (the text report is always written)."""
TRACKERS = ("wandb", "mlflow")
"""`sweep --log-to`: trackers that receive every trial's metrics through Ray's logger callbacks (`t2s_ray.trackers`)."""
INTERVALS = ("t", "bootstrap")
"""`analyze --interval`: the 95 % interval of a paired difference, t-based or scipy.stats.bootstrap."""
SAMPLES_NPZ = "samples.npz"
"""In each finished trial's folder: uint8 arrays `fake` and `real` (N, T, H, W, 3) and `texts` (N,), the first
evaluation prompts' generated and real clips (the same prompts and noise in every trial of a seed)."""


def samples_npz(member: str | None = None) -> str:
    """The samples file of a trial's own ablation (`samples.npz`), or of a `member` ablation that shared its
    training (`samples-<member>.npz`)."""
    return SAMPLES_NPZ if member is None else f"samples-{member}.npz"


MEMORY_CSV = "gpu_memory.csv"
"""In each trial's folder: the memory sampler's readings over time (`t2s_ray.metrics.sampler`)."""
MEMORY_LEGACY_COLUMNS = {
    "gpu_used_gb": "nvml_device_used_gb",
    "gpu_total_gb": "nvml_device_total_gb",
    "gpu_util": "nvml_device_util_pct",
}
"""Columns of a memory CSV written before the NVML columns said whose memory they hold: old name -> current name."""


SHARED_PREFIX = "shared/"
"""A shared-training trial reports each other member's final metric `key` as `shared/<member>/<key>`."""


TRIAL_CONFIG = "t2s_config.json"
"""In each trial's folder: the config it trained with, resolved (and `t2s_config-<member>.json` for each ablation
that shared its training), so that the analysis needs no study's code to show or hash it."""


def trial_config_json(member: str | None = None) -> str:
    return TRIAL_CONFIG if member is None else f"t2s_config-{member}.json"


def shared_key(member: str, key: str) -> str:
    return f"{SHARED_PREFIX}{member}/{key}"


def shared_members(params: dict) -> list[str]:
    """The ablations a trial's training also served (`shared` in its params; see `t2s-ray sweep`)."""
    return [str(m) for m in params.get("shared", {}).get(params["ablation"], [])]


SAMPLES_KEPT = 8
"""How many evaluation prompts a trial keeps as samples (samples.gif, samples.npz)."""
REPORT_HTML = "report.html"
STUDY_PARAM = "study"
"""The param_space key holding a user study's `package.module:attr`."""
DEFAULT_STUDY = "t2s_ray.t2s:study"
"""The study of a trial whose params name none: the bundled text-to-sign model (`t2s-ray sweep` without
`--study`). A reference, not an import: the runner knows no study's code."""
ARMS_PARAM = "arms"
"""The param_space key holding what the report says of each ablation of the sweep: {name: {"description": str,
"primary": [metric, ...]}} (`Study.describe`), so that the analysis needs no study's code."""
GRID_PARAM = "grid"
"""In a trial's params: `{config key: value}` of the `--grid` axes this trial sits at (absent without --grid)."""
GRID_JOIN = " @ "
"""An arm of a `--grid` sweep is labelled `<ablation> @ <grid label>` in the tables and the report."""


def grid_label(grid: dict | None) -> str:
    """`{"training.lr": 0.0001, "eval.guidance_scale": 3.0}` -> `training.lr=0.0001, eval.guidance_scale=3.0`
    (in the sweep's key order; "" without grid axes)."""
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in (grid or {}).items())


def grid_override(key: str, value: object) -> str:
    """One `--grid` coordinate as a `--set` override (`training.lr=0.0001`); floats keep every digit."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"


def arm_label(ablation: str, grid: dict | None) -> str:
    """The name of one arm of the study: the ablation, plus its grid point when the sweep has grid axes."""
    label = grid_label(grid)
    return f"{ablation}{GRID_JOIN}{label}" if label else ablation


def baseline_of(arm: str, baseline: str) -> str:
    """The baseline arm an `arm` is compared with: the baseline at the same grid point."""
    _, sep, label = arm.partition(GRID_JOIN)
    return f"{baseline}{sep}{label}"


def is_baseline(arm: str, baseline: str) -> bool:
    return ablation_of(arm) == baseline


def ablation_of(arm: str) -> str:
    """The ablation of an arm label (`no_ema @ training.lr=0.0001` -> `no_ema`)."""
    return arm.partition(GRID_JOIN)[0]


SWEEP_FILE = "t2s_sweep.json"
"""In the experiment folder: what each trial asks Ray for (so that `resume` gives trials it starts the same)
and, for a user study, its reference, baseline and metric directions."""
