"""Benchmark real-corpus loading: decode + preprocess into the cache (cold) and cached reads (warm).

Builds a fixture corpus in a temp dir (How2Sign-style H.264 mp4 at 320x240, PHOENIX-style
210x260 PNG folders; ~48 frames per clip), then for each format and decode-thread count times the
first build (clips/s) and a shuffled pass of get_batch over the cache (clips/s).

    python scripts/bench_decode.py --clips 40 --out bench_decode.json
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

import av
import PIL
from benchkit import time_cached_dataset, write_results

from t2s_ray.data import build_dataset
from t2s_ray.data.corpus import CACHE_VERSION
from t2s_ray.t2s.config import DataConfig


def load_fixtures():
    """`tests/data/fixtures.py` of this checkout, by path (the tests are not an installed package)."""
    path = Path(__file__).resolve().parents[1] / "tests" / "data" / "fixtures.py"
    spec = importlib.util.spec_from_file_location("t2s_fixtures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_corpora(fx, root: Path, clips: int, frames: int) -> dict[str, str]:
    """Write both fixture corpora (all clips in train); returns `{format: spec}`."""
    h2s = fx.make_how2sign(root / "how2sign", {"train": clips}, frames=frames, width=320, height=240)
    fx.make_phoenix(root / "phoenix", {"train": clips}, frames=frames)
    return {"how2sign": f"how2sign:{h2s}", "phoenix": f"phoenix:{root / 'phoenix'}"}


def bench(spec: str, shape: tuple[int, int, int], workers: int, cache: Path, batch_size: int) -> dict:
    """Cold decode into a fresh cache, warm open, and 20 shuffled get_batch passes."""
    frames, height, width = shape
    cfg = DataConfig(spec=spec, frames=frames, height=height, width=width, cache_dir=str(cache))
    os.environ["T2S_RAY_DECODE_WORKERS"] = str(workers)
    return {
        "format": spec.split(":")[0],
        "workers": workers,
        "frames": frames,
        "height": height,
        "width": width,
        **time_cached_dataset(lambda: build_dataset(cfg, "train"), batch_size, passes=20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="clips per fixture corpus")
    parser.add_argument("--source-frames", type=int, default=48, help="frames per fixture clip")
    parser.add_argument("--shape", default="16x64x64", help="T x H x W of the cached clips")
    parser.add_argument("--workers", default="1,2", help="comma-separated decode-thread counts to time")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per get_batch call (warm pass)")
    parser.add_argument("--out", default="bench_decode.json", help="where to write the JSON results")
    args = parser.parse_args()
    shape = tuple(int(x) for x in args.shape.lower().split("x"))
    if len(shape) != 3:
        parser.error(f"--shape must be TxHxW, got {args.shape!r}")
    fx = load_fixtures()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp:
        t0 = time.perf_counter()
        specs = build_corpora(fx, Path(tmp), args.clips, args.source_frames)
        fixture_s = time.perf_counter() - t0
        for fmt, spec in specs.items():
            for k, w in enumerate(int(x) for x in args.workers.split(",")):
                rows.append(bench(spec, shape, w, Path(tmp) / f"cache-{fmt}-{k}", args.batch_size))  # cold each time
    print(
        f"{'format':<9} {'workers':>7} {'clips':>6} {'T x H x W':<10} {'cold clips/s':>13} "
        f"{'warm open ms':>13} {'warm clips/s':>13} {'cache MB':>9}"
    )
    for r in rows:
        print(
            f"{r['format']:<9} {r['workers']:>7} {r['clips']:>6} {r['frames']}x{r['height']}x{r['width']:<4} "
            f"{r['cold_clips_per_s']:>13.1f} {r['warm_open_ms']:>13.1f} {r['warm_clips_per_s']:>13.0f} "
            f"{r['cache_mb']:>9.1f}"
        )
    write_results(
        args.out,
        "decode",
        rows,
        cache_version=CACHE_VERSION,
        av=av.__version__,
        pillow=PIL.__version__,
        fixture_build_s=fixture_s,
        sources={
            "how2sign": f"H.264 mp4 320x240, {args.source_frames} frames",
            "phoenix": f"PNG 210x260, {args.source_frames} frames",
        },
        note="warm reads follow the cold write, so the page cache holds the file",
    )


if __name__ == "__main__":
    main()
