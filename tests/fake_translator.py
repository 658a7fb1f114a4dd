"""A deterministic sign-to-text stand-in for the back-translation tests: clip k, filled with the pixel value k,
reads as WORDS[k]. `Reader` counts its instances (a class is instantiated once per evaluation)."""

from __future__ import annotations

import numpy as np

WORDS = ["hello", "thank you", "good morning my friend", "please", "see you later", "yes", "no", "water"]


def read(clips: np.ndarray, language: str) -> list[str]:
    """WORDS[value of the clip's first pixel] for each clip (uint8 clips x frames x H x W x 3)."""
    return [WORDS[int(c.flat[0]) % len(WORDS)] for c in clips]


class Reader:
    instances = 0
    calls: list[tuple[int, str]] = []

    def __init__(self):
        Reader.instances += 1

    def __call__(self, clips: np.ndarray, language: str) -> list[str]:
        Reader.calls.append((len(clips), language))
        return read(clips, language)


def broken(clips: np.ndarray, language: str) -> list[str]:
    raise RuntimeError("the sign-to-text model ran out of memory")


def one_short(clips: np.ndarray, language: str) -> list[str]:
    return read(clips, language)[:-1]
