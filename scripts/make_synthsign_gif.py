"""Write docs/synthsign.gif: the first SynthSign train clips (64x64, 16 frames) with their captions.

python scripts/make_synthsign_gif.py --clips 4 --out docs/synthsign.gif
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from t2s_ray.data.synthsign import GLOSSES, SynthSign
from t2s_ray.data.video import save_gif
from t2s_ray.t2s.config import DataConfig

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "synthsign.gif"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="train clips shown side by side")
    parser.add_argument("--seed", type=int, default=0, help="SynthSign seed (data.seed)")
    parser.add_argument("--scale", type=int, default=3, help="pixel upscaling of each clip")
    parser.add_argument("--fps", type=int, default=6, help="frames per second of the GIF")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="GIF to write")
    parser.add_argument("--json", type=Path, default=Path("synthsign_gif.json"), help="results JSON to write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="synthsign-gif-") as cache_dir:
        cfg = DataConfig(frames=16, height=64, width=64, train_clips=args.clips, seed=args.seed, cache_dir=cache_dir)
        ds = SynthSign(cfg, "train")
        videos, texts = ds.get_batch(range(len(ds)))
    save_gif(args.out, videos, texts, scale=args.scale, fps=args.fps)
    rows = [{"index": i, "text": t, "glosses": [GLOSSES[g] for g in ds.glosses[i]]} for i, t in enumerate(texts)]
    print(f"{'clip':<5} {'glosses':<28} caption")
    for r in rows:
        print(f"{r['index']:<5} {' '.join(r['glosses']):<28} {r['text']}")
    args.json.write_text(json.dumps({"gif": str(args.out), "seed": args.seed, "clips": rows}, indent=2))
    print(f"wrote {args.out} and {args.json}")


if __name__ == "__main__":
    main()
