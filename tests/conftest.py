"""Shared test fixtures."""

import pytest


@pytest.fixture(scope="session")
def text_encoder():
    """The bundled all-MiniLM-L6-v2, frozen; loaded once per session (~3 s). Do not mutate it."""
    from t2s_ray.models.text_encoder import TextEncoder

    return TextEncoder()
