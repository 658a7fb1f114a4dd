"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="session")
def text_encoder():
    """The bundled all-MiniLM-L6-v2, frozen; loaded once per session (~3 s). Do not mutate it."""
    from t2s_ray.models.text_encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="session")
def fake_gpu_ray():
    """A fresh local Ray (loopback only) with 3 fake GPUs, shared by the tests that need one."""
    import os

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=3, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
