"""report.html: contents, self-containment, and a real headless Chromium rendering it."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import t2s_ray.analysis as an
from t2s_ray.outputs import REPORT_HTML, SAMPLES_NPZ
from tests.helpers import final_row, make_trial, train_row

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
T, H, W = 6, 16, 16


def moving_square(shift: int) -> np.ndarray:
    """A uint8 (T, H, W, 3) clip of a square crossing the frame: every frame differs."""
    clip = np.full((T, H, W, 3), 230, np.uint8)
    for t in range(T):
        x = (2 * t + shift) % (W - 4)
        clip[t, 5:10, x : x + 4] = (200, 40, 40)
    return clip


def write_samples(folder: Path, shift: int, texts: list[str]) -> None:
    np.savez_compressed(
        folder / SAMPLES_NPZ,
        fake=np.stack([moving_square(shift + k) for k in range(len(texts))]),
        real=np.stack([moving_square(k) for k in range(len(texts))]),
        texts=np.array(texts),
    )


def write_memory(folder: Path, rss: float) -> None:
    rows = ["time_s,unix_time,step,gpu_allocated_gb,gpu_reserved_gb,gpu_used_gb,gpu_total_gb,gpu_util,cpu_rss_gb"]
    rows += [f"{t},{1e9 + t},{t},,,,,,{rss + 0.01 * t}" for t in range(0, 30, 5)]
    (folder / "gpu_memory.csv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def finished_exp(tmp_path):
    """Three ablations x 3 seeds, finished, with samples and memory CSVs; plus one errored trial."""
    exp = tmp_path / "exp"
    exp.mkdir()
    texts = ["HELLO WORLD", "A person signs THANKS."]
    fvd = {"baseline": [10.0, 11.0, 12.0], "no_ema": [14.0, 15.5, 16.0], "text_finetuned": [10.5, 10.8, 12.2]}
    k = 0
    for ablation, values in fvd.items():
        for seed, value in enumerate(values):
            node = {
                "node/torch": "2.x-test",
                "node/ray": "2.60-test",
                "node/python": "3.11",
                "node/device_name": "TestCPU",
                "node/hostname": "host-a",
                "node/started_at": 1.7e9,
            }
            rows = [train_row(s, 1.7e9 + s, loss=2.0 / s) | {"lr": 1e-3 * (1 - s / 40)} | node for s in (5, 10, 15)]
            rows.append(final_row(1.7e9 + 20, fvd=value, lpips=0.3) | node)
            d = make_trial(exp, f"{ablation}_seed{seed}_{k:05d}", ablation, seed, rows, trial_id=f"t_{k:05d}")
            write_memory(d, 1.0 + seed)
            if seed == 0:
                write_samples(d, shift=3 * k, texts=texts)
            k += 1
    make_trial(
        exp,
        f"dit_s_seed0_{k:05d}",
        "dit_s",
        0,
        [train_row(5, 1.7e9)],
        error="RuntimeError: CUDA out of memory",
        trial_id=f"t_{k:05d}",
    )
    return exp


class _Sources(HTMLParser):
    """Every src/href attribute of a page, and its tags."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v or "") for k, v in attrs if k in ("src", "href", "data", "poster", "srcset")]


def parse(html: str) -> _Sources:
    p = _Sources()
    p.feed(html)
    return p


def gif_frames(uri: str) -> int:
    return Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).n_frames


def test_report_html_holds_tables_samples_plots_and_configs(finished_exp):
    paths = an.write_outputs(finished_exp)
    html = paths["html"].read_text()
    assert paths["html"] == finished_exp / REPORT_HTML
    page = parse(html)
    # the header: environment from the trials, counts, the errored trial and its reason
    for text in (
        "torch 2.x-test",
        "Ray 2.60-test",
        "TestCPU",
        "10 (ablation, seed) pairs: 9 finished, 1 errored",
        "RuntimeError: CUDA out of memory",
        "Config hash",
    ):
        assert text in html, text
    # the quality table with the paired verdict and the cost table
    assert '<table class="quality">' in html and '<table class="cost">' in html
    assert "FVD-SynthSign ↓" in html and "Δ vs baseline" in html
    # samples: the real clip first, then one animated column per ablation, the caption above
    sample_imgs = [v for tag, k, v in page.refs if tag == "img" and v.startswith("data:image/gif")]
    assert len(sample_imgs) == 2 * (1 + 3)
    assert all(gif_frames(uri) == T for uri in sample_imgs)
    assert re.search(r"<th>real</th>\s*<th>baseline</th>\s*<th>no_ema</th>\s*<th>text_finetuned</th>", html)
    assert "“HELLO WORLD”" in html and 'alt="real clip: HELLO WORLD"' in html
    # plots: loss (raw + smoothed), LR, memory, metric bars
    plots = [v for tag, k, v in page.refs if tag == "img" and v.startswith("data:image/png")]
    assert len(plots) == 4
    for title in ("Training loss", "Learning rate", "Memory over time", "Headline metrics"):
        assert f"<b>{title}</b>" in html
    # per ablation: description, the keys that differ from the baseline, relative links to its trials
    assert "<code>ema.enabled</code>" in html
    assert '<a href="no_ema_seed0_00003">seed 0</a>' in html


def test_report_html_is_self_contained(finished_exp):
    html = an.write_outputs(finished_exp)["html"].read_text()
    page = parse(html)
    assert "script" not in page.tags and "link" not in page.tags and "iframe" not in page.tags
    for tag, attr, value in page.refs:
        if tag == "a":  # navigation to the trial folders, relative: never loaded with the page
            assert "://" not in value and not value.startswith("/"), value
        else:
            assert value.startswith("data:"), (tag, attr, value[:60])
    assert not re.search(r"url\(\s*['\"]?(?!data:)", html)  # no CSS fetches
    assert "default-src 'none'" in html  # and a CSP that would block any that slipped in


def test_report_html_escapes_user_text(finished_exp):
    folder = next(finished_exp.glob("baseline_seed0_*"))
    write_samples(folder, 0, ["<script>alert(1)</script>", "B"])
    for other in finished_exp.glob("*_seed0_*"):
        if other != folder and (other / SAMPLES_NPZ).exists():
            write_samples(other, 1, ["<script>alert(1)</script>", "B"])
    html = an.write_outputs(finished_exp)["html"].read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_report_html_for_trials_without_samples_npz(finished_exp):
    """Trials written before samples.npz existed: their samples.gif is shown whole, not dropped silently."""
    for npz in finished_exp.glob(f"*/{SAMPLES_NPZ}"):
        folder = npz.parent
        npz.unlink()
        Image.new("RGB", (8, 8)).save(folder / "samples.gif")
    html = an.write_outputs(finished_exp)["html"].read_text()
    assert html.count("no samples.npz in this trial") == 3


# --------------------------------------------------------------------------- a real browser


def _chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        f"--user-data-dir={cwd / 'profile'}",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def page_requests(net_log: Path) -> list[str]:
    """URLs of the network requests a page made (Chromium's own background requests left out: they are
    not keyed to the page's file:// origin)."""
    log = json.loads(net_log.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start
        and "url" in e.get("params", {})
        and str(e["params"].get("network_isolation_key", "")).startswith("file://")
        and not e["params"]["url"].startswith(("file:", "data:"))
    ]


@pytest.mark.slow
@pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it"
)
def test_report_renders_in_headless_chromium(finished_exp, tmp_path):
    report = an.write_outputs(finished_exp)["html"]
    shot, net = tmp_path / "shot.png", tmp_path / "net.json"
    run = _chromium(
        "--window-size=1280,2400", f"--screenshot={shot}", f"--log-net-log={net}", report.as_uri(), cwd=tmp_path
    )
    assert shot.is_file(), run.stderr[-2000:]
    # not blank: a white page has one colour; this one has text, tables, plots and coloured clips
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1280)
    assert (pixels.min(axis=2) < 200).mean() > 0.02 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    assert page_requests(net) == []
    # the DOM as Chromium parsed it: tables and animated samples survived the parse
    dom = _chromium("--dump-dom", report.as_uri(), cwd=tmp_path).stdout
    page = parse(dom)
    assert page.tags.count("table") >= 4  # quality, cost, samples, config diffs
    gifs = [v for tag, k, v in page.refs if tag == "img" and v.startswith("data:image/gif")]
    assert gifs and gif_frames(gifs[0]) == T


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_network_check_sees_a_page_that_fetches(tmp_path):
    """The check above can fail: a page with a remote image is caught."""
    page = tmp_path / "fetches.html"
    page.write_text('<html><body><img src="http://127.0.0.1:9/x.png"><p>x</p></body></html>')
    net = tmp_path / "net.json"
    _chromium(f"--log-net-log={net}", "--dump-dom", page.as_uri(), cwd=tmp_path)
    assert page_requests(net) == ["http://127.0.0.1:9/x.png"]
