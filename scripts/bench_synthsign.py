"""Benchmark SynthSign: clips/s rendered into a fresh cache (cold) and read back via get_batch (warm).

python scripts/bench_synthsign.py --clips 512 --out bench_synthsign.json
"""

from __future__ import annotations

import argparse
import tempfile

from benchkit import time_cached_dataset, write_results

from t2s_ray.data.synthsign import RENDER_VERSION, SynthSign
from t2s_ray.t2s.config import DataConfig

SHAPES = {"smoke": (8, 32, 32), "full": (16, 64, 64)}  # (frames, height, width) of the scales


def bench_shape(name: str, shape: tuple[int, int, int], clips: int, batch_size: int, cache_dir: str) -> dict:
    """Cold build, warm open and a shuffled pass of get_batch over one split of `clips` clips."""
    frames, height, width = shape
    cfg = DataConfig(frames=frames, height=height, width=width, train_clips=clips, cache_dir=cache_dir)
    return {
        "shape": name,
        "frames": frames,
        "height": height,
        "width": width,
        **time_cached_dataset(lambda: SynthSign(cfg, "train"), batch_size),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=512, help="clips rendered per shape")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per get_batch call (warm pass)")
    parser.add_argument("--out", default="bench_synthsign.json", help="where to write the JSON results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-synthsign-") as cache_dir:
        rows = [bench_shape(name, shape, args.clips, args.batch_size, cache_dir) for name, shape in SHAPES.items()]
    print(
        f"{'shape':<6} {'T x H x W':<10} {'clips':>6} {'cold clips/s':>13} {'warm open ms':>13} "
        f"{'warm clips/s':>13} {'cache MB':>9}"
    )
    for r in rows:
        print(
            f"{r['shape']:<6} {r['frames']}x{r['height']}x{r['width']:<5} {r['clips']:>6} "
            f"{r['cold_clips_per_s']:>13.0f} {r['warm_open_ms']:>13.1f} {r['warm_clips_per_s']:>13.0f} "
            f"{r['cache_mb']:>9.1f}"
        )
    write_results(
        args.out,
        "synthsign",
        rows,
        render_version=RENDER_VERSION,
        note="warm reads follow the cold write, so the page cache holds the file",
    )


if __name__ == "__main__":
    main()
