"""Reading an experiment dir: the trial folders Ray Tune wrote, opened directly.

params.json, result.json and error.txt are read as files, so `t2s-ray analyze` needs neither
Ray nor a running cluster. One row per folder (`load_trials`), one per (ablation, seed)
(`select_trials`), and every non-final report (`load_history`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from t2s_ray import storage
from t2s_ray.analysis.catalog import META_COLUMNS, guidance_columns, metric_columns
from t2s_ray.outputs import (
    ARMS_PARAM,
    DEFAULT_STUDY,
    GRID_PARAM,
    SHARED_PREFIX,
    STUDY_PARAM,
    arm_label,
    grid_label,
    shared_key,
    shared_members,
)
from t2s_ray.storage import Location

# Keys of the final row that are Tune bookkeeping or per-step snapshots, not final metrics.
TUNE_KEYS = frozenset(
    {
        "training_iteration",
        "trial_id",
        "timestamp",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "timesteps_total",
        "episodes_total",
        "timesteps_since_restore",
        "done",
        "pid",
        "hostname",
        "node_ip",
        "date",
        "config",
        "experiment_id",
        "experiment_tag",
        "checkpoint_dir_name",
        "should_checkpoint",
    }
)
STEP_KEYS = frozenset(
    {
        "final",
        "step",
        "epoch",
        "loss",
        "lr",
        "samples_per_s",
        "step_time_ms",
        "data_time_ms",
        "mem/gpu_allocated_gb",
        "mem/gpu_reserved_gb",
        "mem/gpu_util",
        "mem/cpu_rss_gb",
        "elapsed_s",
    }
)


EXPERIMENT_DIR_HELP = (
    "An experiment dir is the folder Ray Tune wrote for one sweep (<storage>/<name>/): "
    "it holds tuner.pkl, experiment_state-*.json and one sub-folder per trial with "
    "params.json and result.json."
)


@dataclass(frozen=True)
class _Attempt:
    folder: Path
    params: dict
    rows: list[dict]
    error: str | None
    ray_status: str | None = None
    """The trial's status in Ray Tune's newest experiment_state-*.json (TERMINATED, ERROR, PENDING, ...)."""
    damaged: str | None = None
    """What was wrong with the trial's result.json and what was recovered (None: nothing)."""


def ray_statuses(exp_dir: Location) -> dict[str, str]:
    """Trial folder name -> status, from the newest experiment state Tune wrote in `exp_dir` (a folder or a URI;
    read as JSON: no Ray needed); {} when there is none or it cannot be read (the trial folders are then the only
    record)."""
    states = [n for n in storage.names(exp_dir) if n.startswith("experiment_state-") and n.endswith(".json")]
    if not states:
        return {}
    try:
        trials = json.loads(storage.read_bytes(storage.join(exp_dir, states[-1])))["trial_data"]
        return {t["relative_logdir"]: t["status"] for t in (json.loads(pair[0]) for pair in trials)}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}


def _trial_folders(exp_dir: Path) -> list[Path]:
    """Sub-folders holding params.json; raises when there are none."""
    if not exp_dir.is_dir():
        what = (
            "is a file, expected an experiment folder written by t2s-ray sweep"
            if exp_dir.exists()
            else "does not exist"
        )
        raise ValueError(f"Experiment dir {exp_dir} {what}. {EXPERIMENT_DIR_HELP}")
    folders = sorted(p for p in exp_dir.iterdir() if (p / "params.json").is_file())
    if folders:
        return folders
    nested = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and _trial_like(p))
    hint = f" It contains experiment dirs: {', '.join(nested)}; pass one of them." if nested else ""
    raise ValueError(f"{exp_dir} holds no trial folders (none has params.json).{hint} {EXPERIMENT_DIR_HELP}")


def _trial_like(folder: Path) -> bool:
    return any((p / "params.json").is_file() for p in folder.iterdir() if p.is_dir())


def _read_rows(path: Path) -> tuple[list[dict], bool]:
    """JSON lines of result.json, and whether its last line was cut short (a killed writer, a full disk: that line
    is dropped)."""
    if not path.is_file():
        return [], False
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if i == len(lines) - 1:  # the writer died mid-line
                return rows, True
            raise ValueError(
                f"{path}: line {i + 1} is not valid JSON ({err}); only the last line of result.json may be truncated"
            ) from err
    return rows, False


def _csv_value(text: str) -> object:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(text, text)


def _progress_rows(path: Path, after: int) -> list[dict]:
    """The rows of Tune's progress.csv (the same reports as result.json, flattened) past training_iteration
    `after`; [] when there is none or it cannot be read."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [
                {k: _csv_value(v) for k, v in row.items() if k is not None and v is not None}
                for row in csv.DictReader(f)
            ]
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    whole = [r for r in rows if isinstance(r.get("training_iteration"), int)]
    return [r for r in whole if r["training_iteration"] > after]


def _recover(folder: Path, rows: list[dict]) -> tuple[list[dict], str]:
    """result.json's rows after its cut last line, with what progress.csv holds beyond them, and the note that
    says so."""
    after = max((r.get("training_iteration", 0) for r in rows), default=0)
    more = _progress_rows(folder / "progress.csv", after)
    where = f"{folder / 'result.json'}: its last line is cut short"
    if more:
        return rows + more, f"{where}; {len(more)} report(s) recovered from progress.csv"
    return rows, f"{where}, and progress.csv holds nothing more: that report is lost"


def _read_error(path: Path) -> str | None:
    """Last non-empty line of error.txt (the exception message), or None."""
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else "error.txt is empty"


def _read_attempt(folder: Path) -> _Attempt:
    try:
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{folder / 'params.json'} is not valid JSON ({err})") from err
    missing = {"ablation", "seed"} - set(params)
    if missing:
        raise ValueError(
            f"{folder / 'params.json'} lacks {sorted(missing)}: expected the "
            "param_space of `t2s-ray sweep` ({'ablation': ..., 'seed': ...})."
        )
    rows, cut = _read_rows(folder / "result.json")
    damaged = None
    if cut:
        rows, damaged = _recover(folder, rows)
    return _Attempt(folder, params, rows, _read_error(folder / "error.txt"), damaged=damaged)


def _scan(exp_dir: str | os.PathLike) -> list[_Attempt]:
    statuses = ray_statuses(Path(exp_dir))
    attempts = [
        dataclasses.replace(_read_attempt(f), ray_status=statuses.get(f.name)) for f in _trial_folders(Path(exp_dir))
    ]
    # Tune's trial ids end in the grid counter: sorting by them restores the sweep's order.
    ids = [a.rows[-1].get("trial_id") if a.rows else None for a in attempts]
    order = sorted(range(len(attempts)), key=lambda i: (ids[i] is None, str(ids[i])))
    return [attempts[i] for i in order]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _final_values(row: dict) -> dict:
    """Numeric final metrics and their `*_status` strings from the final report."""
    values = {}
    for key, value in row.items():
        if (
            key in TUNE_KEYS
            or key in STEP_KEYS
            or key in META_COLUMNS
            or key.startswith("node/")
            or key.startswith(SHARED_PREFIX)
        ):
            continue  # node/* says where a trial ran, not how well; shared/* are other ablations' metrics
        if _is_number(value):
            values[key] = float(value)
        elif key.endswith("_status") and isinstance(value, str):
            values[key] = value
    return values


def _member_values(final: dict, member: str) -> dict:
    prefix = shared_key(member, "")
    return _final_values({k.removeprefix(prefix): v for k, v in final.items() if k.startswith(prefix)})


def _trial_records(att: _Attempt) -> list[dict]:
    """The trial's own record, then one per ablation that shared its training (the same folder and training,
    that ablation's final metrics); `trained_with` names the ablation whose config trained the weights."""
    final = next((r for r in reversed(att.rows) if r.get("final")), None)
    # finished only with the final report (Tune calls a trial it stopped on Ctrl+C "TERMINATED" too); errored when
    # the trial wrote error.txt or Ray's records say ERROR
    errored = att.error is not None or att.ray_status == "ERROR"
    status = "finished" if final else "errored" if errored else "unfinished"
    last = att.rows[-1] if att.rows else {}
    trainer = str(att.params["ablation"])
    grid = att.params.get(GRID_PARAM) or {}
    record = {
        "ablation": arm_label(trainer, grid),
        "seed": int(att.params["seed"]),
        **({"grid": grid_label(grid)} if grid else {}),
        "trial_dir": str(att.folder),
        "status": status,
        "trial_id": last.get("trial_id"),
        "last_time": float(last.get("timestamp", att.folder.stat().st_mtime)),
        "n_reports": len(att.rows),
        "error": att.error
        if att.error is not None or not errored
        else "Ray recorded the trial as ERROR (no error.txt in its folder)",
        "ray_state": att.ray_status,
        "scale": att.params.get("scale"),
        "data": att.params.get("data"),
        "trained_with": trainer,
        "primary": declared_primary(att.params, trainer),
        "damaged": att.damaged,
    }
    return [record | (_final_values(final) if final else {})] + [
        record
        | {"ablation": arm_label(member, grid), "primary": declared_primary(att.params, member)}
        | (_member_values(final, member) if final else {})
        for member in shared_members(att.params)
    ]


def declared_primary(params: dict, ablation: str) -> str:
    """The primary metric(s) the trial's study declares for `ablation` (its sweep records them in the params:
    `arms`), comma-joined; "" when it declares none (`catalog.primary_metrics` then decides)."""
    arm = (params.get(ARMS_PARAM) or {}).get(ablation)
    if arm is None:  # an experiment written before `arms`: its study says, when it can be loaded here
        from t2s_ray.study import StudyError, load_study

        try:
            arm = load_study(params.get(STUDY_PARAM) or DEFAULT_STUDY).describe(ablation, params)
        except (StudyError, KeyError, ValueError):
            arm = {}
    return ",".join(arm.get("primary", []))


def _trials_frame(attempts: list[_Attempt]) -> pd.DataFrame:
    df = pd.DataFrame([r for a in attempts for r in _trial_records(a)])
    statuses = sorted(c for c in df.columns if c.endswith("_status"))
    meta = [c for c in df.columns if c in META_COLUMNS]
    return df[meta + metric_columns(df) + guidance_columns(df) + statuses].reset_index(drop=True)


def _history_frame(attempts: list[_Attempt]) -> pd.DataFrame:
    records = [
        # a shared training run is every member's training curve
        {
            "ablation": arm_label(name, a.params.get(GRID_PARAM)),
            "seed": int(a.params["seed"]),
            "trial_dir": str(a.folder),
        }
        | {k: v for k, v in row.items() if _is_number(v) or isinstance(v, str)}
        | {"ablation": arm_label(name, a.params.get(GRID_PARAM))}
        for a in attempts
        for name in [str(a.params["ablation"]), *shared_members(a.params)]
        for row in a.rows
        if not row.get("final")
    ]
    return pd.DataFrame(records, columns=None if records else ["ablation", "seed", "trial_dir"])


def load_trials(exp_dir: str | os.PathLike) -> pd.DataFrame:
    """One row per trial folder (attempt) of an experiment dir.

    Columns: ablation, seed, trial_dir, status ("finished" when a final report exists,
    "errored" when error.txt exists without one, or Ray's experiment state says ERROR, else "unfinished"),
    ray_state (Tune's own status of the trial where its experiment state records it), trial_id, last_time,
    n_reports, error, scale, data, then every numeric final metric and `*_status` string.
    Raises ValueError when exp_dir is missing or holds no trial folders.
    """
    return _trials_frame(_scan(exp_dir))


def load_history(exp_dir: str | os.PathLike) -> pd.DataFrame:
    """Every non-final report of every attempt, with ablation, seed and trial_dir columns."""
    return _history_frame(_scan(exp_dir))


def _best_attempt(group: pd.DataFrame) -> pd.Series:
    finished = group[group["status"] == "finished"]
    pool = finished if len(finished) else group
    if "last_time" in pool and pool["last_time"].notna().any():
        return pool.loc[pool["last_time"].idxmax()]
    return pool.iloc[-1]


def select_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (ablation, seed), never per folder, in order of first appearance.

    Keeps the finished attempt (the newest by last_time if several); an (ablation, seed)
    with no finished attempt keeps its newest attempt, so errored/unfinished trials stay
    visible through `status`. Adds n_attempts and other_dirs ("; "-joined folders not kept).
    """
    rows = []
    for _, group in trials.groupby(["ablation", "seed"], sort=False):
        best = _best_attempt(group).copy()
        others = [d for d in group["trial_dir"] if d != best["trial_dir"]]
        best["n_attempts"] = len(group)
        best["other_dirs"] = "; ".join(map(str, others))
        rows.append(best)
    return pd.DataFrame(rows, columns=[*trials.columns, "n_attempts", "other_dirs"]).reset_index(drop=True)
