"""Metrics, one per file; feature networks are passed in so tests can use tiny ones. `not_computed`: the NaN
and its reason that a metric reports when it cannot be computed."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def not_computed(names: Iterable[str], reason: str) -> dict[str, Any]:
    """`eval/<name>` NaN and `eval/<name>_status` = `reason` for each name: a metric that could not be computed."""
    out: dict[str, Any] = {}
    for name in names:
        out[f"eval/{name}"], out[f"eval/{name}_status"] = math.nan, reason
    return out
