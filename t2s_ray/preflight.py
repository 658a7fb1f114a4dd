"""`t2s-ray check`: a preflight checklist, one line per item, each either passing or saying why not."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from t2s_ray.cluster import detect_local_gpus, keep_ray_on_loopback
from t2s_ray.storage import check_writable, normalize
from t2s_ray.t2s.ablations import ABLATIONS, resolve

# torch, Ray, the text encoder and the datasets are imported inside their checks: this module is
# imported by the CLI, and they would cost seconds on every `t2s-ray --help`; Ray also must see the
# loopback environment before it is imported.


@dataclass(frozen=True)
class Check:
    """One checklist line."""

    name: str
    ok: bool
    detail: str


def _run(name: str, fn: Callable[[], str]) -> Check:
    try:
        return Check(name, True, fn())
    except Exception as e:  # noqa: BLE001 - a checklist reports every failure instead of stopping
        return Check(name, False, f"{type(e).__name__}: {e}")


def _ablations(scale: str) -> str:
    for name in ABLATIONS:
        resolve(name, scale, 0)
    return f"{len(ABLATIONS)} resolve at scale {scale} ({', '.join(ABLATIONS)})"


def _text_encoder() -> str:
    from t2s_ray.t2s.models.text_encoder import TextEncoder, default_text_encoder_path

    t0 = time.perf_counter()
    enc = TextEncoder()
    out = enc(["a person signs hello"])
    return (
        f"{default_text_encoder_path()} loads offline in {time.perf_counter() - t0:.1f} s, "
        f"tokens {tuple(out.tokens.shape)}"
    )


def _dataset(spec: str, scale: str, cache_dir: str) -> str:
    """Build every split at the scale's frame shape (so the cache is the one a sweep will read)."""
    from t2s_ray.data import SPLITS, build_dataset

    overrides = [f"data.spec={spec}"] + (
        [f"data.cache_dir={cache_dir}", "data.train_clips=16", "data.eval_clips=4"] if spec == "synthsign" else []
    )
    cfg = resolve("baseline", scale, 0, overrides).data
    counts = {s: len(build_dataset(cfg, s)) for s in SPLITS}
    return f"{spec} at {cfg.frames}x{cfg.height}x{cfg.width}: " + ", ".join(f"{s} {n} clips" for s, n in counts.items())


def _torch() -> str:
    import torch

    cuda = torch.cuda.is_available()
    return (
        f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, CUDA available: {cuda}, "
        f"GPUs detected: {detect_local_gpus()}"
    )


def _ray() -> str:
    keep_ray_on_loopback()
    import ray

    if ray.is_initialized():
        return f"Ray {ray.__version__} already running: {ray.cluster_resources()}"
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        assert ray.get(ray.put(41)) + 1 == 42
        return f"Ray {ray.__version__} starts locally in {time.perf_counter() - t0:.1f} s"
    finally:
        ray.shutdown()


def _storage(location: str | Path) -> str:
    path = normalize(location)
    if isinstance(path, str):  # a URI: reachable, and a probe object is written and deleted
        check_writable(path)
        return f"{path} is writable"
    path.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path, prefix=".t2s-check-"):
        pass
    return f"{path} is writable"


def run_checks(data: str = "synthsign", storage: str | Path = "results", scale: str = "smoke") -> Iterator[Check]:
    """Yield each checklist item as it completes."""
    yield _run("ablations", lambda: _ablations(scale))
    yield _run("text encoder", _text_encoder)
    with tempfile.TemporaryDirectory() as tmp:
        cache = tmp if data == "synthsign" else ""
        yield _run("dataset", lambda: _dataset(data, scale, cache))
    yield _run("torch / GPUs", _torch)
    yield _run("ray", _ray)
    yield _run("storage", lambda: _storage(storage))
