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
INTERVALS = ("t", "bootstrap")
"""`analyze --interval`: the 95 % interval of a paired difference, t-based or scipy.stats.bootstrap."""
SAMPLES_NPZ = "samples.npz"
"""In each finished trial's folder: uint8 arrays `fake` and `real` (N, T, H, W, 3) and `texts` (N,), the first
evaluation prompts' generated and real clips (the same prompts and noise in every trial)."""


def samples_npz(member: str | None = None) -> str:
    """The samples file of a trial's own ablation (`samples.npz`), or of a `member` ablation that shared its
    training (`samples-<member>.npz`)."""
    return SAMPLES_NPZ if member is None else f"samples-{member}.npz"


SHARED_PREFIX = "shared/"
"""A shared-training trial reports each other member's final metric `key` as `shared/<member>/<key>`."""


def shared_key(member: str, key: str) -> str:
    return f"{SHARED_PREFIX}{member}/{key}"
SAMPLES_KEPT = 8
"""How many evaluation prompts a trial keeps as samples (samples.gif, samples.npz)."""
REPORT_HTML = "report.html"
