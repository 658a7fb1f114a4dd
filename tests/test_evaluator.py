"""The SynthSign evaluator: network contract, deterministic cached training, and the text-alignment metric."""

import dataclasses
import shutil
import threading
import time

import numpy as np
import pytest
import torch

from t2s_ray.data import build_dataset
from t2s_ray.data.synthsign import GLOSSES, split_sentences
from t2s_ray.data.video import to_model_input
from t2s_ray.metrics.text_alignment import gloss_accuracy, text_alignment
from t2s_ray.t2s import gloss_evaluator as evaluator
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.config import DataConfig
from t2s_ray.t2s.gloss_evaluator import (
    EvaluatorConfig,
    EvaluatorUnavailable,
    evaluator_config,
    evaluator_dir,
    evaluator_key,
    load_or_train_evaluator,
    shipped_evaluators,
    train_evaluator,
    training_batches,
)
from t2s_ray.t2s.models.gloss_classifier import GlossClassifier, GlossClassifierArch, ctc_decode, ctc_loss

TINY_EVAL = EvaluatorConfig(train_clips=48, test_clips=8, epochs=1, batch_size=16, widths=(8, 16), feature_dim=16)


def tiny_data(tmp_path, **kw) -> DataConfig:
    return DataConfig(
        **{"frames": 4, "height": 16, "width": 16, "train_clips": 8, "eval_clips": 4, "cache_dir": str(tmp_path), **kw}
    )


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def scale_evaluator(scale: str, cache_dir) -> tuple[DataConfig, EvaluatorConfig]:
    """The data config (cached in `cache_dir`) and evaluator settings a built-in scale's trials use."""
    cfg = resolve("baseline", scale, 0, [])
    return dataclasses.replace(cfg.data, cache_dir=str(cache_dir)), evaluator_config(cfg.eval)


def no_training(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("trained although a shipped evaluator was available")

    monkeypatch.setattr(evaluator, "_fit", boom)


# --- the network ------------------------------------------------------------------------------


def test_classifier_shapes_and_input_check():
    arch = GlossClassifierArch(num_glosses=10, clip_shape=(4, 16, 16), widths=(8, 16), feature_dim=12)
    model = GlossClassifier(arch)
    x = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    assert model.features(x).shape == (2, 12)
    assert model.frame_features(x).shape == (2, 4, 12)
    assert model(x).shape == (2, 4, 11) and model.blank == 10
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 16, 16\)"):
        model(torch.zeros(2, 4, 16, 16, 3))  # channels-last clips, not (B, C, T, H, W)
    with pytest.raises(ValueError, match="clip_shape"):
        GlossClassifierArch(num_glosses=10, clip_shape=(4, 16))
    assert GlossClassifierArch.from_dict(arch.to_dict()) == arch


def test_predict_returns_gloss_tuples_in_order(monkeypatch):
    model = GlossClassifier(GlossClassifierArch(num_glosses=5, clip_shape=(6, 16, 16), widths=(8,), feature_dim=8))
    out = model.predict(torch.zeros(3, 3, 6, 16, 16))
    assert isinstance(out, list) and len(out) == 3
    assert all(
        isinstance(seq, tuple) and len(seq) <= 6 and all(type(g) is int and 0 <= g < 5 for g in seq) for seq in out
    )
    # per-frame winners chosen so that any reordering (in time or across the batch) changes the answer
    blank = model.blank
    frames = [[3, 3, blank, 0, 4, 4], [blank, 2, 2, blank, 2, 1], [1, blank, blank, blank, blank, blank]]
    logits = torch.nn.functional.one_hot(torch.tensor(frames), 6).float()
    monkeypatch.setattr(model, "forward", lambda x: logits)
    assert model.predict(torch.zeros(3, 3, 6, 16, 16)) == [(3, 0, 4), (2, 2, 1), (1,)]


def test_ctc_decode_merges_repeats_and_drops_blanks():
    blank = 4
    frames = [[1, 1, blank, 2, 2, blank, 1], [blank] * 7, [3, 3, 3, 3, 3, 3, 3]]
    logits = torch.nn.functional.one_hot(torch.tensor(frames), 5).float()
    assert ctc_decode(logits, blank) == [(1, 2, 1), (), (3,)]


def test_ctc_loss_is_finite_and_checks_lengths():
    logits = torch.randn(2, 4, 6, requires_grad=True)
    loss = ctc_loss(logits, [(0, 1, 2), (3,)], blank=5)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None
    with pytest.raises(ValueError, match="1..T=4"):
        ctc_loss(logits, [(0, 1, 2, 3, 4), (3,)], blank=5)


# --- training data ----------------------------------------------------------------------------


def test_training_clips_are_fresh_valid_sentences_never_val_or_test(tmp_path):
    cfg = tiny_data(tmp_path)
    ecfg = dataclasses.replace(TINY_EVAL, train_clips=40)
    held_out = set(split_sentences(cfg.seed)["val"]) | set(split_sentences(cfg.seed)["test"])
    ((videos, glosses),) = training_batches(cfg, dataclasses.replace(ecfg, batch_size=40), epoch=0)
    assert videos.shape == (40, 4, 16, 16, 3) and videos.dtype == np.uint8
    assert {len(g) for g in glosses} == {1, 2, 3}
    assert all(0 <= g < len(GLOSSES) for seq in glosses for g in seq)
    assert all(a != b for seq in glosses for a, b in zip(seq, seq[1:]))
    assert not set(glosses) & held_out
    (again,) = training_batches(cfg, dataclasses.replace(ecfg, batch_size=40), epoch=0)
    (other,) = training_batches(cfg, dataclasses.replace(ecfg, batch_size=40), epoch=1)
    assert np.array_equal(again[0], videos) and again[1] == glosses
    assert other[1] != glosses


# --- caching, determinism, locking ------------------------------------------------------------


def test_training_is_deterministic(tmp_path):
    a, _ = load_or_train_evaluator(tiny_data(tmp_path / "a"), "cpu", TINY_EVAL)
    b, _ = load_or_train_evaluator(tiny_data(tmp_path / "b"), "cpu", TINY_EVAL)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_second_call_loads_the_cache_without_training(tmp_path, monkeypatch):
    cfg = tiny_data(tmp_path)
    first = train_evaluator(cfg, TINY_EVAL)
    assert not first.cached and first.device == "cpu" and len(first.train_loss) == TINY_EVAL.epochs

    def boom(*args, **kwargs):
        raise AssertionError("trained although the evaluator was cached")

    monkeypatch.setattr(evaluator, "_fit", boom)
    again = train_evaluator(cfg, TINY_EVAL)
    assert again.cached and again.key == first.key and again.exact_accuracy == first.exact_accuracy
    assert (first.source, again.source) == ("trained", "cache")
    model, report = load_or_train_evaluator(cfg, "cpu", TINY_EVAL)
    assert report["key"] == first.key and report["cached"] and report["source"] == "cache"
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # the trial's own split sizes and cache-free fields do not change which evaluator it gets
    assert evaluator_key(dataclasses.replace(cfg, train_clips=99, eval_clips=7), TINY_EVAL) == first.key


def test_key_follows_content_and_config(tmp_path):
    cfg = tiny_data(tmp_path)
    key = evaluator_key(cfg, TINY_EVAL)
    changed = [
        dataclasses.replace(cfg, frames=5),
        dataclasses.replace(cfg, height=24),
        dataclasses.replace(cfg, width=24),
        dataclasses.replace(cfg, seed=1),
    ]
    assert len({key, *(evaluator_key(c, TINY_EVAL) for c in changed)}) == 5
    assert evaluator_key(cfg, dataclasses.replace(TINY_EVAL, seed=1)) != key
    assert evaluator_dir(cfg, TINY_EVAL) == tmp_path / "evaluator" / key


def test_cache_holds_only_complete_files(tmp_path, monkeypatch):
    cfg = tiny_data(tmp_path)
    folder = evaluator_dir(cfg, TINY_EVAL)

    def crash(*args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(evaluator, "_fit", crash)
    with pytest.raises(RuntimeError, match="mid-training"):
        train_evaluator(cfg, TINY_EVAL)
    assert list(folder.iterdir()) == []
    monkeypatch.undo()
    train_evaluator(cfg, TINY_EVAL)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "report.json"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name, folder.name + ".lock"]
    state = torch.load(folder / "model.pt", weights_only=True)
    assert state["key"] == folder.name and set(state) == {"version", "key", "arch", "state_dict"}


def test_concurrent_callers_train_once(tmp_path, monkeypatch):
    cfg, calls, results = tiny_data(tmp_path), [], []
    real_fit = evaluator._fit

    def counting_fit(*args, **kwargs):
        calls.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(evaluator, "_fit", counting_fit)
    # flock excludes separate open() calls, so threads stand in for Ray trial processes
    threads = [
        threading.Thread(target=lambda: results.append(load_or_train_evaluator(cfg, "cpu", TINY_EVAL)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 3
    first = weights(results[0][0])
    assert all(torch.equal(first[k], weights(m)[k]) for m, _ in results[1:] for k in first)


# --- shipped evaluators ------------------------------------------------------------------------


@pytest.mark.parametrize("scale", ["smoke", "small"])
def test_built_in_scales_evaluators_are_shipped_intact(scale, tmp_path):
    data, ecfg = scale_evaluator(scale, tmp_path)
    key, shipped = evaluator_key(data, ecfg), shipped_evaluators()
    assert key in shipped and shipped[key]["scale"] == scale, (
        f"the {scale} scale's evaluator key is now {key}, which the package does not ship: a change to the "
        f"evaluator, SynthSign or the scale altered it; rerun `python scripts/ship_evaluators.py`"
    )
    for name, digest in shipped[key]["sha256"].items():
        path = evaluator.SHIPPED_DIR / key / name
        assert evaluator._sha256(path.read_bytes()) == digest, f"{path} does not match the manifest"
    assert (evaluator.SHIPPED_DIR / key / "model.pt").stat().st_size < 2_000_000


def test_shipped_evaluator_is_copied_into_the_cache_without_training(tmp_path, monkeypatch):
    no_training(monkeypatch)
    data, ecfg = scale_evaluator("smoke", tmp_path)
    key = evaluator_key(data, ecfg)
    model, report = load_or_train_evaluator(data, "cpu", ecfg)
    assert report["source"] == "shipped" and report["cached"] and report["key"] == key
    folder = tmp_path / "evaluator" / key
    assert report["path"] == str(folder) and sorted(p.name for p in folder.iterdir()) == ["model.pt", "report.json"]
    for name in ("model.pt", "report.json"):
        assert (folder / name).read_bytes() == (evaluator.SHIPPED_DIR / key / name).read_bytes()
    assert not model.training and model.arch.clip_shape == (data.frames, data.height, data.width)
    again = train_evaluator(data, ecfg)  # the cache is the one place it is read from now on
    assert again.source == "cache" and again.exact_accuracy == report["exact_accuracy"]


def test_tampered_shipped_file_is_refused(tmp_path, monkeypatch):
    no_training(monkeypatch)
    data, ecfg = scale_evaluator("smoke", tmp_path / "cache")
    key = evaluator_key(data, ecfg)
    real, shipped = evaluator.SHIPPED_DIR, tmp_path / "shipped"
    shutil.copytree(real, shipped)
    monkeypatch.setattr(evaluator, "SHIPPED_DIR", shipped)
    blob = bytearray((shipped / key / "model.pt").read_bytes())
    blob[len(blob) // 2] ^= 1  # one bit of a weight
    (shipped / key / "model.pt").write_bytes(bytes(blob))
    with pytest.raises(RuntimeError, match=rf"{key}/model\.pt is corrupt.*reinstall"):
        load_or_train_evaluator(data, "cpu", ecfg)
    assert list((tmp_path / "cache" / "evaluator" / key).iterdir()) == []  # nothing half-copied
    shutil.copyfile(real / key / "model.pt", shipped / key / "model.pt")
    (shipped / key / "report.json").unlink()
    with pytest.raises(RuntimeError, match=r"report\.json is missing"):
        train_evaluator(data, ecfg)


def test_other_shapes_train_as_before(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluator, "SHIPPED_DIR", tmp_path / "nothing-shipped")
    assert shipped_evaluators() == {}
    assert train_evaluator(tiny_data(tmp_path), TINY_EVAL).source == "trained"


@pytest.mark.slow
def test_retraining_reproduces_the_shipped_smoke_evaluator(tmp_path):
    # the full retrain is ~4 min on 2 CPU cores (scripts/ship_evaluators.py --verify does it); the
    # first epoch (~30 s) follows the same seeded clips, init and LR schedule, so its mean loss
    # must match the shipped report's to float precision
    data, ecfg = scale_evaluator("smoke", tmp_path)
    key = evaluator_key(data, ecfg)
    shipped = evaluator.cached_report(evaluator.SHIPPED_DIR / key)
    losses = []

    class FirstEpochDone(Exception):
        pass

    def stop_after_first(progress):
        losses.append(progress["train_loss"])
        raise FirstEpochDone

    t0 = time.perf_counter()
    with pytest.raises(FirstEpochDone):
        train_evaluator(data, ecfg, progress=stop_after_first, use_shipped=False)
    print(f"first epoch {losses[0]!r} vs shipped {shipped.train_loss[0]!r} in {time.perf_counter() - t0:.1f} s")
    assert losses[0] == pytest.approx(shipped.train_loss[0], rel=1e-5)


def test_non_synthsign_data_raises(tmp_path):
    for cfg in (tiny_data(tmp_path, spec="how2sign:/data/how2sign"), tiny_data(tmp_path, frames=2)):
        with pytest.raises(EvaluatorUnavailable, match="synthsign|frames"):
            load_or_train_evaluator(cfg, "cpu", TINY_EVAL)
        with pytest.raises(EvaluatorUnavailable):
            train_evaluator(cfg, TINY_EVAL)
    assert not (tmp_path / "evaluator").exists()


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        EvaluatorConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        EvaluatorConfig(lr=0.0)


# --- it learns --------------------------------------------------------------------------------


@pytest.mark.slow
def test_classifier_beats_chance_on_a_tiny_run(tmp_path):
    # ~10 s on 2 CPU cores; measured: exact 0.20, per-gloss 0.34 (chance 1/68 per gloss, ~0 per sentence)
    cfg = tiny_data(tmp_path)
    ecfg = EvaluatorConfig(train_clips=4096, test_clips=128, epochs=2, batch_size=8, lr=2e-3, widths=(16, 32, 64))
    report = train_evaluator(cfg, ecfg)
    assert report.gloss_accuracy > 0.15 and report.exact_accuracy > 0.05
    assert report.position_accuracy[0] > 2 * report.majority_position_accuracy[0]
    # the cached model reads the test split as the report says
    model, _ = load_or_train_evaluator(cfg, "cpu", ecfg)
    test = build_dataset(dataclasses.replace(cfg, eval_clips=128), "test")
    predicted = model.predict(to_model_input(test.videos))
    assert text_alignment(predicted, test.glosses) == pytest.approx(report.exact_accuracy)


# --- the metric -------------------------------------------------------------------------------


def test_text_alignment_and_gloss_accuracy_exact_values():
    targets = [(1, 2, 3), (4,), (5, 6), (7, 8, 9)]
    predicted = [(1, 2, 3), (4, 4), (5,), (7, 0, 9)]
    assert text_alignment(predicted, targets) == 0.25
    # per clip: 3/3, 1/1 (extra glosses not counted), 1/2, 2/3
    assert gloss_accuracy(predicted, targets) == pytest.approx((1 + 1 + 0.5 + 2 / 3) / 4)
    assert text_alignment(targets, targets) == 1.0 and gloss_accuracy([()] * 4, targets) == 0.0
    with pytest.raises(ValueError, match="3 predicted"):
        text_alignment(predicted[:3], targets)
    with pytest.raises(ValueError, match="zero clips"):
        gloss_accuracy([], [])
