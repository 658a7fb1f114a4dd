#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md in one run (needs CUDA, not Ray): gpu_check.py with compilation off
# (the drawn-ahead prologue, foreach EMA, fused AdamW and attention changes alone) and on (`auto`, the
# default), dit-tiny, dit-s and dit-b at the full shape, then, with compilation, the memory sampler and the
# full study's GPU-hours. Writes gpu_eager.json and gpu_compiled.json into $OUT (default: the current folder).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-.}
py=${PYTHON:-python3}
sizes=${SIZES:-dit-tiny,dit-s,dit-b}
PYTHONPATH=. "$py" scripts/gpu_check.py --compile off --sizes "$sizes" --no-sweep --no-estimate --out "$out/gpu_eager.json"
PYTHONPATH=. "$py" scripts/gpu_check.py --compile auto --sizes "$sizes" --out "$out/gpu_compiled.json"
