"""Two copies of one trial training at once on one device, each in its own process as packed trials run: the
step time of each when two share a GPU, from which `plan.packed_slowdown` models k packed trials.

Each child builds the trial's state, trains one warm-up step (compilation, caches), says READY and waits; the
parent starts both at once and each times `steps` steps and prints their median:

    python -m t2s_ray.t2s.pair_probe CONFIG.json STEPS DEVICE
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

READY = "READY"


def measure_pair(
    cfg, steps: int, device: str, timeout_s: float = 900.0, threads: int | None = None
) -> tuple[float, str]:
    """(median step seconds of each of two copies of `cfg` training at once on `device`, status); NaN with the
    reason when a child fails or the pair does not finish within `timeout_s`."""
    with tempfile.TemporaryDirectory(prefix="t2s-pair-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(cfg.to_json(), encoding="utf-8")
        cmd = [sys.executable, "-m", "t2s_ray.t2s.pair_probe", str(path), str(steps), device]
        cmd += [str(threads)] if threads else []
        procs = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        try:
            for p in procs:  # both built and warm before either is timed
                line = p.stdout.readline().strip()
                if line != READY:
                    return math.nan, f"not measured: a pair probe failed to start ({_tail(p)})"
            for p in procs:
                p.stdin.write("GO\n")
                p.stdin.flush()
            medians = []
            for p in procs:
                out, err = p.communicate(timeout=timeout_s)
                if p.returncode != 0:
                    return math.nan, f"not measured: a pair probe exited {p.returncode} ({err.strip()[-300:]})"
                medians.append(float(json.loads(out.strip().splitlines()[-1])["step_s"]))
            return statistics.mean(medians), "measured: two copies in two processes on one device"
        except subprocess.TimeoutExpired:
            return math.nan, f"not measured: the pair probe took longer than {timeout_s:g} s"
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()


def _tail(proc: subprocess.Popen) -> str:
    proc.kill()
    _, err = proc.communicate()
    return (err or "no output").strip()[-300:]


def _child(config_path: str, steps: int, device: str, threads: int | None, say: Callable[[str], None]) -> None:
    import torch

    from t2s_ray.data import build_dataset
    from t2s_ray.t2s.config import Config
    from t2s_ray.t2s.training import build_state, prefill_captions, time_train_steps

    if threads:
        torch.set_num_threads(threads)
    cfg = Config.from_dict(json.loads(Path(config_path).read_text(encoding="utf-8")))
    state = build_state(cfg, device=torch.device(device))
    data = build_dataset(cfg.data, "train")
    prefill_captions(state, data)
    time_train_steps(state, data, 1, warmup=1)
    say(READY)
    sys.stdin.readline()
    times = time_train_steps(state, data, steps, warmup=0)
    say(json.dumps({"step_s": statistics.median(times)}))


if __name__ == "__main__":
    _child(
        sys.argv[1],
        int(sys.argv[2]),
        sys.argv[3],
        int(sys.argv[4]) if len(sys.argv) > 4 else None,
        lambda line: print(line, flush=True),
    )
