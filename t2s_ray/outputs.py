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
