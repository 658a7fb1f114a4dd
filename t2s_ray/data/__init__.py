"""Datasets: one file per corpus; `build_dataset(cfg, split)` picks one by the spec prefix."""
