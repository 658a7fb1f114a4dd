"""Background memory sampler: CSV rows, steps, summary figures, clean stop, degraded and failing readers."""

import csv
import ctypes.util
import logging
import math
import sys
import time
import types

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
        {"gpu_allocated_gb": 1.0, "gpu_reserved_gb": 2.0, "gpu_used_gb": 3.0, "gpu_total_gb": 80.0,
         "gpu_util": 50.0, "cpu_rss_gb": 4.0},
        {"gpu_allocated_gb": 3.0, "gpu_reserved_gb": 4.0, "gpu_used_gb": 5.0, "gpu_total_gb": 80.0,
         "gpu_util": 100.0, "cpu_rss_gb": 2.0},
    )
    sampler = MemorySampler(path, CPU, interval_s=SLOW, reader=reader)
    sampler.set_step(3)
    with sampler:
        sampler.set_step(11)
    assert path.read_text().splitlines()[0] == HEADER
    table = rows(path)
    assert [int(r["step"]) for r in table] == [3, 11]
    assert [float(r["gpu_allocated_gb"]) for r in table] == [1.0, 3.0]
    assert float(table[1]["gpu_util"]) == 100.0 and float(table[0]["cpu_rss_gb"]) == 4.0
    assert 0.0 <= float(table[0]["time_s"]) <= float(table[1]["time_s"]) < 5.0
    assert abs(float(table[0]["unix_time"]) - time.time()) < 60
    assert sampler.summary() == {
        "mem/sampled_gpu_allocated_peak_gb": 3.0, "mem/sampled_gpu_allocated_avg_gb": 2.0,
        "mem/sampled_gpu_used_peak_gb": 5.0, "mem/sampled_gpu_util_avg": 75.0,
        "mem/sampled_cpu_rss_peak_gb": 4.0, "mem/sampled_cpu_rss_avg_gb": 3.0, "mem/samples": 2.0,
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
    assert all(math.isnan(float(r["gpu_used_gb"])) for r in table)  # not returned: NaN
    allocated = [r["gpu_allocated_gb"] for r in reader.returned]
    summary = sampler.summary()
    assert summary["mem/samples"] == len(table)
    assert summary["mem/sampled_gpu_allocated_peak_gb"] == max(allocated)
    assert summary["mem/sampled_gpu_allocated_avg_gb"] == pytest.approx(sum(allocated) / len(allocated), rel=1e-12)
    assert math.isnan(summary["mem/sampled_gpu_used_peak_gb"])
    assert math.isnan(summary["mem/sampled_gpu_util_avg"])


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
        assert all(math.isnan(float(r[c])) for c in sampler_mod.READINGS if c.startswith("gpu_"))
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


def _fake_pynvml(util_error: bool):
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    mod.NVMLError = NVMLError
    mod.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=0)

    def util(handle):
        if util_error:
            raise NVMLError("Not Supported")
        return types.SimpleNamespace(gpu=42, memory=7)

    mod.nvmlDeviceGetUtilizationRates = util
    return mod


def test_cuda_reader_converts_allocator_and_nvml_figures(monkeypatch):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 2**30 if index == 1 else 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 2 * 2**30 if index == 1 else 0)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(util_error=False))
    reading = CudaReader(1, nvml_handle="handle")()
    assert reading["gpu_allocated_gb"] == 1.0 and reading["gpu_reserved_gb"] == 2.0
    assert reading["gpu_used_gb"] == 3.0 and reading["gpu_total_gb"] == 80.0 and reading["gpu_util"] == 42.0
    assert reading["cpu_rss_gb"] > 0
    assert set(CudaReader(1)()) == {"gpu_allocated_gb", "gpu_reserved_gb", "cpu_rss_gb"}  # no NVML handle


def test_cuda_reader_unsupported_nvml_query_is_nan_and_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda index: 0)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda index: 0)
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(util_error=True))
    reader = CudaReader(0, nvml_handle="mig-handle")
    with caplog.at_level(logging.WARNING, logger="t2s_ray.metrics.sampler"):
        readings = [reader() for _ in range(3)]
    assert all("gpu_util" not in r and r["gpu_used_gb"] == 3.0 for r in readings)
    assert len(caplog.records) == 1 and "utilisation" in caplog.text


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
