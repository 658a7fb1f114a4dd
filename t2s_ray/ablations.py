"""The ablation registry: each ablation is a name, a one-line description and an override dict.

Nothing else in the code branches on an ablation's name; the model and trainer read config fields
(`text_encoder.freeze`, `ema.enabled`, `model.size`, ...). Users add their own ablations in a
JSON or TOML file:

    [my_cosine_eps]
    description = "epsilon prediction instead of v"
    overrides = { diffusion = { prediction = "eps" } }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class Ablation:
    """One arm of the study."""

    name: str
    """Identifier used on the command line and in result tables."""
    description: str
    """One line saying what changes relative to the baseline."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Nested config overrides applied on top of the scale preset."""


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation("baseline", "frozen text encoder, EMA on (the reference arm)", {}),
        Ablation("text_finetuned", "text encoder finetuned in its own optimizer group at a smaller LR",
                 {"text_encoder": {"freeze": False}}),
        Ablation("no_ema", "no EMA; evaluation uses the raw weights", {"ema": {"enabled": False}}),
        Ablation("dit_s", "DiT-S denoiser (hidden 384, depth 12, 6 heads) instead of the scale's size",
                 {"model": {"size": "dit-s"}}),
    )
}

DEFAULT_ABLATIONS = ("baseline", "text_finetuned", "no_ema")


def get_ablation(name: str, extra: Mapping[str, Ablation] | None = None) -> Ablation:
    """Look up an ablation by name in the built-ins and `extra`; unknown names raise `ConfigError`."""
    from t2s_ray.config import ConfigError

    registry = {**ABLATIONS, **(extra or {})}
    if name not in registry:
        raise ConfigError(f"unknown ablation {name!r}; known ablations: {', '.join(registry)}")
    return registry[name]


def load_ablation_file(path: str | Path) -> dict[str, Ablation]:
    """Read user-defined ablations from a `.json` or `.toml` file (see module docstring)."""
    from t2s_ray.config import ConfigError, Config, merge

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ablation file {str(p)!r} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            raw = json.loads(text)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"ablation file {str(p)!r} is not valid {p.suffix[1:] or 'JSON'}: {e}") from None
    out: dict[str, Ablation] = {}
    for name, body in raw.items():
        if not isinstance(body, Mapping) or set(body) - {"description", "overrides"}:
            raise ConfigError(f"ablation {name!r} in {p}: expected a table with 'description' and 'overrides'")
        if name in ABLATIONS:
            raise ConfigError(f"ablation {name!r} in {p} shadows a built-in ablation; pick another name")
        abl = Ablation(name, str(body.get("description", "")), dict(body.get("overrides", {})))
        try:  # validate now so that a typo fails before any trial starts
            Config.from_dict(merge(Config().to_dict(), abl.overrides))
        except ConfigError as e:
            raise ConfigError(f"ablation {name!r} in {p}: {e}") from None
        out[name] = abl
    return out
