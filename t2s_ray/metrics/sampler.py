"""Background memory sampler: a CSV row every few seconds per trial, and its peak/average figures.

A reader returns some of `READINGS` (GiB, utilisation in %); what it leaves out is NaN. The default
reader takes the torch allocator and NVML figures on CUDA and the process RSS always.

Column names say whose memory a figure is: `gpu_allocated_gb`/`gpu_reserved_gb` (torch's allocator)
and `nvml_process_used_gb` (NVML's figure for this process: allocator, CUDA context and any other
library) are this trial's; `nvml_device_*` are the whole GPU's, so with fractional GPUs they include
every other trial packed on it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch

from t2s_ray.io import write_text_atomic
from t2s_ray.metrics.memory import GIB, cpu_rss_gb, nvml_handle_or_reason
from t2s_ray.outputs import MEMORY_LEGACY_COLUMNS as LEGACY_COLUMNS

logger = logging.getLogger(__name__)

Reader = Callable[[], dict[str, float]]

READINGS = (
    "gpu_allocated_gb",
    "gpu_reserved_gb",
    "nvml_process_used_gb",
    "nvml_device_used_gb",
    "nvml_device_total_gb",
    "nvml_device_util_pct",
    "cpu_rss_gb",
)
COLUMNS = ("time_s", "unix_time", "step", *READINGS)
HEADER = ",".join(COLUMNS)
LEGACY_HEADER = "time_s,unix_time,step,gpu_allocated_gb,gpu_reserved_gb,gpu_used_gb,gpu_total_gb,gpu_util,cpu_rss_gb"
GPU_STATUS = "gpu: torch allocator + NVML"
NEVER_MEASURED = "never measured: no CUDA device or NVML in this trial"
# summary key -> (reading, statistic over the samples where it was measured)
SUMMARY = {
    "mem/sampled_gpu_allocated_peak_gb": ("gpu_allocated_gb", "peak"),
    "mem/sampled_gpu_allocated_avg_gb": ("gpu_allocated_gb", "avg"),
    "mem/sampled_nvml_process_used_peak_gb": ("nvml_process_used_gb", "peak"),
    "mem/sampled_nvml_device_used_peak_gb": ("nvml_device_used_gb", "peak"),
    "mem/sampled_nvml_device_util_avg": ("nvml_device_util_pct", "avg"),
    "mem/sampled_cpu_rss_peak_gb": ("cpu_rss_gb", "peak"),
    "mem/sampled_cpu_rss_avg_gb": ("cpu_rss_gb", "avg"),
}
# a reader stuck in a driver call must not hold the trial's exit for longer than this
_JOIN_TIMEOUT_S = 5.0


def cpu_reader() -> dict[str, float]:
    """Process RSS only, for runs without a CUDA device."""
    return {"cpu_rss_gb": cpu_rss_gb()}


class CudaReader:
    """Allocator figures of one CUDA device, NVML figures (this process's and the device's) when
    `nvml_handle` is set, process RSS.

    A figure NVML cannot give (a failed query, e.g. utilisation on MIG; this pid not among NVML's
    processes, as in a container whose pids differ from the host's; per-process memory not reported
    by the driver) is left out, so NaN; the first reason per cause is logged once and kept in
    `reasons` (reading -> why), never replaced by an estimate.
    """

    def __init__(self, index: int, nvml_handle: Any = None):
        self.index = index
        self.nvml_handle = nvml_handle
        self.reasons: dict[str, str] = {}
        self._warned: set[str] = set()

    def __call__(self) -> dict[str, float]:
        out = {
            "gpu_allocated_gb": torch.cuda.memory_allocated(self.index) / GIB,
            "gpu_reserved_gb": torch.cuda.memory_reserved(self.index) / GIB,
            "cpu_rss_gb": cpu_rss_gb(),
        }
        if self.nvml_handle is not None:
            out.update(self._nvml())
        return out

    def _nvml(self) -> dict[str, float]:
        import pynvml

        out = self._process_used()  # before the device figure, which then includes all of it
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(self.nvml_handle)
            out.update(nvml_device_used_gb=info.used / GIB, nvml_device_total_gb=info.total / GIB)
        except pynvml.NVMLError as exc:
            self._nan_once(
                "memory", ("nvml_device_used_gb", "nvml_device_total_gb"), f"NVML memory query failed ({exc})"
            )
        try:
            out["nvml_device_util_pct"] = float(pynvml.nvmlDeviceGetUtilizationRates(self.nvml_handle).gpu)
        except pynvml.NVMLError as exc:
            self._nan_once("utilisation", ("nvml_device_util_pct",), f"NVML utilisation query failed ({exc})")
        return out

    def _process_used(self) -> dict[str, float]:
        """`nvml_process_used_gb`: what NVML counts for this pid on the device; {} (NaN) when it cannot tell."""
        import pynvml

        pid, column = os.getpid(), ("nvml_process_used_gb",)
        try:
            processes = pynvml.nvmlDeviceGetComputeRunningProcesses(self.nvml_handle)
        except pynvml.NVMLError as exc:
            self._nan_once("processes", column, f"NVML process query failed ({exc})")
            return {}
        ours = [p.usedGpuMemory for p in processes if p.pid == pid]
        if not ours:
            self._nan_once(
                "pid",
                column,
                f"pid {pid} is not among the {len(processes)} compute processes NVML "
                "lists (in a container NVML lists host pids; or no CUDA context yet)",
            )
            return {}
        if any(used is None for used in ours):
            self._nan_once(
                "unreported", column, "the driver does not report per-process memory (usedGpuMemory not available)"
            )
            return {}
        return {"nvml_process_used_gb": sum(ours) / GIB}  # one entry per context; normally exactly one

    def _nan_once(self, cause: str, readings: tuple[str, ...], why: str) -> None:
        for reading in readings:
            self.reasons.setdefault(reading, why)
        if cause not in self._warned:
            self._warned.add(cause)
            logger.warning(
                "memory sampler: cuda:%d: %s; %s recorded as NaN (logged once)", self.index, why, ", ".join(readings)
            )


def default_reader(device: torch.device) -> tuple[Reader, str]:
    """The reader for `device` and a one-line status saying what it records."""
    if device.type != "cuda":
        where = "" if device.type == "cpu" else f"{device.type} device; "
        return cpu_reader, f"cpu only: no CUDA device ({where}CPU memory recorded)"
    if not torch.cuda.is_available():
        return cpu_reader, f"cpu only: {device} requested but CUDA is not available (CPU memory recorded)"
    # resolve here: the current device is per thread, and the sampler thread's would be cuda:0
    index = device.index if device.index is not None else torch.cuda.current_device()
    handle, reason = nvml_handle_or_reason(index)
    if handle is None:
        return CudaReader(index), f"no NVML ({reason}): allocator + CPU memory recorded"
    return CudaReader(index, handle), GPU_STATUS


def _fmt(value: float) -> str:
    return format(value, ".6g")


def _check_header(path: Path) -> bool:
    """Raise unless `path` is absent, empty or a CSV this sampler wrote (one it may append to);
    True when it has the legacy header (`_upgrade_legacy` must rewrite it before rows are appended)."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb") as f:
        first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    if first not in (HEADER, LEGACY_HEADER):
        raise ValueError(
            f"{path} exists with header {first!r}, not the memory sampler's {HEADER!r}; "
            "move or delete it, or give the sampler another path"
        )
    return first == LEGACY_HEADER


def _upgrade_legacy(path: Path) -> None:
    """Rewrite a legacy-header CSV (a trial resumed under a newer version) under `HEADER`, atomically.

    Old rows keep their values under the new names; `nvml_process_used_gb` was not recorded then
    (NaN). Rows cut short by a killed run are dropped: their last value may be cut too.
    """
    old = LEGACY_HEADER.split(",")
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()[1:]
    if not text.endswith("\n"):
        lines = lines[:-1]  # a killed run's half row, whatever its commas: its last value may be cut
    kept = [dict(zip(old, line.split(","))) for line in lines if line.count(",") == len(old) - 1]
    was = {new: name for name, new in LEGACY_COLUMNS.items()}  # current name -> legacy name
    rows = [",".join(row.get(was.get(c, c), "nan") for c in COLUMNS) for row in kept]
    write_text_atomic(path, "".join(f"{line}\n" for line in (HEADER, *rows)))
    dropped = len(text.splitlines()) - 1 - len(rows)
    logger.info(
        "memory sampler: %s had the legacy header; rewrote its %d rows under the current one "
        "(nvml_process_used_gb NaN there), dropped %d cut rows",
        path,
        len(rows),
        dropped,
    )


def _open_csv(path: Path) -> TextIO:
    """Open `path` for appending rows: a header if new, a newline if a killed run left half a row,
    a legacy header's file rewritten under the current one first (rows never land under the wrong names)."""
    if _check_header(path):
        _upgrade_legacy(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists() or path.stat().st_size == 0
    torn = False
    if not fresh:
        with path.open("rb") as f:
            f.seek(-1, 2)
            torn = f.read(1) != b"\n"
    f = path.open("a", encoding="utf-8")
    f.write(HEADER + "\n" if fresh else "\n" if torn else "")
    f.flush()
    return f


class MemorySampler:
    """Samples memory on a daemon thread every `interval_s` into the CSV at `path` (appended to if present).

    Use as a context manager around a trial, call `set_step` from the training loop and report
    `summary()`. Sampling never raises into the trial: a failed sample is skipped, logged once.
    A missing GPU or NVML is logged once, with `status`.
    """

    def __init__(self, path: Path | str, device: torch.device, interval_s: float = 5.0, reader: Reader | None = None):
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s}")
        self.path = Path(path)
        self.interval_s = float(interval_s)
        if reader is None:
            self._reader, self.status = default_reader(device)
            # a CPU trial has no GPU to read: expected, said at INFO; a CUDA trial without NVML is a WARNING
            self._degraded = self.status != GPU_STATUS
            self._level = logging.INFO if device.type == "cpu" else logging.WARNING
        else:
            self._reader, self.status, self._degraded, self._level = reader, "injected reader", False, logging.INFO
        _check_header(self.path)  # fail at construction, not later inside the trial
        self.failed_samples = 0
        self._step = 0
        self._lock = threading.Lock()  # guards the file and the statistics
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._file: TextIO | None = None
        self._stopped = False
        self._t0 = math.nan
        self._rows = 0
        self._peak = dict.fromkeys(READINGS, math.nan)
        self._sum = dict.fromkeys(READINGS, 0.0)
        self._count = dict.fromkeys(READINGS, 0)

    def set_step(self, step: int) -> None:
        """The training step that the next rows are recorded against."""
        self._step = int(step)

    def start(self) -> MemorySampler:
        """Open the CSV, take one sample now and sample every `interval_s` on a daemon thread."""
        if self._thread is not None or self._stopped:
            raise RuntimeError(
                f"MemorySampler for {self.path} was already started; a sampler runs once, so make a new one"
            )
        self._file = _open_csv(self.path)
        if self._degraded:
            logger.log(self._level, "memory sampler: %s", self.status)
        self._t0 = time.monotonic()
        self._sample()
        self._thread = threading.Thread(target=self._run, name=f"memory-sampler:{self.path.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a final sample, join the thread and close the CSV; safe to call twice or before `start`."""
        if self._stopped:
            return
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT_S)
        if self._thread is not None and self._thread.is_alive():
            logger.warning("memory sampler: thread still in a read after %.0f s; leaving it (daemon)", _JOIN_TIMEOUT_S)
        elif self._file is not None:
            self._sample()
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> MemorySampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def summary(self) -> dict[str, Any]:
        """Peak and average of the samples so far (NaN, with a `_status`, where never measured), and their count."""
        with self._lock:
            out: dict[str, Any] = {key: self._statistic(reading, stat) for key, (reading, stat) in SUMMARY.items()}
            out["mem/samples"] = float(self._rows)
        reasons = getattr(self._reader, "reasons", {})  # the default reader says why a figure is missing
        for key, (reading, _) in SUMMARY.items():  # a NaN says why, like every other metric
            if math.isnan(out[key]):
                out[f"{key}_status"] = f"never measured: {reasons[reading]}" if reading in reasons else NEVER_MEASURED
        return out

    def _statistic(self, reading: str, stat: str) -> float:
        if stat == "peak":
            return self._peak[reading]
        return self._sum[reading] / self._count[reading] if self._count[reading] else math.nan

    def _run(self) -> None:
        while not self._wake.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            self._record(self._read())
        except Exception:  # noqa: BLE001 - a failed sample must never take the trial down
            self.failed_samples += 1
            if self.failed_samples == 1:
                logger.exception(
                    "memory sampler: a sample for %s failed; failed samples are skipped (logged once)", self.path
                )

    def _read(self) -> tuple[float, float, int, dict[str, float]]:
        unix_time, time_s, step = time.time(), time.monotonic() - self._t0, self._step
        raw = self._reader()
        unknown = set(raw) - set(READINGS)
        if unknown:
            raise ValueError(f"memory reader returned unknown keys {sorted(unknown)}; expected some of {READINGS}")
        return time_s, unix_time, step, {r: float(raw.get(r, math.nan)) for r in READINGS}

    def _record(self, sample: tuple[float, float, int, dict[str, float]]) -> None:
        time_s, unix_time, step, readings = sample
        row = [f"{time_s:.3f}", f"{unix_time:.3f}", str(step), *(_fmt(readings[r]) for r in READINGS)]
        with self._lock:
            if self._file is None:  # stopped while this sample was being read
                return
            self._file.write(",".join(row) + "\n")
            self._file.flush()  # a killed trial keeps its rows
            self._rows += 1
            for r, value in readings.items():
                if math.isfinite(value):
                    self._peak[r] = value if math.isnan(self._peak[r]) else max(self._peak[r], value)
                    self._sum[r] += value
                    self._count[r] += 1
