"""The bundled study's sweep: `BundledSweepSpec` (the spec `t2s-ray sweep` builds without `--study`): its options
beyond every study's (`--data`, `--steps`, `--ablation-file`), how its ablations resolve and share training, the
data and gloss evaluators the driver prepares once, and the cost probe of a config (`probe`)."""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

from t2s_ray.outputs import ARMS_PARAM, GRID_PARAM, grid_override
from t2s_ray.plan import Probe, TrainingGroup
from t2s_ray.sweep.spec import SweepError, SweepSpec, parse_grid
from t2s_ray.sweep.validate import validate_options, validate_storage
from t2s_ray.t2s.ablations import DEFAULT_ABLATIONS, Ablation, get_ablation, resolve, training_groups
from t2s_ray.t2s.config import DEFAULT_SEEDS, Config, diff

GRID_RESERVED = {"ablation": "--ablations", "seed": "--seeds", "scale": "--scale", "data.spec": "--data"}
"""Config keys that are sweep axes or settings of their own, not `--grid` axes (the option to use instead)."""


@dataclass
class BundledSweepSpec(SweepSpec):
    """A sweep of the bundled study (`t2s_ray.t2s:study`): its registry's ablations (and an ablation file's), its
    scales, its data."""

    ablations: tuple[str, ...] = DEFAULT_ABLATIONS
    scale: str = "smoke"
    steps: Optional[int] = None
    """`--steps`: training.steps of every trial (None: the scale's)."""
    data: str = "synthsign"
    user_ablations: dict[str, Ablation] = field(default_factory=dict)
    """`--ablation-file`'s ablations."""

    def __post_init__(self) -> None:
        if self.seeds is None:
            self.seeds = DEFAULT_SEEDS.get(self.scale, 1)
        super().__post_init__()
        # Tune runs each trial in its own working directory: every path the trials read must be absolute.
        self.overrides = tuple(absolutize_override(o) for o in self.overrides)
        self.data = absolutize_spec(self.data)

    @property
    def all_overrides(self) -> list[str]:
        return [f"data.spec={self.data}", *self.overrides] + (
            [f"training.steps={self.steps}"] if self.steps is not None else []
        )

    @functools.cached_property
    def grid_axes(self) -> dict[str, list]:
        return parse_grid(self.grid, self.overrides, schema=Config, reserved=GRID_RESERVED)

    def _resolve(self, ablation: str, seed: int = 0, extra: tuple[str, ...] = ()):
        return resolve(ablation, self.scale, seed, [*self.all_overrides, *extra], extra_ablations=self.user_ablations)

    @functools.cached_property
    def _training_groups(self) -> list[TrainingGroup]:
        return training_groups({a: self._resolve(a) for a in self.ablations}, share=self.share_training)

    def param_space(self) -> dict[str, Any]:
        """Grid over ablation x seed; everything else constant, so params.json says what a trial was."""
        from ray import tune

        groups = self.training_groups()
        space: dict[str, Any] = {
            "ablation": tune.grid_search([g.trainer for g in groups]),
            "seed": tune.grid_search(list(range(self.seeds))),
            "scale": self.scale,
            "data": self.data,
            "overrides": self.all_overrides,
        }
        axes = self.grid_axes
        if axes:
            space[GRID_PARAM] = {key: tune.grid_search(values) for key, values in axes.items()}
        shared = {g.trainer: list(g.others) for g in groups if g.others}
        if shared:  # the trial of `trainer` also evaluates these ablations' weights
            space["shared"] = shared
        arms = {a: get_ablation(a, self.user_ablations) for a in self.ablations}
        space[ARMS_PARAM] = {
            a: {"description": abl.description, "primary": list(abl.primary)} for a, abl in arms.items()
        }
        if self.user_ablations:
            space["user_ablations"] = {
                a.name: {"description": a.description, "overrides": dict(a.overrides), "primary": list(a.primary)}
                for a in self.user_ablations.values()
                if a.name in self.ablations
            }
        return space

    def validate(self, available_gpus: Optional[float] = None) -> list:
        """Every option, every grid value and every ablation resolves, none equals the baseline; the configs
        (one per ablation and seed) the driver prepares data and evaluators for."""
        validate_options(self, available_gpus)
        for key, values in self.grid_axes.items():  # every grid value must give a valid config (e.g. lr > 0)
            for value in values:
                self._resolve("baseline", extra=(grid_override(key, value),))
        configs = [self._resolve(a, s) for a in self.ablations for s in range(self.seeds)]
        self._refuse_copies_of_baseline()
        validate_storage(self)
        return configs

    def _refuse_copies_of_baseline(self) -> None:
        """An ablation whose config equals the baseline's at this scale would only measure seed noise: refuse it."""
        base = self._resolve("baseline")
        for name in self.ablations:
            if name != "baseline" and not diff(self._resolve(name), base, ignore=("ablation", "device")):
                raise SweepError(
                    f"ablation {name!r} resolves to the baseline's config at --scale {self.scale} (with "
                    f"these --set overrides): it would only measure seed noise; drop it from "
                    f"--ablations or choose another scale"
                )

    def probes(
        self, configs, device: str, say: Callable[[str], None], threads: int, probe_steps: int = 3
    ) -> dict[str, Probe]:
        """One cost probe per training group's trainer (the distinct models of the sweep), on `device`."""
        try:
            return {
                g.trainer: probe(
                    next(c for c in configs if c.ablation == g.trainer),
                    probe_steps,
                    device=device,
                    say=say,
                    threads=threads,
                )
                for g in self.training_groups()
            }
        except (OSError, ValueError) as e:  # a text encoder or data path the trials could not read either
            raise SweepError(f"the cost probe could not train a step: {e}") from None

    def pair_probes(
        self, configs, probes: dict[str, Probe], device: str, say: Callable[[str], None], threads: int
    ) -> dict[str, Probe]:
        """Each trainer's pair step time (`pair_probe.measure_pair`), 3 steps, its status said."""
        from t2s_ray.t2s.pair_probe import measure_pair

        out = {}
        for name, p in probes.items():
            say(f"probing {name} packed: two copies training at once on one {device} ...")
            cfg = next(c for c in configs if c.ablation == name)
            pair_s, status = measure_pair(cfg, 3, device, threads=threads)
            if not math.isfinite(pair_s):
                say(f"  {name}: {status}")
            out[name] = replace(p, pair_step_s=pair_s)
        return out

    def trial_steps(self, configs) -> Optional[int]:
        return configs[0].training.steps

    def samplings_per_member(self, configs) -> int:
        """One sampling of the evaluation set per guidance scale listed."""
        return max(1, len(configs[0].eval.guidance_sweep))

    def shared_training_how(self) -> str:
        return "EMA/evaluation settings), each evaluated with its own weights"

    def prepare(self, configs: list, say: Callable[[str], None]) -> None:
        prepare_data(configs, say)
        prepare_evaluators(configs, say)

    def prepare_on_cluster(self, configs: list, say: Callable[[str], None]) -> None:
        prepare_cluster_data(configs, say)

    def keep_checkpoints(self, configs: list) -> int:
        return configs[0].training.keep_checkpoints

    def estimate_before_run(self) -> bool:
        return self.scale == "full"  # hours of GPU time: say what they will cost before spending them


PATH_KEYS = ("data.cache_dir", "eval.fvd_detector", "text_encoder.path")


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def absolutize_override(item: str) -> str:
    """`data.cache_dir=rel` -> `data.cache_dir=/abs/rel` (and the other path keys); others unchanged."""
    key, sep, value = item.partition("=")
    if key.strip() in PATH_KEYS and sep:
        return f"{key.strip()}={_abs(value.strip())}"
    if key.strip() == "data.spec" and sep:
        return f"data.spec={absolutize_spec(value.strip())}"
    return item


def absolutize_spec(spec: str) -> str:
    """`how2sign:rel/root` -> `how2sign:/abs/rel/root`; `synthsign` unchanged."""
    name, sep, arg = spec.partition(":")
    return f"{name}:{_abs(arg)}" if sep and arg else spec


def prepare_data(configs, say: Callable[[str], None]) -> None:
    """Build (or find cached) the train and val splits once, in the driver, before any trial starts.

    A bad dataset path fails here with its message instead of in every trial, and trials never
    wait on each other to decode a corpus.
    """
    from t2s_ray.data import build_dataset

    seen = set()
    for cfg in configs:
        if cfg.data in seen:
            continue
        seen.add(cfg.data)
        try:
            sizes = {split: len(build_dataset(cfg.data, split)) for split in ("train", "val")}
        except (ValueError, OSError) as e:
            raise SweepError(str(e) if cfg.data.spec in str(e) else f"--data {cfg.data.spec}: {e}") from None
        if sizes["val"] == 0:
            raise SweepError(
                f"--data {cfg.data.spec}: the val split is empty; the evaluation samples its captions "
                f"from val (add val rows, e.g. a 'split' column in a manifest)"
            )
        say(
            f"data {cfg.data.spec}: {sizes['train']} train / {sizes['val']} val clips "
            f"({cfg.data.frames}x{cfg.data.height}x{cfg.data.width})"
        )


def prepare_evaluators(configs, say: Callable[[str], None]) -> None:
    """Train (or find cached) the SynthSign gloss evaluator of each data config once, in the driver.

    Otherwise the first trial would train it on its one CPU while the others wait on its lock. A cached one is
    only read (the driver imports no torch for it).
    """
    from t2s_ray.t2s.gloss_evaluator_cache import MAX_GLOSSES, cached_report, evaluator_config, evaluator_dir

    seen = set()
    for cfg in configs:
        if cfg.data.spec != "synthsign" or cfg.data.frames < MAX_GLOSSES:
            continue
        ecfg = evaluator_config(cfg.eval)
        folder = evaluator_dir(cfg.data, ecfg)
        if folder in seen:
            continue
        seen.add(folder)
        report = cached_report(folder)
        if report is None:
            from t2s_ray.t2s.gloss_evaluator import shipped_evaluators, train_evaluator

            if folder.name not in shipped_evaluators():
                say(
                    f"training the SynthSign gloss evaluator for eval/fvd_synthsign and eval/text_alignment "
                    f"(once per data config, cached in {folder})"
                )
            report = train_evaluator(cfg.data, ecfg)
        say(
            f"gloss evaluator ({report.source}): exact-sentence accuracy {report.exact_accuracy:.2f} on SynthSign "
            f"test clips"
        )


def prepare_cluster_data(configs, say: Callable[[str], None]) -> None:
    """Under --address: check the data this machine can see, and say where the trials find their cache.

    Each trial builds or reuses the cache (gloss evaluator included) on its own node under the cache's file
    locks: this machine's cache may be no node's. A given data.cache_dir is created here when possible, so
    that every node mounting it sees it (a trial that cannot see it fails, naming its node).
    """
    from t2s_ray.data import check_layout, dataset_path

    lines = []
    for data in dict.fromkeys(cfg.data for cfg in configs):
        try:
            here = check_layout(data)
        except (ValueError, OSError) as e:
            raise SweepError(str(e) if data.spec in str(e) else f"--data {data.spec}: {e}") from None
        if not here:
            lines.append(f"data: {dataset_path(data)} is not on this machine; each trial looks for it on its node")
        lines.append(_cluster_cache_line(data))
    for line in dict.fromkeys(lines):
        say(line)


def _cluster_cache_line(data) -> str:
    if not data.cache_dir:
        return (
            "data: each node builds or reuses its own cache ($T2S_RAY_CACHE or ~/.cache/t2s-ray on that node); "
            "set data.cache_dir to a folder every node mounts to build it once"
        )
    folder = Path(data.cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return (
            f"data: trials build or reuse the cache in {folder} (data.cache_dir), which every node must see; "
            f"it cannot be created here ({e.strerror or e}): create it on a filesystem every node mounts"
        )
    return f"data: trials build or reuse the cache in {folder} (data.cache_dir) once; every node must see that folder"


def probe(
    cfg, steps: int = 3, device=None, say: Callable[[str], None] = lambda s: None, threads: Optional[int] = None
) -> Probe:
    """Measure `cfg` on `device` (default: the config's): median of `steps` training steps after one warm-up,
    and one guided sampling step of an evaluation batch, scaled to the evaluation's steps and batches.
    `threads`: torch's CPU threads meanwhile (a trial gets as many as the CPUs it reserves)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _probe(cfg, steps, device, say)
    finally:
        torch.set_num_threads(before)


def _probe(cfg, steps: int, device, say: Callable[[str], None]) -> Probe:
    import torch

    from t2s_ray.data import build_dataset
    from t2s_ray.metrics.efficiency import synchronize
    from t2s_ray.t2s.evaluation import sample
    from t2s_ray.t2s.training import build_state, prefill_captions, time_train_steps

    say(f"probing {cfg.ablation}: {steps} training steps and one sampling step ...")
    state = build_state(cfg, device=torch.device(device) if device else None)
    cuda = state.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(state.device)
    data = build_dataset(cfg.data, "train")
    prefill_captions(state, data)
    times = time_train_steps(state, data, steps, warmup=1)
    e = cfg.eval
    one_step = replace(state, cfg=replace(cfg, eval=replace(e, sampling_steps=1)))
    texts = ["a person signs hello"] * min(e.batch_size, e.num_videos)
    sample(one_step, texts, 0)  # warm-up
    t0 = time.perf_counter()
    sample(one_step, texts, 0)
    synchronize(state.device)
    per_batch_step = time.perf_counter() - t0
    eval_s = per_batch_step * e.sampling_steps * math.ceil(e.num_videos / e.batch_size)
    peak = torch.cuda.max_memory_allocated(state.device) / 2**30 if cuda else math.nan
    total = torch.cuda.get_device_properties(state.device).total_memory / 2**30 if cuda else math.nan
    return Probe(cfg.ablation, str(state.device), statistics.median(times), eval_s, peak, total)
