"""Helpers shared by several test files (import them from here, never from another test file)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from t2s_ray.data.cache import locked

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll `predicate` until it returns something truthy and return it; AssertionError naming `what` on timeout."""
    end = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (walks /proc), so a test stops exactly what it started."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def wait_for_trials_to_end(timeout_s: float = 60) -> None:
    """Wait until no trial process (Tune's `ray::ImplicitFunc` actor) runs under this test process's Ray: after a
    driver that joined it (`ray_address`) is killed, Ray ends that job's trials, and a resume must not run beside
    one that is still writing."""

    def trials() -> list[int]:
        found = []
        for pid in descendants(os.getpid()):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::ImplicitFunc"):
                    found.append(pid)
            except OSError:
                pass
        return found

    wait_for(lambda: not trials(), timeout_s, "the killed driver's trials to end")


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def s3_client(env: dict):
    """A boto3 S3 client for the test's moto server (`env` is the `s3` fixture's environment)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def s3_keys(env: dict, bucket: str, prefix: str = "") -> list[str]:
    """Every object key under `prefix` in `bucket`."""
    pages = s3_client(env).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def run_process_tree(cmd: list[str], timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` in a new session; when it ends or times out, every
    process it left (a Ray it started: raylet, GCS, workers) is killed by pid, so nothing outlives the test.
    A timeout is an AssertionError naming the command and the deadline, with the output so far."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        raise AssertionError(
            f"timed out after {timeout_s:g} s waiting for {' '.join(cmd)[:200]}; its output: {out[-2000:]}{err[-2000:]}"
        ) from None
    finally:
        kill_tree(proc.pid)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it that is still alive."""
    for p in descendants(pid) | {pid}:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------- shared between xdist workers


def shared_tmp(tmp_path_factory, name: str) -> Path:
    """A folder `name` of this test run that every pytest-xdist worker sees (a fresh `mktemp` outside xdist)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp(name)
    shared = tmp_path_factory.getbasetemp().parent / name
    shared.mkdir(exist_ok=True)
    return shared


def once_per_run(folder: Path, build: Callable[[Path], dict]) -> dict:
    """The record of `build(folder)` (a JSON-able dict), run once per test run: under pytest-xdist, with a
    `shared_tmp` folder, by the first worker that asks, under a file lock, while the others wait and read it.
    A build that raised is not run again (its folder is half written): the later workers fail naming it."""
    record, failed = folder / "record.json", folder / "build-failed.txt"
    with locked(folder / "build.lock"):
        if failed.exists():
            raise AssertionError(f"the shared build in {folder} failed in another test process: {failed.read_text()}")
        if not record.exists():
            try:
                body = build(folder)
            except BaseException as e:
                failed.write_text(f"{type(e).__name__}: {e}"[:2000])
                raise
            record.write_text(json.dumps(body))
        return json.loads(record.read_text())


# --------------------------------------------------------------------------- tiny runs

TINY_RUN = (
    "data.frames=4",
    "data.height=16",
    "data.width=16",
    "data.train_clips=16",
    "data.eval_clips=4",
    "training.batch_size=2",
    "training.steps=4",
    "training.warmup_steps=2",
    "training.report_every=2",
    "training.checkpoint_every=4",
    "eval.num_videos=2",
    "eval.sampling_steps=2",
    "eval.evaluator_clips=64",
    "eval.evaluator_epochs=1",
    "device=cpu",
)
"""`--set` overrides of a trial small enough for a test on the CPU: 4 frames of 16 x 16 px, 16 training clips,
4 steps, a gloss evaluator trained on 64 clips for one epoch."""


def tiny_overrides(*changes: str, drop: Sequence[str] = (), base: Sequence[str] = TINY_RUN) -> tuple[str, ...]:
    """`base` with each `key=value` of `changes` in place of the item of its key (after the others for a key `base`
    lacks) and the keys in `drop` left out. Every key appears once, so no later item overrides an earlier one."""
    items = {item.partition("=")[0]: item for item in base}
    if unknown := [key for key in drop if key not in items]:
        raise ValueError(f"drop: {unknown} not among the keys of {list(items)}")
    for key in drop:
        del items[key]
    keys = [item.partition("=")[0] for item in changes]
    if any("=" not in item for item in changes) or len(set(keys)) < len(keys):
        raise ValueError(f"changes {list(changes)}: expected key=value items, each key once")
    return tuple({**items, **dict(zip(keys, changes))}.values())


FINISHED_STEPS = 6
"""Training steps of the sweep tests' trials (conftest's `finished_sweep` among them)."""

SWEEP_RUN = tiny_overrides(f"training.steps={FINISHED_STEPS}", "training.checkpoint_every=3")
"""TINY_RUN for 6 steps: a report at step 1, then every 2 and at each checkpoint (every 3)."""

TINY_EVAL = tiny_overrides(
    "data.train_clips=8",
    "data.eval_clips=6",
    "eval.num_videos=4",
    "eval.batch_size=2",
    drop=(
        "training.steps",
        "training.warmup_steps",
        "training.report_every",
        "training.checkpoint_every",
        "eval.evaluator_clips",
        "eval.evaluator_epochs",
    ),
)
"""The overrides of the evaluation tests: 6 validation clips (two seeds pick different prompts), 4 videos scored."""


class Clips:
    """An in-memory dataset with the ClipDataset interface: `videos` (uint8, (N, T, H, W, 3)), one caption each."""

    def __init__(self, videos: np.ndarray, texts: list[str]):
        self.videos, self.texts = videos, texts

    @classmethod
    def random(cls, n: int = 8, frames: int = 4, size: int = 16) -> Clips:
        """`n` clips of random pixels, the same at every call, captioned "a person signs word <i>"."""
        videos = np.random.default_rng(0).integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)
        return cls(videos, [f"a person signs word {i}" for i in range(n)])

    def __len__(self) -> int:
        return len(self.texts)

    def get_batch(self, idx):
        return self.videos[idx].copy(), [self.texts[i] for i in idx]


class FakeClassifier(torch.nn.Module):
    """Stands in for the SynthSign gloss classifier: features = mean colour per frame."""

    def features(self, x):
        return x.mean(dim=(3, 4)).flatten(1)


def fake_evaluator_fn(data_cfg, device):
    """An `evaluator_fn` for `evaluate`: a `FakeClassifier` and no report."""
    return FakeClassifier(), {}


# --------------------------------------------------------------------------- a fake experiment folder


def train_row(step, ts, loss=1.0) -> dict:
    """A training row of a trial's result.json."""
    return {
        "step": step,
        "epoch": 0,
        "loss": loss,
        "lr": 1e-4,
        "samples_per_s": 10.0,
        "mem/gpu_peak_gb": 0.0,
        "training_iteration": step,
        "trial_id": "x",
        "timestamp": ts,
        "time_total_s": 1.0,
        "done": False,
    }


def final_row(ts, fvd, lpips, train_time_h=0.5) -> dict:
    """The final row of a finished trial's result.json (FVD not computed, as without I3D weights)."""
    return {
        "final": 1,
        "final_loss": 0.5,
        "val_loss": 0.6,
        "params/total_m": 1.5,
        "params/trainable_m": 1.0,
        "train_time_h": train_time_h,
        "mem/gpu_peak_gb": 2.0,
        "mem/cpu_rss_peak_gb": 3.0,
        "eval/fvd": math.nan,
        "eval/fvd_status": "no I3D weights: pass --i3d PATH",
        "eval/fvd_synthsign": fvd,
        "eval/lpips": lpips,
        "eval/num_videos": 8,
        "step": 20,
        "seed": 99,
        "trial_id": "x",
        "timestamp": ts,
        "done": True,
        "config": {"seed": 0},
    }


def make_trial(exp, name, ablation, seed, rows, error=None, tail="", trial_id=None) -> Path:
    """A trial folder `exp/name` as Ray Tune writes it: params.json, result.json (`rows`, then `tail`) and, with
    `error`, error.txt."""
    d = exp / name
    d.mkdir()
    params = {"ablation": ablation, "seed": seed, "scale": "smoke", "overrides": [], "data": "synthsign"}
    (d / "params.json").write_text(json.dumps(params))
    rows = [r | {"trial_id": trial_id} for r in rows] if trial_id else rows
    lines = "".join(json.dumps(r) + "\n" for r in rows)  # json.dumps writes NaN like Tune
    (d / "result.json").write_text(lines + tail)
    if error:
        (d / "error.txt").write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")
    return d


def set_args(overrides: Iterable[str]) -> list[str]:
    """`--set key=value` for each override, as the CLI takes them."""
    return [a for o in overrides for a in ("--set", o)]


def one_trial_sweep(storage: Path | str, name: str, overrides: Iterable[str], dashboard: bool = False) -> list[str]:
    """`python -m t2s_ray.cli sweep` of baseline, one seed, on the CPU at half a CPU (quiet): the driver the
    kill, Ctrl+C and dashboard tests start and stop. The dashboard only when asked for (its processes slowed a
    one-trial sweep by 8.5 s on 2 cores, docs/PERFORMANCE.md)."""
    return [
        sys.executable,
        "-m",
        "t2s_ray.cli",
        "sweep",
        "--gpus",
        "0",
        "--ablations",
        "baseline",
        "--cpus-per-trial",
        "0.5",
        "--storage",
        str(storage),
        "--name",
        name,
        "--quiet",
        "--dashboard" if dashboard else "--no-dashboard",
        *set_args(overrides),
    ]
