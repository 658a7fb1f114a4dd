"""Background memory sampler: CSV rows, steps, summary figures, clean stop, degraded and failing readers."""

import csv
import ctypes.util
import logging
import math
import os
import sys
import time
import types

import pandas as pd
import pytest
import torch

from t2s_ray.metrics import sampler as sampler_mod
from t2s_ray.metrics.memory import _nvml_handle, nvml_handle_or_reason
from t2s_ray.metrics.sampler import COLUMNS, HEADER, CudaReader, MemorySampler, default_reader
from tests.helpers import wait_for

CPU = torch.device("cpu")
SLOW = 60.0  # an interval no test reaches: only the start and the final sample are taken
PATIENCE = 10.0  # seconds a test waits for the sampler thread on a loaded machine before failing


def rows(path):
    with path.open() as f:
        return list(csv.DictReader(f))


class FakeReader:
    """Returns the given readings in turn, then repeats the last one; remembers what it returned."""

    def __init__(self, *readings):
        self.readings, self.returned = list(readings), []

    def __call__(self):
        reading = self.readings[min(len(self.returned), len(self.readings) - 1)]
        self.returned.append(reading)
        return dict(reading)


def test_rows_and_summary_from_a_fake_reader(tmp_path):
    path = tmp_path / "gpu_memory.csv"
    reader = FakeReader(
        {
            "gpu_allocated_gb": 1.0,
            "gpu_reserved_gb": 2.0,
            "nvml_process_used_gb": 2.5,
            "nvml_device_used_gb": 3.0,
            "nvml_device_total_gb": 80.0,
            "nvml_device_util_pct": 50.0,
            "cpu_rss_gb": 4.0,
        },
        {
            "gpu_allocated_gb": 3.0,
            "gpu_reserved_gb": 4.0,
            "nvml_process_used_gb": 4.5,
            "nvml_device_used_gb": 5.0,
            "nvml_device_total_gb": 80.0,
            "nvml_device_util_pct": 100.0,
            "cpu_rss_gb": 2.0,
        },
    )
    sampler = MemorySampler(path, CPU, interval_s=SLOW, reader=reader)
    sampler.set_step(3)
    with sampler:
        sampler.set_step(11)
    assert path.read_text().splitlines()[0] == HEADER
    table = rows(path)
    assert [int(r["step"]) for r in table] == [3, 11]
    assert [float(r["gpu_allocated_gb"]) for r in table] == [1.0, 3.0]
    assert float(table[1]["nvml_device_util_pct"]) == 100.0 and float(table[0]["cpu_rss_gb"]) == 4.0
    assert [float(r["nvml_process_used_gb"]) for r in table] == [2.5, 4.5]
    assert 0.0 <= float(table[0]["time_s"]) <= float(table[1]["time_s"]) < 5.0
    assert abs(float(table[0]["unix_time"]) - time.time()) < 60
    assert sampler.summary() == {
        "mem/sampled_gpu_allocated_peak_gb": 3.0,
        "mem/sampled_gpu_allocated_avg_gb": 2.0,
        "mem/sampled_nvml_process_used_peak_gb": 4.5,
        "mem/sampled_nvml_device_used_peak_gb": 5.0,
        "mem/sampled_nvml_device_util_avg": 75.0,
        "mem/sampled_cpu_rss_peak_gb": 4.0,
        "mem/sampled_cpu_rss_avg_gb": 3.0,
        "mem/samples": 2.0,
    }


def test_thread_samples_every_interval_records_steps_and_stops_promptly(tmp_path):
    path = tmp_path / "gpu_memory.csv"
    reader = FakeReader(*({"gpu_allocated_gb": 0.5 * i, "cpu_rss_gb": 1.0} for i in range(1, 200)))
    sampler = MemorySampler(path, CPU, interval_s=0.05, reader=reader).start()
    for step in range(1, 6):
        sampler.set_step(step)
        seen = len(reader.returned)
        wait_for(lambda n=seen: len(reader.returned) > n, PATIENCE, f"a sample at step {step}")
    live = sampler.summary()  # callable while the thread runs
    assert live["mem/samples"] >= 2
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1.0
    sampler.stop()  # idempotent
    size = path.stat().st_size
    time.sleep(0.15)
    assert path.stat().st_size == size, "no rows after stop"
    table = rows(path)
    steps = [int(r["step"]) for r in table]
    assert len(table) >= 3 and steps == sorted(steps) and steps[-1] == 5
    assert [float(r["gpu_allocated_gb"]) for r in table] == [r["gpu_allocated_gb"] for r in reader.returned]
    assert all(math.isnan(float(r["nvml_device_used_gb"])) for r in table)  # not returned: NaN
    allocated = [r["gpu_allocated_gb"] for r in reader.returned]
    summary = sampler.summary()
    assert summary["mem/samples"] == len(table)
    assert summary["mem/sampled_gpu_allocated_peak_gb"] == max(allocated)
    assert summary["mem/sampled_gpu_allocated_avg_gb"] == pytest.approx(sum(allocated) / len(allocated), rel=1e-12)
    assert math.isnan(summary["mem/sampled_nvml_device_used_peak_gb"])
    assert math.isnan(summary["mem/sampled_nvml_device_util_avg"])
    assert summary["mem/sampled_nvml_process_used_peak_gb_status"] == sampler_mod.NEVER_MEASURED


def test_stop_does_not_wait_for_the_interval(tmp_path):
    sampler = MemorySampler(tmp_path / "m.csv", CPU, interval_s=SLOW, reader=FakeReader({"cpu_rss_gb": 1.0}))
    sampler.start()
    started = time.monotonic()
    sampler.stop()
    assert time.monotonic() - started < 1.0
    assert len(rows(tmp_path / "m.csv")) == 2


def test_stop_without_start_is_safe_and_writes_nothing(tmp_path):
    sampler = MemorySampler(tmp_path / "m.csv", CPU, reader=FakeReader({"cpu_rss_gb": 1.0}))
    sampler.stop()
    sampler.stop()
    assert not (tmp_path / "m.csv").exists()
    assert sampler.summary()["mem/samples"] == 0.0
    assert math.isnan(sampler.summary()["mem/sampled_cpu_rss_peak_gb"])
    with pytest.raises(RuntimeError, match="runs once"):
        sampler.start()


def test_restart_appends_without_a_second_header(tmp_path):
    path = tmp_path / "gpu_memory.csv"
    for step in (0, 100):
        sampler = MemorySampler(path, CPU, interval_s=SLOW, reader=FakeReader({"cpu_rss_gb": 1.0}))
        sampler.set_step(step)
        sampler.start().stop()
    lines = path.read_text().splitlines()
    assert lines.count(HEADER) == 1
    assert [int(r["step"]) for r in rows(path)] == [0, 0, 100, 100]


def test_append_after_a_torn_last_row_starts_a_fresh_line(tmp_path):
    path = tmp_path / "gpu_memory.csv"
    path.write_text(HEADER + "\n1.0,2.0,3,0.1")  # killed mid-row
    MemorySampler(path, CPU, interval_s=SLOW, reader=FakeReader({"cpu_rss_gb": 1.0})).start().stop()
    lines = path.read_text().splitlines()
    assert lines[1] == "1.0,2.0,3,0.1"
    assert all(len(line.split(",")) == len(COLUMNS) for line in lines[2:]) and len(lines) == 4


def test_foreign_csv_is_refused_with_the_path(tmp_path):
    path = tmp_path / "gpu_memory.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="gpu_memory.csv.*another path"):
        MemorySampler(path, CPU, reader=FakeReader({}))


def test_cpu_default_reader_records_rss_and_says_so_once(tmp_path, caplog):
    path = tmp_path / "gpu_memory.csv"
    with caplog.at_level(logging.INFO, logger="t2s_ray.metrics.sampler"):
        with MemorySampler(path, CPU, interval_s=0.05) as sampler:
            wait_for(lambda: sampler.summary()["mem/samples"] >= 2, PATIENCE, "two samples")
    assert sampler.status == "cpu only: no CUDA device (CPU memory recorded)"
    # said once, at INFO: a CPU trial has no GPU to read (a sweep's output stays free of it)
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [(logging.INFO, f"memory sampler: {sampler.status}")]
    table = rows(path)
    assert len(table) >= 3
    for r in table:
        assert float(r["cpu_rss_gb"]) > 0
        assert all(math.isnan(float(r[c])) for c in sampler_mod.READINGS if c != "cpu_rss_gb")
    summary = sampler.summary()
    assert summary["mem/sampled_cpu_rss_peak_gb"] > 0
    assert math.isnan(summary["mem/sampled_gpu_allocated_peak_gb"])


def test_a_failing_reader_never_reaches_the_trial_and_is_logged_once(tmp_path, caplog):
    def broken():
        raise RuntimeError("driver went away")

    path = tmp_path / "gpu_memory.csv"
    with caplog.at_level(logging.WARNING, logger="t2s_ray.metrics.sampler"):
        with MemorySampler(path, CPU, interval_s=0.05, reader=broken) as sampler:
            wait_for(lambda: sampler.failed_samples >= 3, PATIENCE, "three failed samples")
    assert sampler.failed_samples >= 3
    assert len(caplog.records) == 1 and "driver went away" in caplog.text
    assert path.read_text() == HEADER + "\n"
    assert sampler.summary()["mem/samples"] == 0.0


def test_sampling_resumes_after_a_transient_failure(tmp_path, caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 2:
            raise OSError("transient")
        return {"cpu_rss_gb": 1.0, "surprise": 1.0} if len(calls) == 3 else {"cpu_rss_gb": 1.0}

    path = tmp_path / "m.csv"
    with caplog.at_level(logging.WARNING, logger="t2s_ray.metrics.sampler"):
        with MemorySampler(path, CPU, interval_s=0.05, reader=flaky) as sampler:
            wait_for(lambda: len(calls) >= 4, PATIENCE, "a good sample after the two bad ones")
    assert sampler.failed_samples == 2  # the raise and the unknown key
    assert len(caplog.records) == 1
    assert len(rows(path)) == len(calls) - 2


OURS = 2**30 * 1.5  # bytes NVML lists for this process in the fakes below


def _fake_pynvml(util_error: bool = False, processes=None, process_error: bool = False):
    """A pynvml stand-in for the handle "handle": 20 of 80 GiB used on the device, `processes` as (pid, bytes)."""
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def checked(handle):
        assert handle in ("handle", "mig-handle"), f"the reader passed {handle!r}, not its own handle"

    def memory(handle):
        checked(handle)
        return types.SimpleNamespace(used=20 * 2**30, total=80 * 2**30, free=60 * 2**30)

    def util(handle):
        checked(handle)
        if util_error:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=42, memory=7)

    def running(handle):
        checked(handle)
        if process_error:
            raise NVMLError("Insufficient Permissions")
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in (processes or [])]

    mod.NVMLError = NVMLError
    mod.nvmlDeviceGetMemoryInfo = memory
    mod.nvmlDeviceGetUtilizationRates = util
    mod.nvmlDeviceGetComputeRunningProcesses = running
    return mod


@pytest.fixture
def no_allocator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 0)


def test_cuda_reader_converts_allocator_and_nvml_figures(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 2**30 if index == 1 else 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 2 * 2**30 if index == 1 else 0)
    others = [(os.getpid() + 1, 10 * 2**30), (os.getpid() + 2, 7 * 2**30)]  # other trials packed on the GPU
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(processes=[others[0], (os.getpid(), OURS), others[1]]))
    reader = CudaReader(1, nvml_handle="handle")
    reading = reader()
    assert reading["gpu_allocated_gb"] == 1.0 and reading["gpu_reserved_gb"] == 2.0
    assert reading["nvml_process_used_gb"] == 1.5  # ours only: the other pids' 17 GiB are not counted
    assert reading["nvml_device_used_gb"] == 20.0 and reading["nvml_device_total_gb"] == 80.0
    assert reading["nvml_device_util_pct"] == 42.0
    assert reading["cpu_rss_gb"] > 0 and reader.reasons == {}
    assert set(CudaReader(1)()) == {"gpu_allocated_gb", "gpu_reserved_gb", "cpu_rss_gb"}  # no NVML handle


def test_cuda_reader_unsupported_nvml_query_is_nan_and_logged_once(monkeypatch, caplog, no_allocator):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(util_error=True, processes=[(os.getpid(), OURS)]))
    reader = CudaReader(0, nvml_handle="mig-handle")
    with caplog.at_level(logging.WARNING, logger="t2s_ray.metrics.sampler"):
        readings = [reader() for _ in range(3)]
    assert all("nvml_device_util_pct" not in r and r["nvml_device_used_gb"] == 20.0 for r in readings)
    assert all(r["nvml_process_used_gb"] == 1.5 for r in readings)
    assert len(caplog.records) == 1 and "utilisation" in caplog.text
    assert reader.reasons == {"nvml_device_util_pct": "NVML utilisation query failed (Not Supported)"}


@pytest.mark.parametrize(
    "processes, process_error, why",
    [
        ([(1, 10 * 2**30), (2, 7 * 2**30)], False, "is not among the 2 compute processes NVML lists (in a container"),
        ([], False, "is not among the 0 compute processes"),
        ([(1, 10 * 2**30), ("ours", None)], False, "the driver does not report per-process memory"),
        (None, True, "NVML process query failed (Insufficient Permissions)"),
    ],
    ids=["pid-not-listed", "no-processes", "used-memory-none", "query-fails"],
)
def test_process_memory_nvml_cannot_attribute_is_nan_with_a_reason_said_once(
    monkeypatch, caplog, no_allocator, processes, process_error, why
):
    listed = [(os.getpid() if pid == "ours" else pid, used) for pid, used in (processes or [])]
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(processes=listed, process_error=process_error))
    reader = CudaReader(0, nvml_handle="handle")
    with caplog.at_level(logging.WARNING, logger="t2s_ray.metrics.sampler"):
        readings = [reader() for _ in range(3)]
    assert all("nvml_process_used_gb" not in r for r in readings)  # left out: NaN, never another pid's figure
    assert all(r["nvml_device_used_gb"] == 20.0 for r in readings)  # the device figures still come
    assert len(caplog.records) == 1 and why in caplog.text and "nvml_process_used_gb" in caplog.text
    assert why in reader.reasons["nvml_process_used_gb"] and set(reader.reasons) == {"nvml_process_used_gb"}


def test_csv_names_this_process_and_the_device_apart(tmp_path, monkeypatch, no_allocator):
    columns = HEADER.split(",")
    at = columns.index("nvml_process_used_gb")
    assert columns[at + 1] == "nvml_device_used_gb"  # side by side
    assert {"nvml_device_total_gb", "nvml_device_util_pct"} <= set(columns)
    assert not set(columns) & set(sampler_mod.LEGACY_COLUMNS)  # the ambiguous names are gone
    monkeypatch.setitem(
        sys.modules, "pynvml", _fake_pynvml(processes=[(os.getpid() + 1, 9 * 2**30), (os.getpid(), OURS)])
    )
    path = tmp_path / "gpu_memory.csv"
    with MemorySampler(path, torch.device("cuda", 0), interval_s=SLOW, reader=CudaReader(0, "handle")) as sampler:
        pass
    assert path.read_text().splitlines()[0] == HEADER
    table = rows(path)
    assert [(float(r["nvml_process_used_gb"]), float(r["nvml_device_used_gb"])) for r in table] == [(1.5, 20.0)] * 2
    summary = sampler.summary()
    assert summary["mem/sampled_nvml_process_used_peak_gb"] == 1.5
    assert summary["mem/sampled_nvml_device_used_peak_gb"] == 20.0


def test_summary_says_why_the_process_figure_is_missing(tmp_path, monkeypatch, no_allocator):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(processes=[(os.getpid() + 1, 9 * 2**30)]))
    path = tmp_path / "gpu_memory.csv"
    with MemorySampler(path, torch.device("cuda", 0), interval_s=SLOW, reader=CudaReader(0, "handle")) as sampler:
        pass
    assert all(math.isnan(float(r["nvml_process_used_gb"])) for r in rows(path))
    summary = sampler.summary()
    assert math.isnan(summary["mem/sampled_nvml_process_used_peak_gb"])
    status = summary["mem/sampled_nvml_process_used_peak_gb_status"]
    assert status.startswith(f"never measured: pid {os.getpid()} is not among the 1 compute processes")
    assert summary["mem/sampled_nvml_device_used_peak_gb"] == 20.0
    assert "mem/sampled_nvml_device_used_peak_gb_status" not in summary


def test_resumed_trial_with_a_legacy_csv_is_rewritten_under_the_current_header(tmp_path, caplog):
    path = tmp_path / "gpu_memory.csv"
    legacy = [
        sampler_mod.LEGACY_HEADER,
        "0.000,1700000000.000,0,1,2,30,80,55,4",
        "5.000,1700000005.000,7,1.5,2,31,80,60",  # cut by an earlier kill, a full row appended after it
        "10.000,1700000010.000,9,1.5,2,32,80,65,4.5",
        "15.000,1700000015.000,11,1.5,2,33,80,65,4.",
    ]  # the last kill cut this one in its last value
    path.write_text("\n".join(legacy))
    with caplog.at_level(logging.INFO, logger="t2s_ray.metrics.sampler"):
        sampler = MemorySampler(path, CPU, interval_s=SLOW, reader=FakeReader({"cpu_rss_gb": 1.0}))
        sampler.set_step(12)
        sampler.start().stop()
    assert "rewrote its 2 rows" in caplog.text and "dropped 2 cut rows" in caplog.text
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and lines.count(HEADER) == 1
    assert all(len(line.split(",")) == len(COLUMNS) for line in lines[1:])
    table = rows(path)
    assert [int(r["step"]) for r in table] == [0, 9, 12, 12]
    old = table[:2]
    assert [float(r["nvml_device_used_gb"]) for r in old] == [30.0, 32.0]  # the old device-wide column
    assert [float(r["nvml_device_util_pct"]) for r in old] == [55.0, 65.0]
    assert [float(r["cpu_rss_gb"]) for r in old] == [4.0, 4.5]
    assert all(math.isnan(float(r["nvml_process_used_gb"])) for r in old)  # not recorded then
    assert float(table[-1]["cpu_rss_gb"]) == 1.0
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 4


def test_default_reader_status_on_cuda_without_nvml(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    monkeypatch.setattr(sampler_mod, "nvml_handle_or_reason", lambda index: (None, "driver library missing"))
    reader, status = default_reader(torch.device("cuda"))
    assert status == "no NVML (driver library missing): allocator + CPU memory recorded"
    assert isinstance(reader, CudaReader) and reader.index == 2 and reader.nvml_handle is None
    monkeypatch.setattr(sampler_mod, "nvml_handle_or_reason", lambda index: ("handle", ""))
    reader, status = default_reader(torch.device("cuda", 0))
    assert status == "gpu: torch allocator + NVML" and reader.index == 0 and reader.nvml_handle == "handle"


def test_default_reader_status_when_cuda_is_requested_but_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reader, status = default_reader(torch.device("cuda"))
    assert reader is sampler_mod.cpu_reader and status.startswith("cpu only:")
    assert set(reader()) == {"cpu_rss_gb"} and reader()["cpu_rss_gb"] > 0


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None, reason="NVML driver library present")
def test_nvml_reason_names_the_missing_driver_library():
    assert nvml_handle_or_reason(0) == (None, "driver library missing")
    assert _nvml_handle(0) is None
