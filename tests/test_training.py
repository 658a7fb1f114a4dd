"""Training-state contract: complete checkpoints, bit-exact resume, clear failures."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import t2s_ray.t2s.training as tr
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
    train_loop,
    train_step,
)
from tests.helpers import Clips, set_args, tiny_overrides

TINY = tiny_overrides(
    "data.train_clips=8",
    "model.size=dit-tiny",
    "model.patch_size=4",
    "training.steps=6",
    "training.report_every=1",
    "training.checkpoint_every=3",
    drop=("eval.sampling_steps", "eval.evaluator_clips", "eval.evaluator_epochs"),
)


def _cfg(tmp_path, ablation="baseline", extra=()):
    return resolve(ablation, "smoke", 0, tiny_overrides(f"data.cache_dir={tmp_path / 'cache'}", *extra, base=TINY))


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
    data = Clips.random()
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
    data = Clips.random()
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


def _train_cli(*runs: tuple[Path, int], cache: Path, ablation="baseline") -> None:
    """`t2s-ray train` into each (out, steps) of `runs`, all at once (one torch thread each: two cores)."""
    procs = [
        subprocess.Popen(
            _train_cmd(out, steps, cache, ablation),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for out, steps in runs
    ]
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0, out
    finally:
        for proc in procs:  # none outlives a timeout or a failure
            proc.kill()


def _train_cmd(out: Path, steps: int, cache: Path, ablation: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "t2s_ray.cli",
        "train",
        ablation,
        "--steps",
        str(steps),
        "--out",
        str(out),
        *set_args([*TINY, f"data.cache_dir={cache}"]),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("ablation", ["baseline", "text_finetuned"])
def test_resume_in_a_fresh_process_is_bit_exact(tmp_path, ablation, data_cache):
    """k steps + save, then a new process loads and trains to N == N steps straight (CPU)."""
    cache = data_cache  # the clips and caption encodings built once for both ablations
    _train_cli((tmp_path / "split", 3), (tmp_path / "straight", 6), cache=cache, ablation=ablation)
    _train_cli((tmp_path / "split", 6), cache=cache, ablation=ablation)
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
    data = Clips.random()
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
    data = Clips.random()
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*ablation baseline"):
        train_local(cfg, tmp_path / "run", dataset=data, text_encoder=text_encoder)


def test_out_of_memory_message_names_batch_and_checkpointing(tmp_path, text_encoder, monkeypatch):
    import t2s_ray.t2s.training as tr

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tr, "train_inputs_step", oom)
    with pytest.raises(TrainingError, match=r"training.batch_size=2.*grad_checkpointing"):
        train_local(_cfg(tmp_path), tmp_path / "run", dataset=Clips.random(), text_encoder=text_encoder)


def test_train_local_writes_metrics_and_prunes_checkpoints(tmp_path, text_encoder):
    cfg = _cfg(tmp_path, extra=["training.keep_checkpoints=1"])
    run = train_local(cfg, tmp_path / "run", dataset=Clips.random(), text_encoder=text_encoder)
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
    train_step(state, *next_batch(state, Clips.random()))
    groups = [g["params"] for g in state.optimizer.param_groups]
    assert len(groups) == 2 and [len(c) for c in calls] == [len(g) for g in groups]
    assert all(a is b for c, g in zip(calls, groups) for a, b in zip(c, g))


# --- the step's prologue drawn ahead (Prefetcher), compilation, attention --------------------------


def _step_by_step(cfg, text_encoder, data, steps):
    state = build_state(cfg, text_encoder=text_encoder)
    for _ in range(steps):
        train_step(state, *next_batch(state, data))
    return state


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "helper-thread"])
def test_inputs_drawn_ahead_train_the_weights_of_a_step_by_step_run_bit_for_bit(tmp_path, text_encoder, threaded):
    """The training loop draws step k+1's batch, caption dropout, timesteps and noise while step k runs (on a
    helper thread on CUDA); the draws keep their order, so the weights, the generator and the data position
    are those of the plain step-by-step loop. A checkpoint taken at step 3 while step 4's inputs are already
    drawn stores the generator from before them: resuming from it ends on the same weights too."""
    cfg = _cfg(tmp_path, extra=["diffusion.caption_dropout=0.5"])  # dropout draws in the stream as well
    data = Clips.random()
    reference = _step_by_step(cfg, text_encoder, data, 6)

    state = build_state(cfg, text_encoder=text_encoder)
    saved = []

    def report(metrics, checkpoint_now):
        if state.step == 3:
            assert state.rng_checkpoint is not None  # step 4's inputs were drawn ahead
            save_state(state, tmp_path / "ckpt")
            saved.append(state.generator.get_state())

    real_prefetcher = tr.Prefetcher
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tr, "Prefetcher", lambda *a, **k: real_prefetcher(*a, **k, threaded=threaded))
        train_loop(state, data, report)
    for k, v in _weights(reference).items():
        assert torch.equal(v, state.model.state_dict()[k]), k
    assert torch.equal(state.generator.get_state(), reference.generator.get_state())
    assert (state.step, state.epoch, state.data_pos) == (reference.step, reference.epoch, reference.data_pos)
    assert state.rng_checkpoint is None

    at_three = _step_by_step(cfg, text_encoder, data, 3)
    sd, _ = read_checkpoint(tmp_path / "ckpt")
    assert torch.equal(sd["rng"]["generator"], at_three.generator.get_state())
    assert not torch.equal(saved[0], at_three.generator.get_state())  # the live generator was already ahead
    resumed = build_state(cfg, text_encoder=text_encoder)
    load_state(resumed, tmp_path / "ckpt")
    train_loop(resumed, data, lambda m, c: None)
    for k, v in _weights(reference).items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


@pytest.mark.parametrize("threaded", [False, True], ids=["inline", "helper-thread"])
def test_a_paused_or_failed_loop_puts_back_the_draws_no_step_used(tmp_path, text_encoder, threaded):
    cfg = _cfg(tmp_path)
    data = Clips.random()
    paused = build_state(cfg, text_encoder=text_encoder)
    train_loop(paused, data, lambda m, c: None, stop_at=4)  # the 4th step draws nothing ahead
    assert torch.equal(paused.generator.get_state(), _step_by_step(cfg, text_encoder, data, 4).generator.get_state())

    failed = build_state(cfg, text_encoder=text_encoder)

    def report(metrics, checkpoint_now):
        if failed.step == 2:
            raise RuntimeError("the report failed")

    with pytest.raises(RuntimeError, match="the report failed"):
        with pytest.MonkeyPatch.context() as mp:
            real_prefetcher = tr.Prefetcher
            mp.setattr(tr, "Prefetcher", lambda *a, **k: real_prefetcher(*a, **k, threaded=threaded))
            train_loop(failed, data, report)
    at_two = _step_by_step(cfg, text_encoder, data, 2)
    assert torch.equal(failed.generator.get_state(), at_two.generator.get_state())  # step 3's draws undone
    assert (failed.epoch, failed.data_pos, failed.rng_checkpoint) == (at_two.epoch, at_two.data_pos, None)


def test_the_schedule_tables_are_copied_to_a_device_once(tmp_path):
    from t2s_ray.t2s.diffusion import GaussianDiffusion

    d = GaussianDiffusion(100)
    x = torch.zeros(2, 3)
    first = d._table("sqrt_ac", x)
    assert d._table("sqrt_ac", x) is first and first.dtype == torch.float32
    assert d._table("sqrt_ac", x.double()).dtype == torch.float64


def test_the_additive_caption_mask_gives_the_bool_masks_attention(text_encoder):
    """Cross-attention takes a (B, 1, 1, L) additive bias (0 / -inf) made once per forward instead of a bool
    mask: the same attention as the bool mask it replaced, with the padded keys weighted exactly 0."""
    import torch.nn.functional as F

    from t2s_ray.t2s.models.dit import CrossAttention, attention_bias

    torch.manual_seed(0)
    attn = CrossAttention(32, 24, heads=4)
    x, context = torch.randn(3, 10, 32), torch.randn(3, 7, 24)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4, [True] * 5 + [False] * 2])
    out = attn(x, context, attention_bias(mask, x.dtype))
    q = attn.q(x).view(3, 10, 4, 8).transpose(1, 2)
    k, v = attn.kv(context).view(3, 7, 2, 4, 8).permute(2, 0, 3, 1, 4)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    ref = attn.proj(ref.transpose(1, 2).reshape(3, 10, 32))
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    changed = context.clone()
    changed[1, 3:] += 100.0  # padding of caption 1: no influence
    torch.testing.assert_close(attn(x, changed, attention_bias(mask, x.dtype))[1], out[1], rtol=0, atol=0)


@pytest.mark.parametrize("ablation", ["baseline", "text_finetuned"])
def test_captions_padded_to_a_fixed_length_give_the_unpadded_prediction(tmp_path, text_encoder, ablation):
    """A compiled model pads every caption to text_encoder.max_length tokens (static shapes). The frozen
    encoder's cached states are the same, zero-padded; the finetuned encoder runs over the padding with the
    attention mask. Either way the DiT's prediction is the unpadded one within 1e-5."""
    cfg = _cfg(tmp_path, ablation)
    state = build_state(cfg, text_encoder=text_encoder if ablation == "baseline" else None)
    enc = state.model.text_encoder
    texts = ["hello", "a person signs word 3 and more words"]
    x, t = torch.randn(2, 3, 4, 16, 16), torch.tensor([10, 500])
    try:
        _compare_padded(cfg, state, enc, texts, x, t)
    finally:
        enc.pad_to = None  # the session's shared encoder


def _compare_padded(cfg, state, enc, texts, x, t):
    with torch.no_grad():
        plain = enc(texts)
        enc.pad_to = cfg.text_encoder.max_length
        padded = enc(texts)
        assert padded.tokens.shape[1] == cfg.text_encoder.max_length > plain.tokens.shape[1]
        assert (
            torch.equal(padded.mask[:, : plain.mask.shape[1]], plain.mask)
            and not padded.mask[:, plain.mask.shape[1] :].any()
        )
        torch.testing.assert_close(
            padded.tokens[:, : plain.tokens.shape[1]][plain.mask], plain.tokens[plain.mask], rtol=1e-5, atol=1e-5
        )
        torch.testing.assert_close(padded.pooled, plain.pooled, rtol=1e-5, atol=1e-5)
        for block in state.model.dit.blocks:  # the zero-initialised cross-attention output would hide a difference
            torch.nn.init.normal_(block.cross.proj.weight, std=0.2)
            torch.nn.init.normal_(block.adaLN[-1].weight, std=0.2)
        torch.nn.init.normal_(state.model.dit.final.linear.weight, std=0.2)
        out_plain, out_padded = state.model(x, t, plain), state.model(x, t, padded)
    assert out_plain.abs().mean() > 0.01
    torch.testing.assert_close(out_padded, out_plain, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_compiled_blocks_have_no_graph_break_and_train_as_the_eager_ones(tmp_path, text_encoder):
    """training.compile=on compiles each DiT block with torch.compile (inductor, here on the CPU):
    - torch._dynamo.explain finds one graph and no graph break in a block;
    - two training steps from the same start: losses within 1e-5 relative and every gradient of the first
      step within 1e-4 (float32 kernels fused in another order), compiled against eager;
    - the FLOPs the loop counts come from the eager module and equal an uncompiled run's."""
    try:
        _compare_compiled(tmp_path, text_encoder)
    finally:
        text_encoder.pad_to = None  # the session's shared encoder: build_state padded it for the compiled model


def _compare_compiled(tmp_path, text_encoder):
    cfg = _cfg(tmp_path, extra=["training.compile=on"])
    eager_cfg = _cfg(tmp_path, extra=["training.compile=off"])
    data = Clips.random()
    compiled, eager = build_state(cfg, text_encoder=text_encoder), build_state(eager_cfg, text_encoder=text_encoder)
    assert compiled.model.dit._compiled and eager.model.dit._compiled is None
    assert compiled.model.text_encoder.pad_to == cfg.text_encoder.max_length
    eager.model.text_encoder.pad_to = cfg.text_encoder.max_length  # the same padded shapes (set back below)

    dit = compiled.model.dit
    text = compiled.model.encode(["a person signs word 1", "hi"])
    h = torch.randn(2, cfg.data.frames, dit.grid[0] * dit.grid[1], dit.blocks[0].norm_s.normalized_shape[0])
    explained = torch._dynamo.explain(dit.blocks[0])(h, torch.randn(2, h.shape[-1]), text.tokens, _bias(text))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons

    grads = []
    for state in (compiled, eager):
        losses = []
        for i in range(2):
            losses.append(train_step(state, *next_batch(state, data)).item())
            if i == 0:
                grads.append({n: p.grad.clone() for n, p in state.model.named_parameters() if p.grad is not None})
        state.losses = losses
    assert compiled.losses == pytest.approx(eager.losses, rel=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], rtol=1e-4, atol=1e-6, msg=name)

    counted = []
    for state in (build_state(cfg, text_encoder=text_encoder), build_state(eager_cfg, text_encoder=text_encoder)):
        state.model.text_encoder.pad_to = cfg.text_encoder.max_length
        train_loop(state, data, lambda m, c: counted.append(m["perf/flops_per_step"]), stop_at=1)
    assert counted[0] == counted[1] > 0


def _bias(text):
    from t2s_ray.t2s.models.dit import attention_bias

    return attention_bias(text.mask, torch.float32)
