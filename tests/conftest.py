"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="session")
def text_encoder():
    """The bundled all-MiniLM-L6-v2, frozen; loaded once per session (~3 s). Do not mutate it."""
    from t2s_ray.t2s.models.text_encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    """One `data.cache_dir` for the session: a data config's clips and gloss evaluator are built once, by the first
    test that needs them, and reused by every later test of the same config (the cache is content-keyed and
    written under file locks, as on a cluster)."""
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def fake_gpu_ray():
    """A fresh local Ray (loopback only) with 3 fake GPUs, shared by the tests that need one."""
    import os

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """moto in server mode on a free loopback port; yields the environment that points pyarrow (and Ray's
    workers, which inherit it) at it. Stopped by pid."""
    import subprocess
    import sys

    from tests.helpers import accepts, free_port, wait_for

    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: accepts(port), 30, f"moto on 127.0.0.1:{port} (log: {log})", interval_s=0.2)
        yield {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
