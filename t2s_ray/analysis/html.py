"""report.html: one self-contained page per experiment (tables, plots, samples side by side, configs).

Everything is inlined (PNG plots and animated GIF samples as `data:` URIs, the CSS in the page) and a
Content-Security-Policy forbids any other source, so the file can be mailed and opened offline.
The page is a jinja2 template (`templates/report.html.j2`, autoescaped) filled from the same frames
`analyze` computes; this module gathers them and the trials' own files (params.json, the memory
sampler's CSV, samples.npz).
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd
from PIL import Image

from t2s_ray.analysis.catalog import HEADLINE
from t2s_ray.analysis.guidance import guidance_curve, missing_curves
from t2s_ray.analysis.read import _Attempt
from t2s_ray.analysis.render import (
    _notes_section,
    _reference_section,
    comparison_parts,
    guidance_cells,
    header_label,
    nan_notes,
)
from t2s_ray.analysis.tables import training_curves
from t2s_ray.io import content_hash
from t2s_ray.outputs import (
    ARMS_PARAM,
    DEFAULT_STUDY,
    MEMORY_CSV,
    MEMORY_LEGACY_COLUMNS,
    STUDY_PARAM,
    ablation_of,
    baseline_of,
    is_baseline,
    samples_npz,
    trial_config_json,
)
from t2s_ray.schema import changed
from t2s_ray.study import StudyError, load_study

SMOOTHING = 0.6
"""EMA weight of the smoothed training-loss panel (TensorBoard's default slider value)."""
SAMPLE_PX = 96
"""Displayed height of a sample clip in pixels (the GIF keeps the clip's own pixels, scaled by the browser)."""
GIF_MS = 125
"""Frame duration of the inlined sample GIFs (8 frames/s)."""


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def clip_gif(clip: np.ndarray) -> bytes:
    """An animated, looping GIF of one uint8 `(T, H, W, 3)` clip at its own resolution."""
    frames = [Image.fromarray(np.ascontiguousarray(f)) for f in clip]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_MS, loop=0, disposal=1)
    return buf.getvalue()


def _png_uri(png: bytes | None) -> str | None:
    return None if png is None else data_uri(png, "image/png")


# --------------------------------------------------------------------------- configs and header


def _params(trial_dir: str) -> dict:
    return json.loads((Path(trial_dir) / "params.json").read_text(encoding="utf-8"))


def arm_configs(selected: pd.DataFrame, params: dict[str, dict]) -> dict[str, dict | str]:
    """Arm -> the nested config its trials trained with, seed left out (from a trial folder's `t2s_config.json`,
    or `t2s_config-<member>.json` for an ablation that shared its training), or why it is not known. An experiment
    written before those files is resolved from its params by its study (the bundled one when they name none)."""
    out: dict[str, dict | str] = {}
    for arm, p in params.items():
        row = selected[selected["ablation"] == arm].iloc[0]
        folder = Path(row["trial_dir"])  # a member of a shared run lives in its trainer's folder
        member = None if row.get("trained_with") in (None, p["ablation"]) else p["ablation"]
        try:
            path = folder / trial_config_json(member)
            if path.is_file():
                cfg = json.loads(path.read_text(encoding="utf-8"))
            else:
                study = load_study(p.get(STUDY_PARAM) or DEFAULT_STUDY)
                cfg = study.config_dict(study.trial_config(p))
            cfg.pop("seed", None)
            out[arm] = cfg
        except (StudyError, OSError, KeyError, ValueError) as e:
            out[arm] = f"config not resolvable here: {e}"
    return out


def config_hash(configs: dict[str, dict | str]) -> str:
    """12 hex digits of a sha256 over every arm's resolved config (seed excluded): equal for two experiments that
    ran the same study, whatever the code's git state or the machine."""
    bad = next((v for v in configs.values() if isinstance(v, str)), None)
    if bad is not None:
        return f"n/a ({bad})"
    return content_hash(configs, digits=12)


def _when(ts: float | None) -> str:
    if ts is None or not math.isfinite(ts):
        return "?"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _node_values(attempts: list[_Attempt], key: str) -> list[str]:
    values = {str(r[key]) for a in attempts for r in a.rows[-1:] if r.get(key) not in (None, "")}
    return sorted(values)


def _hosts(attempts: list[_Attempt]) -> str:
    """The trials' host names, and how many Ray nodes they ran on when more than one (several may share a host)."""
    hosts, nodes = _node_values(attempts, "node/hostname"), _node_values(attempts, "node/id")
    return (", ".join(hosts) or "not recorded") + (f" ({len(nodes)} Ray nodes)" if len(nodes) > 1 else "")


def _header(
    exp_dir: Path, selected: pd.DataFrame, attempts: list[_Attempt], configs: dict[str, dict | str], baseline: str
) -> dict:
    counts = selected["status"].value_counts()
    started = [r.get("node/started_at") for a in attempts for r in a.rows[:1]]
    started = [float(t) for t in started if isinstance(t, (int, float))]
    problems = [
        {
            "status": r["status"],
            "ablation": r["ablation"],
            "seed": int(r["seed"]),
            "reason": r["error"]
            if isinstance(r.get("error"), str)
            else ("no final report (interrupted or still running)" if r["status"] == "unfinished" else ""),
            "dir": r["trial_dir"],
        }
        for _, r in selected[selected["status"] != "finished"].iterrows()
    ]
    chash = config_hash(configs)
    seeds = sorted(selected["seed"].astype(int).unique())
    devices = _node_values(attempts, "node/device_name") or _node_values(attempts, "node/device")
    return {
        "name": exp_dir.name,
        "path": str(exp_dir.resolve()),
        "baseline": baseline,
        "grid": "grid" in selected and bool(selected["grid"].notna().any()),  # arms are `<ablation> @ <point>`
        "scale": ", ".join(sorted(selected["scale"].dropna().astype(str).unique())) or "?",
        "data": ", ".join(sorted(selected["data"].dropna().astype(str).unique())) or "?",
        "seeds": ", ".join(map(str, seeds)),
        "config_hash": chash,
        "started": _when(min(started) if started else None),
        "finished": _when(float(selected["last_time"].max()) if "last_time" in selected else None),
        "written": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": ", ".join(_node_values(attempts, "node/torch")) or "not recorded",
        "ray": ", ".join(_node_values(attempts, "node/ray")) or "not recorded",
        "python": ", ".join(_node_values(attempts, "node/python")) or "not recorded",
        "devices": ", ".join(devices) or "not recorded",
        "hosts": _hosts(attempts),
        "n_trials": len(selected),
        "finished_n": int(counts.get("finished", 0)),
        "errored_n": int(counts.get("errored", 0)),
        "unfinished_n": int(counts.get("unfinished", 0)),
        "problems": problems,
    }


def _ablation_sections(
    summary: pd.DataFrame,
    selected: pd.DataFrame,
    params: dict[str, dict],
    configs: dict[str, dict | str],
    baseline: str,
    out_dir: Path,
) -> list[dict]:
    """Per ablation: its description, the config keys that differ from the baseline (at the same --grid point),
    its trial folders."""
    sections = []
    for ablation in summary["ablation"]:
        base_cfg = configs.get(baseline_of(ablation, baseline))
        p = params.get(ablation) or {}
        trials = selected[selected["ablation"] == ablation].sort_values("seed")
        links = [
            {
                "seed": int(r["seed"]),
                "status": r["status"],
                "href": Path(os.path.relpath(r["trial_dir"], out_dir)).as_posix(),
            }
            for _, r in trials.iterrows()
        ]
        trained_with = sorted(set(trials["trained_with"].dropna())) if "trained_with" in trials else []
        arm = (p.get(ARMS_PARAM) or {}).get(ablation_of(ablation)) or {}
        section = {
            "name": ablation,
            "description": arm.get("description", ""),
            "changes": [],
            "links": links,
            "error": None,
            "trained_with": ", ".join(t for t in trained_with if t != ablation),
        }
        cfg = configs.get(ablation)
        if isinstance(cfg, str):
            section["error"] = cfg
        elif cfg is not None and not is_baseline(ablation, baseline):
            if not isinstance(base_cfg, dict):
                section["error"] = f"config not resolvable here: the baseline {baseline!r} has no resolvable config"
            else:
                section["changes"] = [
                    {"key": k, "value": repr(v), "base": repr(b)}
                    for k, (v, b) in changed(cfg, base_cfg, ignore=("ablation", "seed")).items()
                ]
        sections.append(section)
    return sections


# --------------------------------------------------------------------------- plots


def _memory_frame(selected: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for _, r in selected.iterrows():
        path = Path(r["trial_dir"]) / MEMORY_CSV
        if not path.is_file():
            continue
        try:
            df = pd.read_csv(path).rename(columns=MEMORY_LEGACY_COLUMNS)  # older runs' names, same figures
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            continue  # a CSV cut mid-row by a crash: the other trials still plot
        if "time_s" in df and not df.empty:
            frames.append(df.assign(ablation=r["ablation"], seed=int(r["seed"])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def report_figures(
    history: pd.DataFrame, summary: pd.DataFrame, selected: pd.DataFrame, curve: pd.DataFrame
) -> dict[str, bytes]:
    """Every figure of the report as PNG bytes, each drawn once (`write_outputs` writes the same bytes as
    training_curves.png, metrics.png and guidance_curve.png): `curves`, `lr`, `memory`, `metrics`, `guidance`;
    one with nothing to draw is left out. `curve` is `guidance_curve(selected)`."""
    from t2s_ray.plots import (
        guidance_curve_figure,
        lr_figure,
        memory_figure,
        metrics_figure,
        png_bytes,
        training_curves_figure,
    )

    labels = {m: header_label(m) for m in HEADLINE}
    figures = {
        "curves": training_curves_figure(training_curves(history), smoothing=SMOOTHING),
        "lr": lr_figure(training_curves(history, "lr")),
        "memory": memory_figure(_memory_frame(selected)),
        "metrics": metrics_figure(summary, list(HEADLINE), labels),
        "guidance": guidance_curve_figure(curve),
    }
    return {name: png_bytes(fig) for name, fig in figures.items() if fig is not None}


PLOTS = {
    "curves": ("Training loss", "mean ± std over seeds per ablation; left raw, right smoothed"),
    "lr": ("Learning rate", "per ablation (the schedule as run)"),
    "memory": ("Memory over time", "every trial's memory sampler (gpu_memory.csv), one line per seed"),
    "metrics": ("Headline metrics", "mean over finished seeds with the 95 % t-interval of the mean"),
}
"""The report's plots section in order: figure name -> (title, caption)."""


def _plots(figures: dict[str, bytes]) -> list[dict]:
    return [
        {"title": title, "caption": caption, "src": _png_uri(figures[name])}
        for name, (title, caption) in PLOTS.items()
        if name in figures
    ]


# --------------------------------------------------------------------------- samples


def _seed_trial(selected: pd.DataFrame, ablation: str) -> pd.Series | None:
    """The finished trial of `ablation` with the lowest seed (seed 0 when it finished)."""
    done = selected[(selected["ablation"] == ablation) & (selected["status"] == "finished")]
    return None if done.empty else done.sort_values("seed").iloc[0]


def _samples(summary: pd.DataFrame, selected: pd.DataFrame) -> dict:
    """Rows of captions with the real clip and each ablation's clip (the same prompt and noise), from the
    trials' samples.npz; trials written before samples.npz existed show their samples.gif instead."""
    columns, arrays, whole_gifs, notes = [], {}, [], []
    for ablation in summary["ablation"]:
        trial = _seed_trial(selected, ablation)
        if trial is None:
            notes.append(f"{ablation}: no finished trial")
            continue
        folder = Path(trial["trial_dir"])
        npz = folder / samples_npz(ablation_of(ablation))  # a member of a shared training run
        if not npz.is_file():
            npz = folder / samples_npz()
        if npz.is_file():
            with np.load(npz, allow_pickle=False) as z:
                arrays[ablation] = {k: z[k] for k in z.files}
            columns.append({"name": ablation, "seed": int(trial["seed"])})
        elif (folder / "samples.gif").is_file():
            whole_gifs.append(
                {
                    "name": ablation,
                    "seed": int(trial["seed"]),
                    "src": data_uri((folder / "samples.gif").read_bytes(), "image/gif"),
                }
            )
        else:
            notes.append(f"{ablation} seed {int(trial['seed'])}: no samples in {folder}")
    rows = []
    if arrays:
        first = next(iter(arrays.values()))
        texts = [str(t) for t in first["texts"]]
        mismatched = [a for a, z in arrays.items() if [str(t) for t in z["texts"]] != texts]
        if mismatched:
            notes.append(
                f"captions differ from {columns[0]['name']}'s in: {', '.join(mismatched)} "
                "(evaluation settings differ); those columns are left out"
            )
            columns = [c for c in columns if c["name"] not in mismatched]
        for k, text in enumerate(texts):
            real = first.get("real")
            cells = [
                {"src": data_uri(clip_gif(real[k]), "image/gif"), "alt": f"real clip: {text}"}
                if real is not None
                else None
            ]
            cells += [
                {"src": data_uri(clip_gif(arrays[c["name"]]["fake"][k]), "image/gif"), "alt": f"{c['name']}: {text}"}
                for c in columns
            ]
            rows.append({"caption": text, "cells": cells})
    return {"columns": columns, "rows": rows, "whole_gifs": whole_gifs, "notes": notes, "px": SAMPLE_PX}


def _guidance_section(selected: pd.DataFrame, curve: pd.DataFrame, png: bytes | None) -> dict | None:
    """The guidance curve (figure `png` and per-scale table; `curve` = `guidance_curve(selected)`) when some
    ablation evaluated a list of guidance scales."""
    missing = missing_curves(selected)
    if curve.empty and not missing:
        return None
    return {
        "table": guidance_cells(curve) if not curve.empty else None,
        "missing": missing,
        "src": _png_uri(png),
    }


# --------------------------------------------------------------------------- page


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("t2s_ray.analysis", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(
    exp_dir: str | os.PathLike,
    attempts: list[_Attempt],
    selected: pd.DataFrame,
    summary: pd.DataFrame,
    comparisons: pd.DataFrame,
    history: pd.DataFrame,
    out_dir: Path,
    baseline: str = "baseline",
    source: str | None = None,
    curve: pd.DataFrame | None = None,
    figures: dict[str, bytes] | None = None,
) -> str:
    """The report page as a string (see the module docstring). `out_dir`: where it will be written (the
    links to trial folders are relative to it); `source`: the experiment's storage URI when `exp_dir` is a
    local copy of it; `curve`: `guidance_curve(selected)` and `figures`: `report_figures(...)`, when the caller
    has them."""
    exp = Path(exp_dir)
    curve = guidance_curve(selected) if curve is None else curve
    figures = report_figures(history, summary, selected, curve) if figures is None else figures
    params = {}
    for _, r in selected.iterrows():
        # a trial that shared its training holds its trainer's params: the row's ablation is the member
        params.setdefault(r["ablation"], {**_params(r["trial_dir"]), "ablation": ablation_of(r["ablation"])})
    parts = comparison_parts(selected, summary, comparisons, baseline)
    configs = arm_configs(selected, params)
    context = {
        "h": _header(exp, selected, attempts, configs, baseline) | ({"path": source} if source else {}),
        "quality": parts["quality"],
        "cost": parts["cost"],
        "legend": parts["legend"],
        "frechet": parts["frechet"],
        "more": parts["more"],
        "missing": parts["missing"],
        "no_information": [line.removeprefix("- ") for line in parts["no_information"]],
        "guidance": parts["guidance"],
        "curve": _guidance_section(selected, curve, figures.get("guidance")),
        "references": [line.strip() for line in _reference_section(selected)],
        "nan_notes": nan_notes(selected),
        "notes": [line.strip() for line in _notes_section(selected, summary, baseline)],
        "plots": _plots(figures),
        "samples": _samples(summary, selected),
        "ablations": _ablation_sections(summary, selected, params, configs, baseline, Path(out_dir)),
    }
    return _environment().get_template("report.html.j2").render(**context)
