"""The `t2s-ray` command line: parses options and delegates; no logic of its own."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from t2s_ray.config import ConfigError, flatten, resolve

app = typer.Typer(
    name="t2s-ray",
    help="Ablation studies of text-to-sign video diffusion models, run as Ray Tune grids.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


class Scale(str, enum.Enum):
    smoke = "smoke"
    small = "small"
    full = "full"


SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Config override key.path=value (repeatable), e.g. training.lr=1e-4.")]
ScaleOpt = Annotated[Scale, typer.Option(help="Size preset: smoke (CPU, < 1 min), small (CPU minutes), full (GPU hours).")]
AblationFileOpt = Annotated[Optional[Path], typer.Option("--ablation-file", help="JSON/TOML file of user-defined ablations.")]


@app.callback()
def _root() -> None:
    """Ablation studies of text-to-sign video diffusion models, run as Ray Tune grids."""


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def _user_ablations(path: Optional[Path]):
    from t2s_ray.ablations import load_ablation_file

    return load_ablation_file(path) if path else None


@app.command("config")
def config_cmd(
    ablation: Annotated[str, typer.Argument(help="Ablation name, e.g. baseline, text_finetuned, no_ema, dit_s.")],
    scale: ScaleOpt = Scale.smoke,
    set_: SetOpt = None,
    ablation_file: AblationFileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved config as JSON.")] = False,
) -> None:
    """Print the resolved config of ABLATION and highlight what differs from baseline."""
    try:
        extra = _user_ablations(ablation_file)
        cfg = resolve(ablation, scale.value, 0, set_ or [], extra_ablations=extra)
        base = resolve("baseline", scale.value, 0, set_ or [])
    except ConfigError as e:
        raise fail(str(e), code=2) from None
    if as_json:
        print(cfg.to_json())
        return
    from t2s_ray.ablations import get_ablation

    console.print(f"[bold]{ablation}[/] @ {scale.value}: {get_ablation(ablation, extra).description}", highlight=False)
    ours, theirs = flatten(cfg.to_dict()), flatten(base.to_dict())
    width = max(map(len, ours))
    for key, value in ours.items():
        if key == "ablation" or value == theirs[key]:
            console.print(f"  {key:<{width}} = {value!r}", highlight=False)
        else:
            console.print(f"[bold yellow]* {key:<{width}} = {value!r}[/]  [dim](baseline: {theirs[key]!r})[/]",
                          highlight=False)
    changed = [k for k in ours if k != "ablation" and ours[k] != theirs[k]]
    console.print(f"{len(changed)} key(s) differ from baseline" + (f": {', '.join(changed)}" if changed else ""),
                  highlight=False)


def main() -> None:  # pragma: no cover - console-script entry
    app()
