"""The `t2s-ray` command line: parses options, delegates, and turns what comes back into output and exit codes
(after a sweep: its tables, the upload of a remote experiment's, and the exit code of its trials' outcome).

Exit codes, for every command: 0 done, 2 bad input (one line on stderr, nothing written),
1 a run that failed, 130 interrupted (Ctrl+C).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from t2s_ray.cluster import LOOPBACK, ClusterError
from t2s_ray.outputs import FORMATS, INTERVALS, SWEEP_FILE, TRACKERS
from t2s_ray.preflight import run_checks
from t2s_ray.storage import Location, StorageError, cache_dir, local_copy, normalize, upload
from t2s_ray.sweep import SweepError, resume_sweep, run_sweep
from t2s_ray.sweep import dry_run as sweep_dry_run
from t2s_ray.t2s.ablations import (
    CALIBRATION_ARM,
    CALIBRATION_CONTROL,
    CALIBRATION_GRADED,
    DEFAULT_ABLATIONS,
    get_ablation,
    load_ablation_file,
    resolve,
)
from t2s_ray.t2s.config import DEVICES, SCALES, ConfigError, flatten
from t2s_ray.t2s.sweep import BundledSweepSpec, absolutize_override, absolutize_spec
from t2s_ray.trackers import TrackerError

# Lazy below: modules importing torch (local, checkpoint, training, evaluator, metrics) or pandas
# (analysis) would add seconds to every `t2s-ray --help`.

app = typer.Typer(
    name="t2s-ray",
    help="Ablation studies of text-to-sign video diffusion models, run as Ray Tune grids.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

Scale = enum.Enum("Scale", {name: name for name in SCALES}, type=str)
"""The `--scale` choices: every preset in `config.SCALES`."""


Fmt = enum.Enum("Fmt", {name: name for name in FORMATS}, type=str)
"""The `analyze --format` choices: `outputs.FORMATS`."""
Interval = enum.Enum("Interval", {name: name for name in INTERVALS}, type=str)
"""The `analyze --interval` choices: `outputs.INTERVALS`."""
Tracker = enum.Enum("Tracker", {name: name for name in TRACKERS}, type=str)
"""The `sweep --log-to` choices: `outputs.TRACKERS`."""
Device = enum.Enum("Device", {name: name for name in DEVICES}, type=str)
"""The `evaluate --device` choices: `config.DEVICES`."""


SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Config override key.path=value (repeatable), e.g. training.lr=1e-4."),
]
ScaleOpt = Annotated[
    Scale, typer.Option(help="Size preset: smoke (CPU, < 1 min), small (CPU minutes), full (GPU hours).")
]
StorageOpt = Annotated[
    str,
    typer.Option(
        help="Where experiments go: a folder (resolved to an absolute path) or a URI Ray's storage takes: s3://bucket/prefix, gs://bucket/prefix, file:///abs (S3 endpoint and credentials from the environment, e.g. AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID). Checked for writing before anything runs."
    ),
]
AblationFileOpt = Annotated[
    Optional[Path], typer.Option("--ablation-file", help="JSON/TOML file of user-defined ablations.")
]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version  # lazy: ~50 ms on every other command

        typer.echo(f"t2s-ray {version('t2s-ray')}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        Optional[bool],
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = None,
) -> None:
    """Ablation studies of text-to-sign video diffusion models, run as Ray Tune grids."""


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def _user_ablations(path: Optional[Path]):
    return load_ablation_file(path) if path else None


def _check_writable(folder: Path, option: str) -> None:
    """Create `folder` and a probe file in it, or exit 2 naming the folder and the fix."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".t2s-probe-"):
            pass
    except OSError as e:
        raise fail(
            f"{option} {folder}: cannot create a folder there and write in it ({e.strerror or e}); "
            f"choose another {option}",
            code=2,
        ) from None


StudyOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Your own model's study, package.module:attr (a t2s_ray.Study), imported from the current folder."
    ),
]
AnyScaleOpt = Annotated[
    Optional[str],
    typer.Option(
        help="Size preset: smoke (CPU, < 1 min, the default), small (CPU minutes), full (GPU hours); with --study one "
        "of the study's scales (default its first)."
    ),
]


def _load_study(ref: str):
    from t2s_ray.study import StudyError, load_study

    try:
        return load_study(ref)
    except StudyError as e:
        raise fail(str(e), code=2) from None


@app.command("config")
def config_cmd(
    ablation: Annotated[str, typer.Argument(help="Ablation name, e.g. baseline, text_finetuned, no_ema, dit_s.")],
    scale: AnyScaleOpt = None,
    set_: SetOpt = None,
    ablation_file: AblationFileOpt = None,
    study: StudyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the resolved config as JSON.")] = False,
) -> None:
    """Print the resolved config of ABLATION and highlight what differs from baseline."""
    import json

    from t2s_ray.study import StudyError

    try:
        if study is not None:
            s = _load_study(study)
            scale = scale or s.scale_names[0]
            cfg_d = dataclasses.asdict(s.resolve(ablation, scale, set_ or []))
            base_d = dataclasses.asdict(s.resolve(s.baseline, scale, set_ or []))
            title, baseline = f"study {s.name!r}", s.baseline
        else:
            scale = _bundled_scale(scale)
            extra = _user_ablations(ablation_file)
            cfg = resolve(ablation, scale, 0, set_ or [], extra_ablations=extra)
            cfg_d, base_d = cfg.to_dict(), resolve("baseline", scale, 0, set_ or []).to_dict()
            title, baseline = get_ablation(ablation, extra).description, "baseline"
    except (ConfigError, StudyError) as e:
        raise fail(str(e), code=2) from None
    if as_json:
        print(json.dumps(cfg_d, indent=2, sort_keys=True))
        return
    console.print(f"[bold]{ablation}[/] @ {scale}: {title}", highlight=False)
    ours, theirs = flatten(cfg_d), flatten(base_d)
    changed = {k: (v, theirs[k]) for k, v in ours.items() if theirs.get(k) != v and k != "ablation"}
    width = max(map(len, ours))
    for key, value in ours.items():
        if key in changed:
            console.print(
                f"[bold yellow]* {key:<{width}} = {value!r}[/]  [dim](baseline: {changed[key][1]!r})[/]",
                highlight=False,
            )
        else:
            console.print(f"  {key:<{width}} = {value!r}", highlight=False)
    console.print(
        f"{len(changed)} key(s) differ from {baseline}" + (f": {', '.join(changed)}" if changed else ""),
        highlight=False,
    )


@app.command("train")
def train_cmd(
    ablation: Annotated[str, typer.Argument(help="Ablation to train, e.g. baseline.")],
    scale: AnyScaleOpt = None,
    seed: Annotated[int, typer.Option(min=0, help="Trial seed (model init, data order, noise).")] = 0,
    steps: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Stop after step N. Below training.steps this pauses the run (the LR schedule still spans "
            "training.steps; run again with a larger N to continue); above it, it raises "
            "training.steps.",
        ),
    ] = None,
    set_: SetOpt = None,
    ablation_file: AblationFileOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option(help="Output folder; resumed from if it holds a checkpoint. Default: runs/<ablation>_seed<k>."),
    ] = None,
    study: StudyOpt = None,
) -> None:
    """Train one (ablation, seed) in this process, without Ray, and checkpoint it like a sweep trial."""
    from t2s_ray.checkpoint import CheckpointError
    from t2s_ray.t2s.in_process import train_local
    from t2s_ray.t2s.training import TrainingError

    if study is not None:
        _train_study(_load_study(study), ablation, scale, seed, set_ or [], steps, ablation_file, out)
        return
    scale = _bundled_scale(scale)
    overrides = [absolutize_override(o) for o in set_ or []]
    try:
        cfg = resolve(ablation, scale, seed, overrides, extra_ablations=_user_ablations(ablation_file))
        if steps is not None and steps > cfg.training.steps:  # a longer run: the schedule spans it
            cfg = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, steps=steps))
    except ConfigError as e:
        raise fail(str(e), code=2) from None
    out = (out or Path("runs") / f"{ablation}_seed{seed}").expanduser().resolve()
    _check_writable(out, "--out")
    stop = min(steps or cfg.training.steps, cfg.training.steps)
    console.print(f"training [bold]{ablation}[/] seed {seed} @ {scale} → {out}", highlight=False)
    try:
        run = _with_progress(lambda progress: train_local(cfg, out, stop_at=stop, progress=progress), stop)
    except (ConfigError, CheckpointError, ValueError) as e:  # the config, --out's checkpoints or the data
        raise fail(str(e), code=2) from None
    except TrainingError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command again to resume from the last checkpoint", code=130) from None
    _print_train_summary(run, stop)


def _train_study(
    study,
    ablation: str,
    scale: Optional[str],
    seed: int,
    overrides: list[str],
    steps: Optional[int],
    ablation_file: Optional[Path],
    out: Optional[Path],
) -> None:
    """`t2s-ray train --study`: one (ablation, seed) of the user's study in this process."""
    from t2s_ray.ablation_runner import train_in_process
    from t2s_ray.study import StudyError

    if steps is not None or ablation_file is not None:
        raise fail(
            "--steps and --ablation-file are for the bundled study; with --study set your config's fields "
            "with --set key.path=value and define ablations in the Study",
            code=2,
        )
    out = (out or Path("runs") / f"{ablation}_seed{seed}").expanduser().resolve()
    _check_writable(out, "--out")
    try:
        study.resolve(ablation, scale, overrides)
    except StudyError as e:
        raise fail(str(e), code=2) from None
    console.print(f"training [bold]{ablation}[/] seed {seed} of study {study.name!r} → {out}", highlight=False)
    try:
        final = train_in_process(study, ablation, scale, seed, overrides, out)
    except StudyError as e:
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted; run the same command again to resume from the last checkpoint", code=130) from None
    for key, value in final.items():
        if isinstance(value, float) and (key.startswith(("eval/", "final_loss")) or key in (study.metrics or {})):
            console.print(f"  {key} = {value:.4g}", highlight=False)
    console.print(f"run folder: {out}", highlight=False)


def _with_progress(fn, total: int):
    """Run `fn(progress_callback)` under a rich progress bar counting optimizer steps."""
    with Progress(
        TextColumn("step"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, transient=True
    ) as bar:
        task = bar.add_task("train", total=total)
        return fn(lambda step: bar.update(task, completed=step))


def _print_train_summary(run, stop: int) -> None:
    s, m = run.state, run.last_metrics
    total, trainable = s.model.parameter_counts()
    if run.resumed_from:
        console.print(f"resumed from {run.resumed_from} (step {run.start_step})", highlight=False)
    if not m:
        console.print(f"nothing to do: already at step {s.step} (asked to stop at {stop})", highlight=False)
        return
    console.print(
        f"step {s.step}/{s.cfg.training.steps}  loss {m['loss']:.4f}  {m['step_time_ms']:.0f} ms/step  "
        f"params {total / 1e6:.2f}M total, {trainable / 1e6:.2f}M trainable",
        highlight=False,
    )
    console.print(f"checkpoints: {run.out / 'checkpoints'}", highlight=False)


def _split_csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


@app.command("sweep")
def sweep_cmd(
    gpus: Annotated[
        Optional[float], typer.Option(help="GPUs to use (default: all detected; 0 runs trials on CPU).")
    ] = None,
    gpus_per_trial: Annotated[
        str,
        typer.Option(
            help="GPUs per trial; fractions such as 0.5 pack trials onto one GPU; auto packs by each model's peak "
            "memory, measured by a short probe on this machine's GPU."
        ),
    ] = "1",
    cpus_per_trial: Annotated[
        str,
        typer.Option(
            help="CPUs reserved per trial, or auto: GPU trials get min(4, cluster CPUs / GPU trials at once), a "
            "fraction when CPUs are fewer, so every GPU is used; CPU trials share the cores (1 to 4 each)."
        ),
    ] = "auto",
    ablations: Annotated[
        Optional[str],
        typer.Option(
            help="Comma-separated ablations to run (default baseline,text_finetuned,no_ema; with --study, all of "
            "the study's)."
        ),
    ] = None,
    seeds: Annotated[
        Optional[int],
        typer.Option(
            help="Seeds per ablation (seeds 0..K-1); default 3 at small/full (a verdict needs 3), 1 at smoke; 3 with "
            "--study."
        ),
    ] = None,
    scale: AnyScaleOpt = None,
    study: StudyOpt = None,
    steps: Annotated[
        Optional[int], typer.Option(min=1, help="Training steps per trial (overrides training.steps).")
    ] = None,
    data: Annotated[
        str, typer.Option(help="Dataset spec: synthsign, how2sign:ROOT, phoenix:ROOT, manifest:FILE.csv.")
    ] = "synthsign",
    storage: StorageOpt = "results",
    name: Annotated[
        Optional[str], typer.Option(help="Experiment folder name under --storage (default t2s-<date>-<time>).")
    ] = None,
    address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster instead of starting one.")] = None,
    max_failures: Annotated[int, typer.Option(help="Retries per trial after a crash (from its last checkpoint).")] = 2,
    max_concurrent: Annotated[Optional[int], typer.Option(help="Cap on trials running at once.")] = None,
    set_: SetOpt = None,
    ablation_file: AblationFileOpt = None,
    quiet: Annotated[bool, typer.Option(help="Only start, end and errors.")] = False,
    dashboard: Annotated[
        bool, typer.Option(help="Start the Ray dashboard (needs the ray 'default' extra, installed with t2s-ray).")
    ] = True,
    dashboard_host: Annotated[str, typer.Option(help="Address the dashboard binds to.")] = "127.0.0.1",
    dashboard_port: Annotated[
        Optional[int], typer.Option(help="Dashboard port (default 8265, or the next free one).")
    ] = None,
    expose_dashboard: Annotated[
        bool,
        typer.Option(
            help="Confirm binding the dashboard to a non-loopback address (anyone who reaches it can run code)."
        ),
    ] = False,
    share_training: Annotated[
        bool,
        typer.Option(
            "--share-training/--no-share-training",
            help="Train once for ablations that differ only in EMA/evaluation settings (e.g. baseline and no_ema) "
            "and evaluate each from that run; --no-share-training trains every ablation separately.",
        ),
    ] = True,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan, resources, trials at once and a cost estimate from a short probe of "
            "each distinct model on this machine; start nothing.",
        ),
    ] = False,
    grid: Annotated[
        Optional[list[str]],
        typer.Option(
            "--grid",
            help="Another sweep axis, crossed with ablations x seeds (repeatable): key.path=v1,v2,... e.g. "
            "--grid training.lr=1e-4,3e-4; values typed by the config; each arm is compared with the "
            "baseline at the same grid values.",
        ),
    ] = None,
    primary: Annotated[
        Optional[list[str]],
        typer.Option(
            "--primary",
            help="Decide every arm on this metric (repeatable; recorded for analyze) instead of each "
            "ablation's declared primary metrics.",
        ),
    ] = None,
    effect: Annotated[
        Optional[str],
        typer.Option(
            help="With --dry-run and --pilot: the effect to detect on the primary metrics, in the metric's units "
            "(0.02) or in % of the baseline's mean (1%); prints the seeds the paired test needs for it."
        ),
    ] = None,
    pilot: Annotated[
        Optional[Path],
        typer.Option(help="An earlier experiment whose per-seed differences give the variance for --effect."),
    ] = None,
    log_to: Annotated[
        Optional[list[Tracker]],
        typer.Option(
            "--log-to",
            help="Also send every trial's config, metrics and samples to a tracker (repeatable): wandb "
            "(pip install 't2s-ray\\[wandb]') or mlflow ('t2s-ray\\[mlflow]').",
        ),
    ] = None,
) -> None:
    """Run every ablation x seed as a Ray Tune grid, one GPU per trial, then print the comparison table."""
    cpus = _resource_option(cpus_per_trial)
    gpus_each = _resource_option(gpus_per_trial, "--gpus-per-trial")
    if (effect is None) != (pilot is None) or (effect is not None and not dry_run):
        raise fail(
            "--effect and --pilot go together, with --dry-run: e.g. --dry-run --effect 1% --pilot "
            "results/<earlier experiment>",
            code=2,
        )
    common = dict(
        seeds=seeds,
        overrides=tuple(set_ or []),
        gpus=gpus,
        gpus_per_trial=gpus_each or 1.0,
        pack_by_memory=gpus_each is None,
        cpus_per_trial=cpus,
        storage=storage,
        name=name,
        address=address,
        max_failures=max_failures,
        max_concurrent=max_concurrent,
        quiet=quiet,
        dashboard=dashboard,
        dashboard_host=dashboard_host,
        dashboard_port=dashboard_port,
        expose_dashboard=expose_dashboard,
        share_training=share_training,
        grid=tuple(grid or ()),
        log_to=tuple(t.value for t in log_to or ()),
        primary=tuple(primary or ()),
    )
    if study is not None:
        if steps is not None or data != "synthsign" or ablation_file:
            raise fail(
                "--steps, --data and --ablation-file are for the bundled study; with --study, set your "
                "config's fields with --set key.path=value",
                code=2,
            )
        from t2s_ray.sweep.study import StudySweepSpec

        spec = _checked(
            lambda: StudySweepSpec(study=study, ablations=_split_csv(ablations or ""), scale=scale, **common)
        )
    else:
        spec = _checked(
            lambda: BundledSweepSpec(
                ablations=_split_csv(ablations or ",".join(DEFAULT_ABLATIONS)),
                scale=_bundled_scale(scale),
                steps=steps,
                data=data,
                user_ablations=_user_ablations(ablation_file) or {},
                **common,
            )
        )
    if dry_run:
        _checked(lambda: sweep_dry_run(spec, say=_say))
        if effect is not None:
            _print_seeds_needed(pilot, effect)
        return
    if dashboard and dashboard_host not in LOOPBACK and expose_dashboard:
        err_console.print(
            f"[bold yellow]warning:[/] the Ray dashboard will listen on {dashboard_host}: anyone "
            f"who can reach it can run code on this machine",
            highlight=False,
        )
    what = f"study {spec.study_obj.name!r}, " if study is not None else ""
    console.print(
        f"experiment [bold]{spec.experiment_dir}[/]: {what}{len(spec.ablations)} ablation(s) x "
        f"{spec.seeds} seed(s) at scale {spec.scale}",
        highlight=False,
        soft_wrap=True,
    )
    _finish(_checked(lambda: run_sweep(spec, say=_say), resume_from=spec.experiment_dir))


def _bundled_scale(scale: Optional[str]) -> str:
    """`--scale` of the bundled study: one of `config.SCALES` (smoke when not given); exit 2 otherwise."""
    if scale is None:
        return "smoke"
    if scale not in SCALES:
        raise fail(f"--scale {scale!r}: expected one of {', '.join(SCALES)} (or a scale of your --study)", code=2)
    return scale


def _resource_option(value: str, option: str = "--cpus-per-trial") -> Optional[float]:
    """`--cpus-per-trial`/`--gpus-per-trial`: None for auto, else a positive number; exit 2 otherwise."""
    if value.strip().lower() == "auto":
        return None
    try:
        amount = float(value)
    except ValueError:
        amount = math.nan
    if not amount > 0:
        raise fail(f"{option} {value!r}: expected auto or a number > 0 (e.g. 2 or 0.5)", code=2)
    return amount


def _say(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)  # tables and paths stay one line each


def _checked(step, resume_from: Optional[Path] = None):
    """`step()`, with bad input as a one-line error (exit 2) and Ctrl+C as exit 130 naming the resume command."""
    try:
        return step()
    except (ConfigError, SweepError, ClusterError, StorageError, TrackerError) as e:
        raise fail(str(e), code=2) from None
    except KeyboardInterrupt:
        hint = f"; continue with: t2s-ray resume {resume_from}" if resume_from else ""
        raise fail(f"interrupted{hint}", code=130) from None


@app.command("resume")
def resume_cmd(
    experiment_dir: Annotated[
        str,
        typer.Argument(
            help="Experiment folder or URI printed by `t2s-ray sweep` (e.g. results/<name>, s3://bucket/prefix/<name>)."
        ),
    ],
    restart_errored: Annotated[
        bool, typer.Option(help="Start errored trials over instead of resuming them from their last checkpoint.")
    ] = False,
    quiet: Annotated[bool, typer.Option(help="Only start, end and errors.")] = False,
    address: Annotated[
        Optional[str],
        typer.Option(
            help="Resume on this Ray cluster (as `sweep --address`) instead of a fresh local Ray; the experiment must be on storage the cluster's nodes reach."
        ),
    ] = None,
    dashboard: Annotated[
        bool,
        typer.Option(
            help="Start the Ray dashboard with a fresh local Ray (as `sweep`); --no-dashboard starts Ray faster."
        ),
    ] = True,
) -> None:
    """Continue an interrupted or partly failed sweep: unfinished and errored trials resume from checkpoints."""
    _finish(
        _checked(
            lambda: resume_sweep(
                experiment_dir,
                restart_errored=restart_errored,
                quiet=quiet,
                say=_say,
                address=address,
                dashboard=dashboard,
            ),
            resume_from=experiment_dir,
        )
    )


@app.command("calibrate")
def calibrate_cmd(
    gpus: Annotated[
        Optional[float], typer.Option(help="GPUs to use (default: all detected; 0 runs trials on CPU).")
    ] = None,
    cpus_per_trial: Annotated[str, typer.Option(help="CPUs reserved per trial, or auto (as in sweep).")] = "auto",
    seeds: Annotated[
        int, typer.Option(min=1, help="Seeds per arm; fewer than 3 allow no inference (the check fails).")
    ] = 3,
    steps: Annotated[
        Optional[int], typer.Option(min=1, help="Training steps per trial (default: the small scale's).")
    ] = None,
    with_finetuned: Annotated[
        bool, typer.Option(help="Also train text_finetuned (shown beside the check, not judged).")
    ] = False,
    storage: StorageOpt = "results",
    name: Annotated[
        Optional[str], typer.Option(help="Experiment folder name (default calibrate-<date>-<time>).")
    ] = None,
    set_: SetOpt = None,
    quiet: Annotated[bool, typer.Option(help="Only start, end and errors.")] = False,
    effect: Annotated[
        Optional[str],
        typer.Option(
            help="Also print the seeds needed to detect this effect in text alignment (0.02, or 1% of the "
            "baseline's mean), from the calibration's own per-seed variance."
        ),
    ] = None,
) -> None:
    """Known-effect check: baseline vs the no_text control at the small scale; PASS when the study detects it.

    Runs baseline and no_text (captions always dropped) x SEEDS as an ordinary sweep, then tests the
    per-seed difference in eval/text_alignment (paired 95 % t-interval). Exit 0 on PASS, 1 on FAIL.
    """
    from datetime import datetime

    if effect is not None:
        from t2s_ray.analysis import parse_effect

        try:
            parse_effect(effect)  # before hours of training
        except ValueError as e:
            raise fail(str(e), code=2) from None
    arms = (CALIBRATION_ARM, CALIBRATION_CONTROL, CALIBRATION_GRADED) + (("text_finetuned",) if with_finetuned else ())
    try:
        graded = resolve(CALIBRATION_GRADED, "small", 0, set_ or [])
        same = graded.eval.sampling_steps == resolve(CALIBRATION_ARM, "small", 0, set_ or []).eval.sampling_steps
    except ConfigError as e:
        raise fail(str(e), code=2) from None
    if same:
        arms = tuple(a for a in arms if a != CALIBRATION_GRADED)  # --set eval.sampling_steps made it the baseline
        console.print(
            f"note: the graded control {CALIBRATION_GRADED} is left out: --set eval.sampling_steps gives "
            f"the baseline the same sampling",
            highlight=False,
        )
    spec = _checked(
        lambda: BundledSweepSpec(
            ablations=arms,
            seeds=seeds,
            scale="small",
            steps=steps,
            overrides=tuple(set_ or []),
            gpus=gpus,
            cpus_per_trial=_resource_option(cpus_per_trial),
            storage=storage,
            quiet=quiet,
            dashboard=False,
            name=name or datetime.now().strftime("calibrate-%Y%m%d-%H%M%S"),
        )
    )
    console.print(
        f"calibration [bold]{spec.experiment_dir}[/]: {', '.join(arms)} x {seeds} seed(s) at scale small",
        highlight=False,
    )
    outcome = _checked(lambda: run_sweep(spec, say=_say), resume_from=spec.experiment_dir)
    local = _finish(outcome)
    from t2s_ray.t2s.calibrate import judge_experiment, render, write

    cal = judge_experiment(local)
    typer.echo("\n" + render(cal))
    written = write(cal, local)
    console.print(f"wrote {written[0]}", highlight=False)
    if effect is not None:
        _print_seeds_needed(local, effect)
    _upload(written, outcome.experiment_dir)
    if not cal.passed:
        raise typer.Exit(code=1)


def _print_seeds_needed(pilot: Path, effect: str) -> None:
    """The seeds each primary comparison of `pilot` needs to find `effect` (`--effect`); exit 2 on bad input."""
    from t2s_ray.analysis import seeds_needed

    if not pilot.is_dir():
        raise fail(f"--pilot {pilot}: no such experiment folder", code=2)
    try:
        lines = seeds_needed(pilot, effect)
    except ValueError as e:
        raise fail(str(e), code=2) from None
    console.print(f"seeds to detect {effect} (variance from {pilot}):", highlight=False)
    for line in lines:
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _finish(outcome) -> Path:
    """End-of-sweep summary: path, counts, the comparison table, and the resume command on errors.

    Returns the local folder analysed: the experiment folder, or for remote storage its local copy (the tables
    written there are uploaded into the experiment). Exits 130 when trials are unfinished (Tune stops on Ctrl+C
    and returns), else 1 when any errored.
    """
    exp = outcome.experiment_dir
    unfinished = outcome.num_trials - outcome.num_finished - outcome.num_errors
    console.print(
        f"\nexperiment: {exp}\ntrials: {outcome.num_finished} finished, {outcome.num_errors} errored, "
        f"{unfinished} interrupted or not started (of {outcome.num_trials}); wall {outcome.wall_s:.0f} s, "
        + ("Ray not started" if math.isnan(outcome.ray_start_s) else f"Ray start-up {outcome.ray_start_s:.1f} s"),
        highlight=False,
    )
    local = exp if isinstance(exp, Path) else cache_dir(exp)
    try:
        local = _local_copy(exp)
        paths = _print_tables(local, None, Fmt.both, upload_to=exp)
    except ValueError as e:
        err_console.print(f"no comparison table: {e}", highlight=False)
        paths = {}
    console.print(f"TensorBoard: tensorboard --logdir {local}", highlight=False)
    if "html" in paths:
        _print_report(paths["html"])
    if outcome.num_errors or unfinished:
        what = ", ".join(
            p
            for p in (
                f"{outcome.num_errors} trial(s) errored (see error.txt in their folders)" if outcome.num_errors else "",
                f"{unfinished} trial(s) unfinished (interrupted)" if unfinished else "",
            )
            if p
        )
        raise fail(f"{what}; continue with: t2s-ray resume {exp}", code=130 if unfinished else 1)
    return local


def _local_copy(location: Location) -> Path:
    """The folder to analyse: a local experiment itself, or a fresh copy of a remote one (without checkpoints)."""
    if isinstance(location, Path):
        return location
    local = local_copy(location)
    console.print(f"copied {location} (without checkpoints) to {local}", highlight=False, soft_wrap=True)
    return local


def _upload(paths, location: Location) -> None:
    """Put files written from a local copy back into the remote experiment at `location` (nothing when local)."""
    if isinstance(location, str):
        written = upload(paths, location)
        console.print(f"uploaded {len(written)} file(s) into {location}", highlight=False, soft_wrap=True)


def _print_report(path: Path) -> None:
    console.print(
        f"report: {path.resolve()}  (one self-contained page: open it in a browser)", highlight=False, soft_wrap=True
    )


def _print_tables(
    exp: Path,
    out: Optional[Path],
    fmt: Fmt,
    interval: str = "t",
    upload_to: Optional[Location] = None,
    primary: tuple[str, ...] = (),
) -> dict[str, Path]:
    """Write the experiment's tables, report and figures, print the tables; return the paths written.

    `exp` is a local folder; `upload_to`: the remote experiment it was copied from, which gets the files too."""
    from t2s_ray.analysis import headline_markdown, write_outputs

    paths = write_outputs(
        exp, out, fmt.value, interval=interval, source=None if upload_to is None else str(upload_to), primary=primary
    )
    # the tables just written, else computed (--format csv); plain: a Markdown table must not be re-wrapped
    tables = (
        paths["md"].read_text().rstrip("\n")
        if "md" in paths
        else headline_markdown(exp, interval=interval, primary=primary)
    )
    typer.echo(tables)
    console.print("all metrics, and why any is NaN: comparison_table.md, ABLATION_RESULTS_REPORT.txt", highlight=False)
    console.print("wrote " + ", ".join(str(p) for p in paths.values()), highlight=False)
    if upload_to is not None:
        _upload(paths.values(), upload_to)
    return paths


@app.command("analyze")
def analyze_cmd(
    experiment_dir: Annotated[
        str,
        typer.Argument(
            help="Experiment folder or URI, e.g. s3://bucket/prefix/<name>: read from a local copy (without checkpoints) under $T2S_RAY_CACHE or ~/.cache/t2s-ray (works without a running cluster)."
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Where to write the tables (default: the experiment folder; for a URI, its local copy, and the files are uploaded into the experiment)."
        ),
    ] = None,
    fmt: Annotated[
        Fmt, typer.Option("--format", help="Table formats to write; the text report is always written.")
    ] = Fmt.both,
    interval: Annotated[
        Interval,
        typer.Option(
            help="95 % interval of the paired differences: t-based or bootstrap (scipy; needs >= 10 paired seeds)."
        ),
    ] = Interval.t,
    primary: Annotated[
        Optional[list[str]],
        typer.Option(
            "--primary",
            help="Decide every arm on this metric (repeatable), instead of each ablation's declared "
            "primary metrics (the sweep's --primary, the registry, an ablation file's primary, a "
            "study's first metric); Holm runs over the primary comparisons only.",
        ),
    ] = None,
) -> None:
    """Turn an experiment's results into comparison tables (mean ± std over seeds, paired verdicts vs baseline),
    the text report, figures and report.html (one self-contained page with the samples side by side)."""
    try:
        location = normalize(experiment_dir)
        paths = _print_tables(
            _local_copy(location),
            out,
            fmt,
            interval.value,
            upload_to=location if out is None else None,
            primary=tuple(primary or ()),
        )
    except ValueError as e:
        raise fail(str(e), code=2) from None
    _print_report(paths["html"])


@app.command("check")
def check_cmd(
    data: Annotated[str, typer.Option(help="Dataset spec to build.")] = "synthsign",
    storage: Annotated[
        str, typer.Option(help="Storage folder or URI (s3://bucket/prefix, gs://..., file:///abs) to test for writing.")
    ] = "results",
    scale: ScaleOpt = Scale.smoke,
) -> None:
    """Preflight checklist: ablations resolve, text encoder loads offline, dataset builds, torch/GPUs, Ray, storage."""
    failed = 0
    try:
        for c in run_checks(absolutize_spec(data), storage, scale.value):
            mark = "[green]✓[/]" if c.ok else "[red]✗[/]"
            console.print(f"{mark} {c.name}: ", end="")
            console.print(c.detail, highlight=False, markup=False)
            failed += not c.ok
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    if failed:
        raise fail(f"{failed} check(s) failed")


@app.command("evaluate")
def evaluate_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (state.pt + meta.json).")],
    fvd_detector: Annotated[Optional[Path], typer.Option(help="StyleGAN-V i3d_torchscript.pt for eval/fvd.")] = None,
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Videos to generate (eval.num_videos).")] = None,
    device: Annotated[Device, typer.Option(help="Where to sample and compute the metrics.")] = Device.auto,
    out: Annotated[
        Optional[Path], typer.Option(help="JSON file to write (default eval_<ablation>_seed<k>_step<N>.json).")
    ] = None,
) -> None:
    """Sample the fixed caption set from a checkpoint's evaluated weights and compute every metric."""
    from t2s_ray.checkpoint import CheckpointError
    from t2s_ray.t2s.in_process import evaluate_checkpoint
    from t2s_ray.t2s.training import TrainingError

    overrides = [f"device={device.value}"]
    if fvd_detector:
        overrides.append(f"eval.fvd_detector={fvd_detector.expanduser().resolve()}")
    if n:
        overrides.append(f"eval.num_videos={n}")
    try:
        with console.status("evaluating (sampling, then metrics)…"):
            metrics, path = evaluate_checkpoint(checkpoint, overrides, out)
    # bad input: the checkpoint, an override, the dataset it names, or an --out/--fvd-detector path
    except (
        CheckpointError,
        ValueError,
        FileNotFoundError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as e:
        raise fail(str(e), code=2) from None
    except TrainingError as e:  # e.g. device=cuda where CUDA is not available
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    for key, value in metrics.items():
        console.print(f"  {key:<36} {value}", highlight=False, markup=False)
    console.print(f"wrote {path}", highlight=False)


@app.command("sample")
def sample_cmd(
    source: Annotated[
        Path,
        typer.Argument(
            help="Tried in this order: a checkpoint folder (meta.json in it); a run folder, i.e. a sweep trial "
            "(checkpoint_*/ in it) or a `t2s-ray train --out` folder (checkpoints/checkpoint_*/), whose newest "
            "checkpoint is used; an experiment folder (trial sub-folders with params.json): a column per "
            "ablation."
        ),
    ],
    text: Annotated[
        Optional[list[str]],
        typer.Option(
            "--text",
            "-t",
            help="Sentence to sign (repeatable: one clip each, side by side; a row each for an experiment).",
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            "-o",
            help="Output file: .gif (Pillow) or .mp4 (H.264 via PyAV). Either holds every clip in one "
            "captioned grid, written atomically.",
        ),
    ] = None,
    guidance: Annotated[
        Optional[float],
        typer.Option(min=0, help="Classifier-free guidance scale (default: the checkpoint's eval.guidance_scale)."),
    ] = None,
    steps: Annotated[Optional[int], typer.Option(min=1, help="DDIM steps (default: eval.sampling_steps).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Noise seed: the same seed gives the same clips.")] = 0,
    raw_weights: Annotated[
        bool, typer.Option("--raw-weights", help="Sample the raw weights, not the EMA ones the ablation evaluates.")
    ] = False,
    trial_seed: Annotated[int, typer.Option(min=0, help="Experiment folder only: which seed's trials.")] = 0,
    device: Annotated[Device, typer.Option(help="Where to sample.")] = Device.auto,
    fps: Annotated[int, typer.Option(min=1, help="Frames per second of the output.")] = 8,
    zoom: Annotated[int, typer.Option(min=1, help="Pixel upscaling of every clip.")] = 3,
    study: StudyOpt = None,
) -> None:
    """Generate sign videos for --text sentences with the weights the ablation evaluates (EMA when enabled).

    SOURCE is tried as a checkpoint folder, then a run folder (its newest checkpoint), then an experiment folder.

    From an experiment: every finished trial of --trial-seed (newest checkpoint), the same sentences and noise.

    The output is one captioned grid, a column per ablation and a row per sentence, as a GIF or an MP4.
    """
    from t2s_ray.checkpoint import CheckpointError
    from t2s_ray.t2s import sample as sampling
    from t2s_ray.t2s.training import TrainingError

    overrides = [f"device={device.value}"]
    overrides += [f"eval.guidance_scale={guidance}"] if guidance is not None else []
    overrides += [f"eval.sampling_steps={steps}"] if steps is not None else []
    notes: list[str] = []
    try:
        texts = sampling.check_texts(text)
        if out is None:
            raise sampling.SampleError("no output file: pass -o clip.gif or -o clip.mp4")
        sampling.check_output(out)
        kind, path = sampling.resolve_source(source.expanduser())
        study_ref = study or _recorded_study(path if kind == "experiment" else path.parent)
        with console.status(f"sampling {len(texts)} sentence(s)…"):
            if study_ref is not None:  # a user study: its own sample(cfg, checkpoint_state, texts, seed)
                from t2s_ray.study_sample import sample_study_checkpoint, sample_study_experiment

                s = _load_study(study_ref)
                if kind == "experiment":
                    columns, notes = sample_study_experiment(s, path, texts, seed, trial_seed)
                else:
                    columns = [sample_study_checkpoint(s, path, texts, seed)]
            elif kind == "experiment":
                columns, notes = sampling.sample_experiment(path, texts, seed, overrides, raw_weights, trial_seed)
            else:
                columns = [sampling.sample_checkpoint(path, texts, seed, overrides, raw_weights)]
        sampling.write(out, columns, texts, named=kind == "experiment", fps=fps, zoom=zoom)
    # bad input: the source, a checkpoint, an override, the text encoder path it names, or -o
    except (sampling.SampleError, CheckpointError, ValueError, OSError) as e:
        raise fail(str(e), code=2) from None
    except TrainingError as e:  # e.g. --device cuda where CUDA is not available
        raise fail(str(e)) from None
    except KeyboardInterrupt:
        raise fail("interrupted", code=130) from None
    for note in notes:
        err_console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    console.print(
        f"wrote {out}: {len(texts)} sentence(s) x {len(columns)} column(s), noise seed {seed}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    for c in columns:
        console.print(
            f"  {c.name}: step {c.step}, {c.weights} weights, {c.sampler}; {c.checkpoint}",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


def _recorded_study(folder: Path) -> Optional[str]:
    """The `--study` a sweep recorded in `folder` (an experiment) or in the experiment above it (a trial)."""
    from t2s_ray.sweep import saved_study

    for exp in (folder, folder.parent):
        if (exp / SWEEP_FILE).is_file():
            return saved_study(exp)
    return None


@app.command("train-evaluator")
def train_evaluator_cmd(
    scale: ScaleOpt = Scale.smoke,
    set_: SetOpt = None,
) -> None:
    """Train (or find cached) the SynthSign gloss classifier behind eval/fvd_synthsign and eval/text_alignment."""
    from t2s_ray.t2s.gloss_evaluator import EvaluatorUnavailable, evaluator_config, train_evaluator

    try:
        cfg = resolve("baseline", scale.value, 0, set_ or [])
        console.print(
            f"gloss evaluator for {cfg.data.frames}x{cfg.data.height}x{cfg.data.width} SynthSign", highlight=False
        )
        report = train_evaluator(
            cfg.data,
            evaluator_config(cfg.eval),
            progress=lambda p: console.print(
                "  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in p.items()),
                highlight=False,
            ),
        )
    except (ConfigError, EvaluatorUnavailable) as e:
        raise fail(str(e), code=2) from None
    except KeyboardInterrupt:
        raise fail("interrupted; run it again to start over", code=130) from None
    for key, value in report.to_dict().items():
        console.print(f"  {key}: {value}", highlight=False, markup=False)


if __name__ == "__main__":
    app()
