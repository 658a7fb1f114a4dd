"""`t2s-ray sample`: clips from a train run, a checkpoint, a trial or a whole experiment; its error paths."""

import json
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from t2s_ray.cli import app
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.in_process import train_local
from t2s_ray.t2s.sample import Column, resolve_source, write
from tests.helpers import Clips, tiny_overrides

runner = CliRunner()
FRAMES, SIZE, ZOOM = 4, 16, 3
TINY = tiny_overrides(
    f"data.frames={FRAMES}",
    f"data.height={SIZE}",
    f"data.width={SIZE}",
    "model.size=dit-tiny",
    "model.patch_size=4",
    "training.steps=2",
    "training.warmup_steps=1",
    "training.report_every=1",
    "training.checkpoint_every=1",
    drop=("data.train_clips", "data.eval_clips", "eval.num_videos", "eval.evaluator_clips", "eval.evaluator_epochs"),
)


@pytest.fixture(scope="module")
def run(tmp_path_factory, text_encoder):
    """A `t2s-ray train` output folder: baseline (EMA on), 2 steps, checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("run")
    cfg = resolve("baseline", "smoke", 0, [*TINY, f"data.cache_dir={out / 'cache'}"])
    train_local(cfg, out, dataset=Clips.random(4, FRAMES, SIZE), text_encoder=text_encoder)
    return out


def _trial(exp, name, ablation, seed, finished, checkpoint=None, **params):
    """A trial folder as Ray Tune writes it: params.json, result.json (a final row when finished), checkpoint_*/."""
    d = exp / name
    d.mkdir()
    (d / "params.json").write_text(json.dumps({"ablation": ablation, "seed": seed, "scale": "smoke", **params}))
    rows = [{"step": 1, "loss": 1.0, "timestamp": 1, "trial_id": name}]
    rows += [{"final": 1, "step": 2, "eval/fvd_synthsign": 1.0, "timestamp": 2, "trial_id": name}] if finished else []
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if checkpoint is not None:
        shutil.copytree(checkpoint, d / "checkpoint_000001")
    return d


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, run):
    """A sweep's experiment folder with real checkpoints: baseline of seed 0 finished, its training shared with
    no_ema (one trial, as `t2s-ray sweep` groups them), text_finetuned unfinished."""
    exp = tmp_path_factory.mktemp("exp")
    (exp / "experiment_state-2025.json").write_text("{}")
    ckpt = run / "checkpoints" / "checkpoint_000002"
    _trial(
        exp,
        "baseline_seed0_a",
        "baseline",
        0,
        True,
        ckpt,
        shared={"baseline": ["no_ema"]},
        overrides=[*TINY, f"data.cache_dir={run / 'cache'}"],
    )
    _trial(exp, "text_finetuned_seed0_c", "text_finetuned", 0, False, ckpt)
    _trial(exp, "baseline_seed1_d", "baseline", 1, False)
    return exp


def _sample(*args):
    return runner.invoke(app, ["sample", *map(str, args), "--device", "cpu"])


def test_sources_resolve_to_the_newest_checkpoint_or_the_experiment(run, experiment):
    ckpt = run / "checkpoints" / "checkpoint_000001"
    assert resolve_source(ckpt) == ("checkpoint", ckpt)
    assert resolve_source(run) == ("checkpoint", run / "checkpoints" / "checkpoint_000002")
    trial = experiment / "baseline_seed0_a"
    assert resolve_source(trial) == ("checkpoint", trial / "checkpoint_000001")
    assert resolve_source(experiment) == ("experiment", experiment)


def test_gif_of_several_sentences_side_by_side(run, tmp_path):
    out = tmp_path / "clips.gif"
    r = _sample(run, "--text", "a person signs word 1", "-t", "hello", "-o", out)
    assert r.exit_code == 0, r.output
    assert f"wrote {out}: 2 sentence(s)" in r.output
    assert "baseline: step 2, EMA weights, DDIM 2 steps, guidance 3" in r.output
    with Image.open(out) as im:
        assert im.n_frames == FRAMES
        assert im.width == 2 * SIZE * ZOOM and im.height > SIZE * ZOOM  # the captions below


def test_mp4_decodes_with_pyav(run, tmp_path):
    out = tmp_path / "clip.mp4"
    r = _sample(run / "checkpoints" / "checkpoint_000001", "-t", "hello", "-o", out, "--steps", "1", "--zoom", "1")
    assert r.exit_code == 0, r.output
    assert "step 1, EMA weights, DDIM 1 steps" in r.output
    with av.open(str(out)) as f:
        frames = list(f.decode(video=0))
    assert len(frames) == FRAMES
    assert frames[0].width == SIZE and frames[0].width % 2 == 0 and frames[0].height % 2 == 0


def test_same_seed_same_clip_raw_weights_and_other_seeds_differ(run, tmp_path):
    def gif(name, *extra):
        r = _sample(run, "-t", "hello", "-o", tmp_path / name, *extra)
        assert r.exit_code == 0, r.output
        return r.output, (tmp_path / name).read_bytes()

    _, a = gif("a.gif", "--seed", "3")
    _, again = gif("b.gif", "--seed", "3")
    raw_out, raw = gif("c.gif", "--seed", "3", "--raw-weights")
    _, other = gif("d.gif", "--seed", "4")
    assert a == again
    assert "raw weights" in raw_out and raw != a
    assert other != a


def test_experiment_one_column_per_finished_ablation(experiment, tmp_path):
    out = tmp_path / "ablations.gif"
    r = _sample(experiment, "-t", "hello", "-t", "a person signs word 2", "-o", out)
    assert r.exit_code == 0, r.output
    assert "2 sentence(s) x 2 column(s)" in r.output
    assert "baseline: step 2, EMA weights" in r.output
    # the shared run's raw weights, evaluated as no_ema evaluates them
    assert "no_ema: step 2, raw (EMA disabled)" in r.output
    assert "text_finetuned left out (unfinished" in r.output
    with Image.open(out) as im:
        assert im.n_frames == FRAMES
        assert im.width == 2 * SIZE * ZOOM and im.height > 2 * SIZE * ZOOM  # 2 columns, 2 captioned rows


def _corrupt_checkpoint(run, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(run / "checkpoints" / "checkpoint_000002", bad)
    with open(bad / "state.pt", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    return bad


ERRORS = {
    "missing path": (lambda run, exp, tmp: [tmp / "nope", "-t", "x"], "does not exist"),
    "a file": (lambda run, exp, tmp: [run / "config.json", "-t", "x"], "is a file"),
    "not a run": (lambda run, exp, tmp: [tmp, "-t", "x"], "is neither a checkpoint folder"),
    "run without checkpoint": (lambda run, exp, tmp: [exp / "baseline_seed1_d", "-t", "x"], "holds no checkpoint"),
    "corrupt checkpoint": (lambda run, exp, tmp: [_corrupt_checkpoint(run, tmp), "-t", "x"], "is corrupt"),
    "no finished trial": (lambda run, exp, tmp: [exp, "-t", "x", "--trial-seed", "1"], "no finished trial of seed 1"),
    "empty text": (lambda run, exp, tmp: [run, "-t", "x", "-t", ""], "--text number 2 is empty"),
    "blank text": (lambda run, exp, tmp: [run, "-t", "  "], "--text number 1 is empty"),
    "no text": (lambda run, exp, tmp: [run], "no sentence to sign"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_input_is_one_line_exit_2_and_nothing_written(run, experiment, tmp_path, case):
    make_args, message = ERRORS[case]
    out = tmp_path / "out" / "clip.gif"
    r = _sample(*make_args(run, experiment, tmp_path), "-o", out)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert message in lines[0], lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "name, message",
    [
        ("clip.png", "suffix '.png'; choose one of .gif, .mp4"),
        ("clip", "no suffix; choose one of .gif, .mp4"),
        (None, "no output file"),
    ],
)
def test_bad_output_is_one_line_exit_2(run, tmp_path, name, message):
    r = _sample(run, "-t", "x", *(["-o", tmp_path / name] if name else []))
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.output
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_written_names_the_option_not_the_temp_file():
    from t2s_ray.t2s.sample import SampleError

    clips = np.zeros((1, 2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(SampleError) as e:  # /proc exists, but its file system refuses a new file
        write(Path("/proc/x.gif"), [Column("baseline", clips)], ["x"])
    assert str(e.value).startswith("-o /proc/x.gif cannot be written: ") and ".x.gif." not in str(e.value)


def test_write_lays_out_a_row_per_sentence_and_a_column_per_ablation(tmp_path):
    clips = np.random.default_rng(0).integers(0, 256, (2, 3, 5, 7, 3), dtype=np.uint8)  # odd sizes
    one = [Column("baseline", clips)]
    write(tmp_path / "row.gif", one, ["a", "b"], named=False, zoom=1)
    write(tmp_path / "col.gif", one, ["a", "b"], named=True, zoom=1)  # one ablation: still a named column
    write(tmp_path / "grid.mp4", one * 3, ["a", "b"], zoom=1)
    with Image.open(tmp_path / "row.gif") as row, Image.open(tmp_path / "col.gif") as col:
        assert (row.width, col.width) == (2 * 7, 7) and col.height > 2 * 5
    with av.open(str(tmp_path / "grid.mp4")) as f:
        frames = list(f.decode(video=0))
    assert len(frames) == 3 and frames[0].width == 3 * 7 + 1  # padded to even for yuv420p


def test_experiment_of_a_grid_sweep_has_a_column_per_arm(tmp_path, run):
    """A --grid sweep: one column per (ablation, grid point), each named `<ablation> @ <point>`, the shared
    training's other member sampled as itself."""
    exp = tmp_path / "grid"
    exp.mkdir()
    ckpt = run / "checkpoints" / "checkpoint_000002"
    for steps in (2, 3):  # an evaluation-only axis: the one checkpoint stands for both points
        _trial(
            exp,
            f"baseline_seed0_sampling_steps={steps}_x",
            "baseline",
            0,
            True,
            ckpt,
            shared={"baseline": ["no_ema"]},
            overrides=[*TINY, f"data.cache_dir={run / 'cache'}"],
            grid={"eval.sampling_steps": steps},
        )
    out = tmp_path / "grid.gif"
    r = _sample(exp, "-t", "hello", "-o", out)
    assert r.exit_code == 0, r.output
    assert "1 sentence(s) x 4 column(s)" in r.output
    for arm in (
        "baseline @ eval.sampling_steps=2: step 2, EMA weights, DDIM 2 steps",
        "no_ema @ eval.sampling_steps=3: step 2, raw (EMA disabled) weights, DDIM 3 steps",
    ):
        assert arm in r.output, r.output
