"""Training-state contract: complete checkpoints, bit-exact resume, clear failures."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2s_ray.checkpoint import CheckpointError, list_checkpoints, read_checkpoint
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.in_process import train_local
from t2s_ray.t2s.training import (
    TrainingError,
    build_state,
    drop_captions,
    load_state,
    lr_factor,
    next_batch,
    restore_latest,
    save_state,
    train_step,
)

TINY = [
    "data.frames=4",
    "data.height=16",
    "data.width=16",
    "data.train_clips=8",
    "data.eval_clips=4",
    "model.size=dit-tiny",
    "model.patch_size=4",
    "training.batch_size=2",
    "training.steps=6",
    "training.warmup_steps=2",
    "training.report_every=1",
    "training.checkpoint_every=3",
    "device=cpu",
    "eval.num_videos=2",
]


class TinyClips:
    """A deterministic in-memory dataset with the ClipDataset interface."""

    def __init__(self, n=8, frames=4, size=16):
        rng = np.random.default_rng(0)
        self.videos = rng.integers(0, 256, (n, frames, size, size, 3), dtype=np.uint8)
        self.texts = [f"a person signs word {i}" for i in range(n)]

    def __len__(self):
        return len(self.texts)

    def get_batch(self, idx):
        return self.videos[idx].copy(), [self.texts[i] for i in idx]


def _cfg(tmp_path, ablation="baseline", extra=()):
    return resolve(ablation, "smoke", 0, TINY + [f"data.cache_dir={tmp_path / 'cache'}", *extra])


def _weights(state):
    return {k: v.clone() for k, v in state.model.state_dict().items()}


def test_lr_factor_warmup_then_cosine_to_min():
    assert lr_factor(0, 4, 100, "cosine", 0.1) == pytest.approx(0.25)
    assert lr_factor(3, 4, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(4, 4, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 4, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 4, 100, "constant", 0.1) == 1.0


def test_caption_dropout_uses_the_generator():
    texts = [f"t{i}" for i in range(1000)]
    out = drop_captions(texts, 0.1, torch.Generator().manual_seed(0))
    assert 50 < out.count("") < 150
    assert out == drop_captions(texts, 0.1, torch.Generator().manual_seed(0))


def test_checkpoint_round_trips_every_component(tmp_path, text_encoder):
    cfg = _cfg(tmp_path)
    data = TinyClips()
    a = build_state(cfg, text_encoder=text_encoder)
    for _ in range(3):
        train_step(a, *next_batch(a, data))
    save_state(a, tmp_path / "ckpt")
    b = build_state(cfg, text_encoder=text_encoder)
    load_state(b, tmp_path / "ckpt")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert json.dumps(a.ema.state_dict()["num_updates"]) == json.dumps(b.ema.state_dict()["num_updates"])
    shadow_a, shadow_b = a.ema.state_dict()["shadow"], b.ema.state_dict()["shadow"]
    assert shadow_a and shadow_a.keys() == shadow_b.keys()
    for k, v in shadow_a.items():
        assert torch.equal(v, shadow_b[k]), k
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    for pid, st in sa["state"].items():
        assert torch.equal(st["exp_avg"], sb["state"][pid]["exp_avg"])
        assert torch.equal(st["exp_avg_sq"], sb["state"][pid]["exp_avg_sq"])
    assert a.scheduler.state_dict() == b.scheduler.state_dict()
    assert a.scaler.state_dict() == b.scaler.state_dict()
    assert torch.equal(a.generator.get_state(), b.generator.get_state())
    assert (a.step, a.epoch, a.data_pos) == (b.step, b.epoch, b.data_pos) == (3, 0, 6)


def test_frozen_encoder_is_not_stored_but_finetuned_one_is(tmp_path, text_encoder):
    frozen = build_state(_cfg(tmp_path), text_encoder=text_encoder)
    save_state(frozen, tmp_path / "f")
    sd, _ = read_checkpoint(tmp_path / "f")
    assert not any(k.startswith("text_encoder.") for k in sd["model"])
    tuned = build_state(_cfg(tmp_path, "text_finetuned"))
    save_state(tuned, tmp_path / "t")
    sd, _ = read_checkpoint(tmp_path / "t")
    assert any(k.startswith("text_encoder.") for k in sd["model"])


def test_resume_in_process_equals_straight_run(tmp_path, text_encoder):
    cfg = _cfg(tmp_path)
    data = TinyClips()
    straight = build_state(cfg, text_encoder=text_encoder)
    for _ in range(5):
        train_step(straight, *next_batch(straight, data))  # crosses an epoch boundary (8 clips / 2)
    first = build_state(cfg, text_encoder=text_encoder)
    for _ in range(2):
        train_step(first, *next_batch(first, data))
    save_state(first, tmp_path / "ckpt")
    torch.manual_seed(999)  # disturb the global RNG: the checkpoint must restore it
    resumed = build_state(cfg, text_encoder=text_encoder)
    load_state(resumed, tmp_path / "ckpt")
    for _ in range(3):
        train_step(resumed, *next_batch(resumed, data))
    for k, v in _weights(straight).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def _train_cli(out: Path, steps: int, cache: Path, ablation="baseline") -> None:
    cmd = [
        sys.executable,
        "-m",
        "t2s_ray.cli",
        "train",
        ablation,
        "--steps",
        str(steps),
        "--out",
        str(out),
        *[a for s in TINY + [f"data.cache_dir={cache}"] for a in ("--set", s)],
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("ablation", ["baseline", "text_finetuned"])
def test_resume_in_a_fresh_process_is_bit_exact(tmp_path, ablation):
    """k steps + save, then a new process loads and trains to N == N steps straight (CPU)."""
    cache = tmp_path / "cache"
    _train_cli(tmp_path / "split", 3, cache, ablation)
    _train_cli(tmp_path / "split", 6, cache, ablation)
    _train_cli(tmp_path / "straight", 6, cache, ablation)
    a, _ = read_checkpoint(list_checkpoints(tmp_path / "split" / "checkpoints")[-1])
    b, _ = read_checkpoint(list_checkpoints(tmp_path / "straight" / "checkpoints")[-1])
    assert a["progress"]["step"] == b["progress"]["step"] == 6
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["ema"]["shadow"] and a["ema"]["shadow"].keys() == b["ema"]["shadow"].keys()
    for k in a["ema"]["shadow"]:
        assert torch.equal(a["ema"]["shadow"][k], b["ema"]["shadow"][k]), k


def test_corrupt_checkpoint_is_reported_and_previous_one_used(tmp_path, text_encoder, caplog):
    cfg = _cfg(tmp_path)
    data = TinyClips()
    s = build_state(cfg, text_encoder=text_encoder)
    train_step(s, *next_batch(s, data))
    save_state(s, tmp_path / "ck" / "checkpoint_000001")
    train_step(s, *next_batch(s, data))
    save_state(s, tmp_path / "ck" / "checkpoint_000002")
    with open(tmp_path / "ck" / "checkpoint_000002" / "state.pt", "r+b") as f:
        f.truncate(100)
    fresh = build_state(cfg, text_encoder=text_encoder)
    loaded = restore_latest(fresh, tmp_path / "ck")
    assert loaded.endswith("checkpoint_000001") and fresh.step == 1
    assert "checkpoint_000002 is corrupt" in caplog.text
    with open(tmp_path / "ck" / "checkpoint_000001" / "state.pt", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        restore_latest(build_state(cfg, text_encoder=text_encoder), tmp_path / "ck")


def test_resume_with_another_config_is_refused(tmp_path, text_encoder):
    s = build_state(_cfg(tmp_path), text_encoder=text_encoder)
    save_state(s, tmp_path / "ck")
    other = build_state(_cfg(tmp_path, extra=["training.lr=1e-3"]), text_encoder=text_encoder)
    with pytest.raises(CheckpointError, match="different config"):
        load_state(other, tmp_path / "ck")


def test_nan_loss_stops_with_step_and_ablation(tmp_path, text_encoder):
    cfg = _cfg(tmp_path, extra=["training.lr=1e30", "training.grad_clip=0", "training.warmup_steps=0"])
    data = TinyClips()
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*ablation baseline"):
        train_local(cfg, tmp_path / "run", dataset=data, text_encoder=text_encoder)


def test_out_of_memory_message_names_batch_and_checkpointing(tmp_path, text_encoder, monkeypatch):
    import t2s_ray.t2s.training as tr

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tr, "train_step", oom)
    with pytest.raises(TrainingError, match=r"training.batch_size=2.*grad_checkpointing"):
        train_local(_cfg(tmp_path), tmp_path / "run", dataset=TinyClips(), text_encoder=text_encoder)


def test_train_local_writes_metrics_and_prunes_checkpoints(tmp_path, text_encoder):
    cfg = _cfg(tmp_path, extra=["training.keep_checkpoints=1"])
    run = train_local(cfg, tmp_path / "run", dataset=TinyClips(), text_encoder=text_encoder)
    assert run.state.step == 6
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [c.name for c in ckpts] == ["checkpoint_000006"]
    lines = (tmp_path / "run" / "training_metrics.csv").read_text().splitlines()
    assert lines[0].startswith("step,epoch,loss,lr")
    assert len(lines) == 1 + 6
    assert all(math.isfinite(float(r.split(",")[2])) for r in lines[1:])


def test_gradients_are_clipped_per_optimizer_group(tmp_path, monkeypatch):
    """A finetuned encoder's gradients must not shrink the DiT's step: each group is clipped on its own."""
    cfg = _cfg(tmp_path, "text_finetuned")
    state = build_state(cfg)
    calls = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils, "clip_grad_norm_", lambda params, norm: calls.append(list(params)) or real(calls[-1], norm)
    )
    train_step(state, *next_batch(state, TinyClips()))
    groups = [g["params"] for g in state.optimizer.param_groups]
    assert len(groups) == 2 and [len(c) for c in calls] == [len(g) for g in groups]
    assert all(a is b for c, g in zip(calls, groups) for a, b in zip(c, g))
