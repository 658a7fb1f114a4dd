"""The ablation registry and `resolve()`: each ablation is a name, a one-line description and an override dict.

`resolve(ablation, scale, seed, overrides)` = defaults <- `config.SCALES[scale]` <- ablation <-
`--set key.path=value` overrides, validated by the schema in `config.py`.

Nothing else in the code branches on an ablation's name; the model and trainer read config fields
(`text_encoder.freeze`, `ema.enabled`, `model.size`, ...). Users add their own ablations in a
JSON or TOML file:

    [my_cosine_eps]
    description = "the network predicts the noise (eps) instead of the clean clip (x)"
    overrides = { diffusion = { prediction = "eps" } }
    primary = ["distribution"]          # optional: the metric(s) its question is decided on
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from t2s_ray.outputs import GRID_PARAM, grid_override  # noqa: F401 (grid_override: re-exported)
from t2s_ray.plan import TrainingGroup
from t2s_ray.t2s.config import SCALES, Config, ConfigError, merge, parse_override

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class Ablation:
    """One arm of the study."""

    name: str
    """Identifier used on the command line and in result tables."""
    description: str
    """One line saying what changes relative to the baseline."""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    """Nested config overrides applied on top of the scale preset."""
    control: bool = False
    """A control arm with a known effect (calibration), not a design choice under study."""
    primary: tuple[str, ...] = ()
    """The metric(s) its question is decided on (Holm runs over these comparisons only); `distribution` is the
    distribution metric: I3D FVD with a detector, else FVD-SynthSign. The others are exploratory."""


ABLATIONS: dict[str, Ablation] = {
    a.name: a
    for a in (
        Ablation("baseline", "frozen text encoder, EMA on (the reference arm)", {}),
        Ablation(
            "text_finetuned",
            "text encoder finetuned in its own optimizer group at a smaller LR",
            {"text_encoder": {"freeze": False}},
            primary=("eval/text_alignment", "distribution"),
        ),
        Ablation(
            "no_ema", "no EMA; evaluation uses the raw weights", {"ema": {"enabled": False}}, primary=("distribution",)
        ),
        Ablation(
            "dit_s",
            "DiT-S denoiser (hidden 384, depth 12, 6 heads) instead of the scale's size",
            {"model": {"size": "dit-s"}},
            primary=("distribution",),
        ),
        Ablation(
            "eps_prediction",
            "the network predicts the noise (eps) instead of the clean clip",
            {"diffusion": {"prediction": "eps"}},
            primary=("distribution",),
        ),
        Ablation(
            "v_prediction",
            "the network predicts the velocity v instead of the clean clip",
            {"diffusion": {"prediction": "v"}},
            primary=("distribution",),
        ),
        # controls: arms whose effect is known, so that a study can prove it detects one
        Ablation(
            "no_text",
            "negative control: captions always dropped in training, unconditional sampling; "
            "text alignment must fall to chance",
            {"diffusion": {"caption_dropout": 1.0}},
            control=True,
            primary=("eval/text_alignment",),
        ),
        Ablation(
            "few_sampling_steps",
            "graded control: 5 DDIM sampling steps instead of the scale's; a small "
            "known loss (it shares baseline's training, so it costs one more evaluation per seed)",
            {"eval": {"sampling_steps": 5}},
            control=True,
            primary=("eval/text_alignment", "distribution"),
        ),
    )
}

DEFAULT_ABLATIONS = ("baseline", "text_finetuned", "no_ema")
CALIBRATION_ARM, CALIBRATION_CONTROL = "baseline", "no_text"
"""`t2s-ray calibrate` must tell these two apart in text alignment."""
CALIBRATION_GRADED = "few_sampling_steps"
"""`t2s-ray calibrate`'s control of a small known effect: whether it is detected, and the MDE, are reported."""


def get_ablation(name: str, extra: Mapping[str, Ablation] | None = None) -> Ablation:
    """Look up an ablation by name in the built-ins and `extra`; unknown names raise `ConfigError`."""
    registry = {**ABLATIONS, **(extra or {})}
    if name not in registry:
        raise ConfigError(f"unknown ablation {name!r}; known ablations: {', '.join(registry)}")
    return registry[name]


def load_ablation_file(path: str | Path) -> dict[str, Ablation]:
    """Read user-defined ablations from a `.json` or `.toml` file (see module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"ablation file {str(p)!r} does not exist")
    text = p.read_text()
    try:
        raw = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except ValueError as e:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise ConfigError(f"ablation file {str(p)!r} is not valid {p.suffix[1:] or 'JSON'}: {e}") from None
    out: dict[str, Ablation] = {}
    for name, body in raw.items():
        if not isinstance(body, Mapping) or set(body) - {"description", "overrides", "primary"}:
            raise ConfigError(
                f"ablation {name!r} in {p}: expected a table with 'description', 'overrides' and "
                f"optionally 'primary' (a list of metric names)"
            )
        if name in ABLATIONS:
            raise ConfigError(f"ablation {name!r} in {p} shadows a built-in ablation; pick another name")
        primary = body.get("primary", [])
        if isinstance(primary, str) or not all(isinstance(m, str) for m in primary):
            raise ConfigError(
                f"ablation {name!r} in {p}: primary must be a list of metric names, e.g. "
                f'primary = ["eval/text_alignment"]'
            )
        abl = Ablation(name, str(body.get("description", "")), dict(body.get("overrides", {})), primary=tuple(primary))
        try:  # validate now so that a typo fails before any trial starts
            Config.from_dict(merge(Config().to_dict(), abl.overrides))
        except ConfigError as e:
            raise ConfigError(f"ablation {name!r} in {p}: {e}") from None
        out[name] = abl
    return out


def resolve(
    ablation: str = "baseline",
    scale: str = "smoke",
    seed: int = 0,
    overrides: list[str] | tuple[str, ...] = (),
    extra_ablations: Mapping[str, Ablation] | None = None,
) -> Config:
    """defaults <- SCALES[scale] <- ablation overrides <- `--set` overrides, validated."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    abl = get_ablation(ablation, extra_ablations)
    d = merge(Config().to_dict(), SCALES[scale])
    d = merge(d, abl.overrides)
    for item in overrides:
        d = merge(d, parse_override(item))
    d.update(ablation=ablation, scale=scale, seed=seed)
    return Config.from_dict(d)


def params_ablations(params: Mapping[str, Any]) -> dict[str, Ablation]:
    """The user-defined ablations a sweep stored in a trial's params (`user_ablations`)."""
    return {
        name: Ablation(name, body["description"], body["overrides"], primary=tuple(body.get("primary", ())))
        for name, body in params.get("user_ablations", {}).items()
    }


def resolve_params(
    params: Mapping[str, Any], ablation: str | None = None, seed: int | None = None, overrides: Sequence[str] = ()
) -> Config:
    """The config a sweep trial of `params` (params.json: ablation, seed, scale, overrides, user_ablations) ran
    with; `ablation`/`seed` resolve another member of its grid instead, `overrides` apply last."""
    # params["overrides"] starts with data.spec=params["data"] (see SweepSpec.all_overrides); the trial's --grid
    # point applies after them
    grid = [grid_override(k, v) for k, v in params.get(GRID_PARAM, {}).items()]
    return resolve(
        ablation or params["ablation"],
        params["scale"],
        int(params["seed"] if seed is None else seed),
        [*params.get("overrides", []), *grid, *overrides],
        extra_ablations=params_ablations(params),
    )


def training_groups(configs: Mapping[str, Config], share: bool = True) -> list[TrainingGroup]:
    """Partition ablations (name -> resolved config, one seed) into training groups.

    Two ablations share training when their configs differ only in `config.EVALUATION_ONLY` fields
    (`trajectory_fields` equal). One trial keeps one EMA, so a group holds at most one enabled EMA
    setting: ablations whose EMAs are both on but differ (e.g. another decay) train separately.
    With `share=False` every ablation is its own group. Groups come in the order of their first member.
    """
    from t2s_ray.t2s.config import trajectory_fields

    groups: list[tuple[str, dict | None, list[str]]] = []  # (trajectory key, enabled EMA, members)
    for name, cfg in configs.items():
        key = json.dumps(trajectory_fields(cfg), sort_keys=True, default=str)
        ema = cfg.to_dict()["ema"] if cfg.ema.enabled else None
        for i, (k, group_ema, members) in enumerate(groups):
            if share and k == key and (ema is None or group_ema is None or ema == group_ema):
                members.append(name)
                groups[i] = (k, group_ema or ema, members)
                break
        else:
            groups.append((key, ema, [name]))
    out = []
    for _, _, members in groups:
        trainer = next((m for m in members if configs[m].ema.enabled), members[0])
        out.append(TrainingGroup(trainer, tuple(members)))
    return out
