"""Figures for `t2s-ray analyze`: training curves and the headline metrics per ablation.

Pure functions of the frames the `analysis` package computes; matplotlib's Agg backend (no display).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from t2s_ray.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless machines
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path, suffix=path.suffix) as tmp:  # a reader never sees half a PNG
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def plot_training_curves(curves: pd.DataFrame, path: Path, metric: str = "loss") -> Path | None:
    """Mean training `metric` by step per ablation with a ±1 std band over seeds (from `training_curves`)."""
    if curves.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for ablation, g in curves.groupby("ablation", sort=False):
        mean, std = g[f"{metric}_mean"], g[f"{metric}_std"].fillna(0)
        n = int(g["n_seeds"].max())
        ax.plot(g["step"], mean, label=f"{ablation} (n={n})")
        ax.fill_between(g["step"], mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"train {metric} (mean ± std over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_metrics(summary: pd.DataFrame, metrics: list[str], labels: dict[str, str], path: Path) -> Path | None:
    """One bar panel per metric: mean per ablation with ±1 std error bars; NaN-only metrics left out."""
    shown = [m for m in metrics if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    if not shown:
        return None
    plt = _pyplot()
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, m in zip(axes.flat, shown):
        ax.bar(summary["ablation"], summary[f"{m}_mean"], yerr=summary[f"{m}_std"].fillna(0), capsize=3)
        ax.set_title(labels.get(m, m), fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)
