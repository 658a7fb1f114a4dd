"""Figures for `t2s-ray analyze` and its HTML report: training curves, learning rate, memory over time,
and the headline metrics per ablation.

Pure functions of the frames the `analysis` package computes; matplotlib's Agg backend (no display).
Each `*_figure` returns a figure (None when there is nothing to draw) and `png_bytes` gives one's PNG: the
report inlines it and `write_outputs` writes the same bytes as its PNG files, so each figure is drawn once.
"""

from __future__ import annotations

import io
import math

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: works on headless machines
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = _pyplot()
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        return buf.getvalue()
    finally:
        plt.close(fig)


def smooth(values: pd.Series, weight: float) -> pd.Series:
    """TensorBoard-style smoothing: an exponential moving average with bias correction (weight in [0, 1))."""
    return values.ewm(alpha=1 - weight, adjust=True).mean() if weight > 0 else values


def _curve_axes(ax, curves: pd.DataFrame, metric: str, weight: float) -> float:
    """Draw the curves with their bands; return the lowest point of any band."""
    lowest = math.inf
    for ablation, g in curves.groupby("ablation", sort=False):
        mean, std = smooth(g[f"{metric}_mean"], weight), smooth(g[f"{metric}_std"].fillna(0), weight)
        n = int(g["n_seeds"].max())
        ax.plot(g["step"], mean, label=f"{ablation} (n={n})")
        ax.fill_between(g["step"], mean - std, mean + std, alpha=0.2)
        lowest = min(lowest, float((mean - std).min()))
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    return lowest


def training_curves_figure(curves: pd.DataFrame, metric: str = "loss", smoothing: float = 0.0):
    """Mean training `metric` by step per ablation with a ±1 std band over seeds (from `training_curves`);
    with `smoothing` > 0 a second panel shows the same curves smoothed (`smooth`)."""
    if curves.empty:
        return None
    plt = _pyplot()
    panels = 2 if smoothing > 0 else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.4 * panels, 4), squeeze=False)
    for ax, weight in zip(axes.flat, (0.0, smoothing)):
        lowest = _curve_axes(ax, curves, metric, weight)
        ax.set_ylabel(f"train {metric} (mean ± std over seeds)")
        ax.set_title("raw" if weight == 0 else f"smoothed (EMA weight {weight:g})", fontsize=10)
        if metric == "loss" and lowest > 0:  # a loss falls over decades; a band reaching 0 needs a linear axis
            ax.set_yscale("log")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def lr_figure(curves: pd.DataFrame):
    """The learning rate by step per ablation (from `training_curves(history, "lr")`)."""
    if curves.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for ablation, g in curves.groupby("ablation", sort=False):
        ax.plot(g["step"], g["lr_mean"], label=ablation)
    ax.set_xlabel("training step")
    ax.set_ylabel("learning rate")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# memory sampler column -> panel title; each trial's own figures first, then the whole GPU's
MEMORY_PANELS = {
    "gpu_allocated_gb": "this trial: GPU allocated by torch",
    "nvml_process_used_gb": "this trial: GPU used by its process (NVML)",
    "nvml_device_used_gb": "whole GPU: used by every process on it (NVML),\nother trials sharing it included",
    "cpu_rss_gb": "this trial: process RSS (CPU)",
}


def memory_figure(memory: pd.DataFrame):
    """Memory over time per trial from the trials' memory sampler CSVs: one panel per `MEMORY_PANELS`
    reading with any value, one line per trial, coloured by ablation. `memory` has columns ablation,
    seed, time_s and the readings under the sampler's current names."""
    readings = [(c, t) for c, t in MEMORY_PANELS.items() if c in memory and memory[c].notna().any()]
    if memory.empty or not readings:
        return None
    plt = _pyplot()
    cols = len(readings) if len(readings) <= 3 else 2  # four panels in a row would be too wide for the report
    rows = math.ceil(len(readings) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    colours = {a: f"C{i}" for i, a in enumerate(dict.fromkeys(memory["ablation"]))}
    for ax, (column, title) in zip(axes.flat, readings):
        for (ablation, seed), g in memory.groupby(["ablation", "seed"], sort=False):
            ax.plot(
                g["time_s"],
                g[column],
                color=colours[ablation],
                alpha=0.8,
                label=ablation if seed == memory.loc[memory["ablation"] == ablation, "seed"].min() else None,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time since the trial started (s)")
        ax.set_ylabel("GiB")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(readings) :]:
        ax.axis("off")
    axes.flat[0].legend(title="ablation (one line per seed)", fontsize=8, title_fontsize=8)
    fig.tight_layout()
    return fig


def _ci_half_width(summary: pd.DataFrame, m: str) -> pd.Series:
    """Half-width of the 95 % t-interval of each ablation's mean (0 where it has under 2 values)."""
    from scipy import stats

    n = summary[f"{m}_n"].astype(float)
    t = pd.Series([stats.t.ppf(0.975, k - 1) if k >= 2 else math.nan for k in n], index=summary.index)
    return (t * summary[f"{m}_std"] / n.pow(0.5)).fillna(0)


def metrics_figure(summary: pd.DataFrame, metrics: list[str], labels: dict[str, str]):
    """One bar panel per metric: mean per ablation with the 95 % t-interval of the mean over seeds as error
    bars; NaN-only metrics left out."""
    shown = [m for m in metrics if f"{m}_mean" in summary and summary[f"{m}_mean"].notna().any()]
    if not shown:
        return None
    plt = _pyplot()
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, m in zip(axes.flat, shown):
        ax.bar(summary["ablation"], summary[f"{m}_mean"], yerr=_ci_half_width(summary, m), capsize=3)
        ax.set_title(labels.get(m, m), fontsize=10)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle("mean over seeds; whiskers: 95 % t-interval of the mean", fontsize=9)
    fig.tight_layout()
    return fig


def guidance_curve_figure(curve: pd.DataFrame):
    """FVD-SynthSign against text alignment, one line per ablation through its guidance scales in increasing
    order (means over seeds, from `analysis.guidance.guidance_curve`), each point labelled by its scale, the
    headline scale's ringed; None when no ablation has a point with both values."""
    from t2s_ray.guidance import scale_text

    both = curve.dropna(subset=["text_alignment_mean", "fvd_synthsign_mean"])
    if both.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for i, (ablation, g) in enumerate(both.groupby("ablation", sort=False)):
        g = g.sort_values("scale")
        x, y = g["text_alignment_mean"], g["fvd_synthsign_mean"]
        ax.plot(x, y, marker="o", color=f"C{i}", label=ablation)
        head = g[g["headline"].astype(bool)]
        ax.scatter(
            head["text_alignment_mean"],
            head["fvd_synthsign_mean"],
            s=160,
            facecolors="none",
            edgecolors=f"C{i}",
            linewidths=1.5,
        )
        for xi, yi, s in zip(x, y, g["scale"]):
            ax.annotate(
                f"g={scale_text(s)}", (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8, color=f"C{i}"
            )
    ax.set_xlabel("text alignment (eval/text_alignment), higher is better →")
    ax.set_ylabel("FVD-SynthSign (eval/fvd_synthsign), lower is better ↓")
    ax.set_title("guidance curve: mean over seeds, points labelled by guidance scale (ringed: headline)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
