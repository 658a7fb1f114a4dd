"""Back-translation metrics through a pluggable translator and pose DTW-MJE: known inputs, known answers (checked
against the libraries and by hand)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from t2s_ray.metrics.back_translation import (
    TEXT_METRICS,
    TranslatorError,
    back_translation_metrics,
    load_translator,
    text_scores,
    translate,
)
from t2s_ray.metrics.poses import dtw_mje, pose_metrics, pose_scale, read_pose
from t2s_ray.metrics.text_alignment import gloss_wer
from tests import fake_translator
from tests.fake_translator import WORDS


def clips_of(values, frames=2, size=4) -> np.ndarray:
    """uint8 clips, clip k filled with values[k] (the fake translator reads it as WORDS[values[k]])."""
    return np.stack([np.full((frames, size, size, 3), v, dtype=np.uint8) for v in values])


# --- the text metrics ----------------------------------------------------------------------------------


def test_perfect_back_translations_score_the_bounds():
    refs = ["hello", "thank you", "good morning friend", "see you later today"]
    s = text_scores(refs, refs)
    assert [s[f"bleu{n}"] for n in (1, 2, 3, 4)] == pytest.approx([100.0] * 4)
    assert (s["chrf"], s["rouge_l"], s["wer"]) == pytest.approx((100.0, 100.0, 0.0))
    assert "sacrebleu nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in s["bleu4_status"]


def test_known_translations_give_the_libraries_numbers_and_a_hand_computed_wer():
    """Hypotheses with one substitution, one deletion and one insertion against 9 reference words: WER 3/9 (by
    hand); BLEU-n and chrF equal sacrebleu's corpus scores, ROUGE-L the mean of rouge-score's F1 x 100, and
    punctuation and case do not count in WER."""
    refs = ["a person signs hello", "thank you very much", "good"]
    hyps = ["A person signs goodbye.", "thank you much", "good morning"]
    s = text_scores(hyps, refs)
    assert s["wer"] == pytest.approx(3 / 9)
    for n in (1, 2, 3, 4):
        assert s[f"bleu{n}"] == pytest.approx(BLEU(max_ngram_order=n).corpus_score(hyps, [refs]).score)
    assert s["chrf"] == pytest.approx(CHRF().corpus_score(hyps, [refs]).score)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = 100 * np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)])
    assert s["rouge_l"] == pytest.approx(expected)
    # ROUGE-L F1 by hand for the second pair: LCS "thank you much" = 3, P = 3/3, R = 3/4 -> F1 = 6/7
    assert scorer.score(refs[1], hyps[1])["rougeL"].fmeasure == pytest.approx(6 / 7)
    assert 0 < s["bleu4"] < s["bleu1"] < 100


def test_text_scores_edge_cases():
    empty = text_scores([], [])
    assert all(math.isnan(empty[m]) and empty[f"{m}_status"] == "no clips to score" for m in TEXT_METRICS)
    blank = text_scores(["hello", "x"], ["", "..."])  # no reference word at all: WER is undefined
    assert math.isnan(blank["wer"]) and "every reference is empty" in blank["wer_status"]
    some = text_scores(["hello", "x"], ["hello", ""])
    assert some["wer"] == 0.0 and "1 empty reference(s) left out" in some["wer_status"]
    nothing_read = text_scores(["", ""], ["hello there", "thank you"])  # a translator that reads nothing
    assert nothing_read["wer"] == 1.0 and nothing_read["bleu1"] == 0.0 and nothing_read["rouge_l"] == 0.0
    with pytest.raises(ValueError, match="2 hypotheses for 1 references"):
        text_scores(["a", "b"], ["a"])


def test_gloss_wer_is_jiwers_word_error_rate_of_gloss_ids():
    # (1, 2, 3) read as (1, 3): one deletion; (4,) read as (5, 4): one insertion -> 2 errors / 4 target glosses
    assert gloss_wer([(1, 3), (5, 4)], [(1, 2, 3), (4,)]) == pytest.approx(0.5)
    assert gloss_wer([(), (4,)], [(1, 2), (4,)]) == pytest.approx(2 / 3)  # nothing read: every gloss deleted


# --- the translator plug-in ------------------------------------------------------------------------------


def test_a_translator_named_module_callable_scores_generated_and_real_clips():
    """`tests.fake_translator:Reader`: a class, instantiated once, called in batches with the language; the
    generated clips read two of four prompts right, the real clips all four (the reference row). BLEU-4 needs a
    4-word reference to be above 0: "good morning my friend"."""
    fake_translator.Reader.instances, fake_translator.Reader.calls = 0, []
    refs = [WORDS[k] for k in (0, 1, 2, 3)]
    generated, real = clips_of([0, 5, 2, 6]), clips_of([0, 1, 2, 3])
    m = back_translation_metrics("tests.fake_translator:Reader", generated, real, refs, "de", batch_size=3)
    assert fake_translator.Reader.instances == 1 and fake_translator.Reader.calls == [(3, "de"), (1, "de")] * 2
    expected = text_scores([WORDS[k] for k in (0, 5, 2, 6)], refs)
    for name in TEXT_METRICS:
        assert m[f"eval/{name}"] == pytest.approx(expected[name]), name
        assert m[f"eval/{name}_status"] == expected[f"{name}_status"]
    assert m["eval/bleu4_real"] == pytest.approx(100.0) and m["eval/wer_real"] == 0.0
    # 2 of 4 references read right: "thank you" (2 words) -> "yes", "please" -> "no": 3 errors / 8 words
    assert m["eval/wer"] == pytest.approx(3 / 8)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_colon", "expected 'package.module:callable'"),
        ("no_such_module_xyz:read", "cannot import 'no_such_module_xyz'"),
        ("tests.fake_translator:nothing", "has no attribute 'nothing'"),
        ("tests.fake_translator:WORDS", "is a list, not a callable"),
    ],
)
def test_a_translator_that_cannot_be_loaded_makes_every_metric_nan_with_why(spec, message):
    with pytest.raises(TranslatorError, match=message):
        load_translator(spec)
    m = back_translation_metrics(spec, clips_of([0]), clips_of([0]), ["hello"])
    assert all(
        math.isnan(m[f"eval/{n}{s}"]) and message in m[f"eval/{n}{s}_status"]
        for n in TEXT_METRICS
        for s in ("", "_real")
    )


def test_a_translator_that_fails_or_answers_wrongly_gives_nan_with_the_reason():
    m = back_translation_metrics(fake_translator.broken, clips_of([0, 1]), clips_of([0, 1]), WORDS[:2])
    assert math.isnan(m["eval/bleu4"]) and math.isnan(m["eval/wer_real"])
    assert (
        m["eval/bleu4_status"]
        == "back-translator broken failed: RuntimeError: the sign-to-text model ran out of memory"
    )
    m = back_translation_metrics("tests.fake_translator:one_short", clips_of([0, 1]), None, WORDS[:2])
    assert "returned a list of 1 for 2 clips; return one string per clip" in m["eval/chrf_status"]
    assert m["eval/chrf_real_status"] == "no real clips given"
    with pytest.raises(TranslatorError, match="returned a int"):
        translate(lambda clips, lang: [1] * len(clips), clips_of([0]), "en")
    off = back_translation_metrics(
        None, clips_of([0]), clips_of([0]), ["hello"], unavailable="off (eval.back_translator=none)"
    )
    assert off["eval/rouge_l_status"] == "off (eval.back_translator=none)" and math.isnan(off["eval/rouge_l"])


# --- poses ------------------------------------------------------------------------------------------------


def test_dtw_mje_of_a_hand_computed_pair():
    """Two joints in 2-D. The real sequence holds its first pose one frame longer, which DTW absorbs: the path
    pairs generated frame 0 with real frames 0 and 1. Generated frame 2 is off by (3, 4) at joint 0 only:
    per-pair mean joint errors 0, 0, 0, (5 + 0) / 2 = 2.5 -> DTW-MJE 2.5 / 4 pairs = 0.625."""
    base = np.array([[0.0, 0.0], [1.0, 0.0]])
    real = np.stack([base, base, base + [0, 1], base + [0, 2]])
    gen = np.stack([base, base + [0, 1], base + [0, 2]])
    gen[2, 0] += [3.0, 4.0]
    assert dtw_mje(gen, real) == pytest.approx(0.625)
    # the scale: joints 0.5 from their centroid in every frame -> 0.5; nDTW-MJE = 0.625 / 0.5
    assert pose_scale(real) == pytest.approx(0.5)
    m = pose_metrics([gen, real], [real, real])  # the second clip matches exactly: mean (0.625 + 0) / 2
    assert m["eval/dtw_mje"] == pytest.approx(0.3125) and m["eval/ndtw_mje"] == pytest.approx(0.625)
    assert m["eval/dtw_mje_status"].startswith("ok (mean over 2 of 2 clips")


def test_missing_keypoints_and_bad_pose_input():
    base = np.array([[0.0, 0.0], [1.0, 0.0]])
    gen = np.stack([base, base])
    gen[1, 1] = np.nan  # joint 1 missing in frame 1: that pair's error is joint 0's alone
    real = gen.copy()
    real[1, 1] = [5.0, 5.0]
    real[1, 0] += [0.0, 2.0]
    assert dtw_mje(gen, real) == pytest.approx((0 + 2.0) / 2)
    assert math.isnan(pose_metrics(None, None)["eval/dtw_mje"])
    with pytest.raises(ValueError, match="give one per clip each"):
        pose_metrics([gen], [gen, gen])
    with pytest.raises(ValueError, match=r"expected frames x joints x 2 or 3 coordinates, got shape \(2, 2\)"):
        pose_metrics([base], [base])


def test_a_pose_file_reads_as_frames_joints_dims(tmp_path):
    from pose_format.utils.generic import fake_pose

    pose = fake_pose(6)
    path = tmp_path / "clip.pose"
    with open(path, "wb") as f:
        pose.write(f)
    arr = read_pose(path)
    assert arr.shape == (6, pose.body.data.shape[2], 2)
    m = pose_metrics([str(path)], [arr])
    assert m["eval/dtw_mje"] == pytest.approx(0.0, abs=1e-6)


# --- through a user study ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
    steps: int = 2
    lr: float = 1e-3


def _train(cfg: _Cfg, session) -> None:
    for step in range(1, cfg.steps + 1):
        session.log_step(step, 1.0 / step)
    texts = [WORDS[k] for k in (0, 1, 2, 3)]
    base = np.array([[0.0, 0.0], [1.0, 0.0]])
    poses = [np.stack([base, base + [0, 1]])] * 4
    session.evaluate(
        clips_of([0, 5, 2, 6]), clips_of([0, 1, 2, 3]), texts, lpips=False, generated_poses=poses, real_poses=poses
    )


def test_a_study_with_a_translator_by_module_callable_reports_the_text_and_pose_metrics(tmp_path):
    """Study(back_translator='tests.fake_translator:Reader'): `session.evaluate(fake, real, texts)` reports
    BLEU-1..4, chrF, ROUGE-L and WER of the generated clips and of the real ones, and DTW-MJE of the poses, in
    the trial's final metrics (what the tables and the paired statistics read)."""
    from t2s_ray.ablation_runner import train_in_process
    from t2s_ray.study import Study

    study = Study(
        name="bt",
        config=_Cfg,
        train=_train,
        ablations={"baseline": {}, "fast": {"lr": 1e-2}},
        back_translator="tests.fake_translator:Reader",
    )
    final = train_in_process(study, "baseline", None, 0, [], tmp_path / "run")
    expected = text_scores([WORDS[k] for k in (0, 5, 2, 6)], [WORDS[k] for k in (0, 1, 2, 3)])
    for name in TEXT_METRICS:
        assert final[f"eval/{name}"] == pytest.approx(expected[name]), name
    assert final["eval/bleu4_real"] == pytest.approx(100.0) and final["eval/dtw_mje"] == 0.0
    assert "sacrebleu nrefs:1" in final["eval/bleu4_status"]
