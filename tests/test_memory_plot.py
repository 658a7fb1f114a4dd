"""The memory-over-time figure: whose memory each panel shows, this trial's process memory when
recorded, and older gpu_memory.csv files (device-wide NVML columns under their former names)."""

import math

import pandas as pd
import pytest

from t2s_ray.analysis.html import _memory_frame
from t2s_ray.metrics.sampler import HEADER, LEGACY_HEADER
from t2s_ray.plots import _pyplot, memory_figure

NAN = math.nan


def memory(process: float) -> pd.DataFrame:
    """Two trials (two ablations) sharing one GPU: 5 GiB each in-process, 12 GiB used on the device."""
    rows = [
        {
            "ablation": a,
            "seed": 0,
            "time_s": t,
            "gpu_allocated_gb": 2.0,
            "nvml_process_used_gb": process,
            "nvml_device_used_gb": 12.0,
            "cpu_rss_gb": 1.0,
        }
        for a in ("baseline", "no_ema")
        for t in (0, 5, 10)
    ]
    return pd.DataFrame(rows)


def panels(fig) -> dict[str, object]:
    return {ax.get_title(): ax for ax in fig.axes if ax.axison}


@pytest.fixture
def close_figures():
    yield
    _pyplot().close("all")


def test_process_memory_gets_its_own_panel_apart_from_the_whole_device(close_figures):
    shown = panels(memory_figure(memory(process=5.0)))
    titles = list(shown)
    assert len(titles) == 4
    (process,) = [t for t in titles if "its process" in t]
    (device,) = [t for t in titles if t.startswith("whole GPU")]
    assert process.startswith("this trial") and "NVML" in process
    assert "other trials sharing it included" in device
    process_lines = shown[process].get_lines()
    assert len(process_lines) == 2 and all(list(line.get_ydata()) == [5.0] * 3 for line in process_lines)
    assert all(list(line.get_ydata()) == [12.0] * 3 for line in shown[device].get_lines())
    assert all(ax.get_ylabel() == "GiB" for ax in shown.values())
    legend = next(ax.get_legend() for ax in shown.values() if ax.get_legend() is not None)
    assert [t.get_text() for t in legend.get_texts()] == ["baseline", "no_ema"]
    assert legend.get_title().get_text() == "ablation (one line per seed)"


def test_no_process_panel_when_it_was_never_recorded(close_figures):
    titles = list(panels(memory_figure(memory(process=NAN))))
    assert len(titles) == 3 and not any("its process" in t for t in titles)
    assert any(t.startswith("whole GPU") for t in titles)


def test_old_csvs_plot_their_device_column_under_the_current_name(tmp_path, close_figures):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "gpu_memory.csv").write_text(f"{LEGACY_HEADER}\n0,1e9,0,1,2,9.5,80,50,1\n5,1e9,5,1,2,9.75,80,50,1\n")
    (new / "gpu_memory.csv").write_text(f"{HEADER}\n0,1e9,0,1,2,4,11,80,50,1\n5,1e9,5,1,2,4.5,11.5,80,50,1\n")
    selected = pd.DataFrame(
        [
            {"trial_dir": str(old), "ablation": "baseline", "seed": 0},
            {"trial_dir": str(new), "ablation": "no_ema", "seed": 0},
        ]
    )
    frame = _memory_frame(selected)
    assert "gpu_used_gb" not in frame and "gpu_util" not in frame
    assert frame["nvml_device_used_gb"].tolist() == [9.5, 9.75, 11.0, 11.5]
    assert frame["nvml_device_util_pct"].tolist() == [50.0] * 4
    assert frame["nvml_process_used_gb"].isna().tolist() == [True, True, False, False]
    shown = panels(memory_figure(frame))
    (device,) = [ax for t, ax in shown.items() if t.startswith("whole GPU")]
    assert [list(line.get_ydata()) for line in device.get_lines()] == [[9.5, 9.75], [11.0, 11.5]]
