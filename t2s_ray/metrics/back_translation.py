"""Back-translation: a sign-to-text model (the *translator*) reads the clips and its text is scored against
what the clips should sign, as text-to-sign papers do (Progressive Transformers, SignDiff, T2S-GPT on
PHOENIX-2014T and How2Sign).

The metrics come from the libraries the field uses, so the numbers are comparable with published ones:

- `bleu1` ... `bleu4`: corpus BLEU with n-grams up to 1..4 (`sacrebleu`, its default 13a tokenisation, mixed
  case, exponential smoothing; the signature string is kept in `<metric>_status`), 0-100, higher is better;
- `chrf`: corpus chrF (`sacrebleu`), 0-100, higher is better;
- `rouge_l`: ROUGE-L F1 per sentence, averaged (`rouge-score`, its tokeniser lower-cases and keeps letters and
  digits), scaled to 0-100 as papers print it, higher is better;
- `wer`: corpus word error rate (`jiwer`: word edits / reference words, after lower-casing and removing
  punctuation), lower is better, can exceed 1.

A translator is any callable `translator(clips, language) -> list[str]`: `clips` uint8 (clips x frames x H x W
x 3), `language` the captions' language code (`en`, `de`, ... or "" when unknown), one string per clip. A
study names it as `package.module:attribute`; a class there is instantiated once (with no arguments) and its
instance called, so a model loads once per trial. It is called in batches; whatever it raises, or a wrong
answer (not one string per clip), makes every back-translation metric NaN with the reason.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from t2s_ray.metrics import not_computed

Translator = Callable[[np.ndarray, str], Sequence[str]]

TEXT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "chrf", "rouge_l", "wer")
"""The back-translation metrics, as `eval/<name>`; the real clips' scores as `eval/<name>_real`."""


class TranslatorError(ValueError):
    """The back-translator cannot be loaded or gave an unusable answer; the message names it and the fix."""


def load_translator(spec: str) -> Translator:
    """The callable `spec` (`package.module:attribute`) names; a class is instantiated once (no arguments)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise TranslatorError(
            f"eval.back_translator={spec!r}: expected 'package.module:callable' (a function or class taking "
            "uint8 clips and a language code and returning one string per clip)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TranslatorError(
            f"eval.back_translator={spec!r}: cannot import {module_name!r} ({e}); install it or put its folder "
            "on PYTHONPATH (a sweep ships the study's own folder to its workers)"
        ) from e
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise TranslatorError(f"eval.back_translator={spec!r}: {module_name} has no attribute {attr!r}") from None
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as e:  # the user's constructor: any failure is theirs to read
            raise TranslatorError(f"eval.back_translator={spec!r}: {attr}() failed: {type(e).__name__}: {e}") from e
    if not callable(obj):
        raise TranslatorError(f"eval.back_translator={spec!r}: {attr} is a {type(obj).__name__}, not a callable")
    return obj


def translate(translator: Translator, clips: np.ndarray, language: str, batch_size: int = 32) -> list[str]:
    """`translator` over `clips` in batches of `batch_size`; TranslatorError when an answer is not one string a
    clip (whatever the translator itself raises propagates)."""
    out: list[str] = []
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        texts = translator(batch, language)
        if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) != len(batch):
            got = f"a {type(texts).__name__}" + (f" of {len(texts)}" if isinstance(texts, Sequence) else "")
            raise TranslatorError(f"returned {got} for {len(batch)} clips; return one string per clip")
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise TranslatorError(f"returned a {type(bad).__name__} ({bad!r}) among its texts; return strings")
        out.extend(texts)
    return out


def _wer_transform():
    import jiwer

    return jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
            jiwer.ReduceToListOfListOfWords(),
        ]
    )


def text_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """The back-translation metrics of `hypotheses` against `references` (one each), without the `eval/`
    prefix, each with a `<name>_status` (for BLEU and chrF sacrebleu's signature). NaN with the reason when
    they cannot be computed (no pair; WER when every reference is empty)."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references; pass one each")
    n = len(references)
    if n == 0:
        return {k: v for m in TEXT_METRICS for k, v in ((m, math.nan), (f"{m}_status", "no clips to score"))}
    hyps, refs = list(hypotheses), list(references)
    out: dict[str, Any] = {}
    for order in range(1, 5):
        bleu = BLEU(max_ngram_order=order)
        out[f"bleu{order}"] = float(bleu.corpus_score(hyps, [refs]).score)
        out[f"bleu{order}_status"] = f"ok (N={n}; sacrebleu {bleu.get_signature()})"
    chrf = CHRF()
    out["chrf"], out["chrf_status"] = (
        float(chrf.corpus_score(hyps, [refs]).score),
        f"ok (N={n}; {chrf.get_signature()})",
    )
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    out["rouge_l"] = 100.0 * float(np.mean([scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]))
    out["rouge_l_status"] = f"ok (N={n}; rouge-score ROUGE-L F1, sentence mean x 100)"
    transform = _wer_transform()
    kept = [(r, h) for r, h in zip(refs, hyps) if transform(r) != [[]]]
    if not kept:
        out["wer"], out["wer_status"] = math.nan, "every reference is empty: WER has no words to count"
    else:
        import jiwer

        value = jiwer.wer(
            [r for r, _ in kept], [h for _, h in kept], reference_transform=transform, hypothesis_transform=transform
        )
        dropped = n - len(kept)
        out["wer"] = float(value)
        out["wer_status"] = f"ok (N={len(kept)}; jiwer, lower-cased, punctuation removed)" + (
            f"; {dropped} empty reference(s) left out" if dropped else ""
        )
    return out


def back_translation_metrics(
    translator: Translator | str | None,
    generated: np.ndarray,
    real: np.ndarray | None,
    references: Sequence[str],
    language: str = "",
    batch_size: int = 32,
    unavailable: str = "",
) -> dict[str, Any]:
    """`eval/<metric>` of the generated clips' back-translation against `references`, and `eval/<metric>_real`
    of the real clips' (the translator's own ceiling on the same prompts), each with its `_status`.

    `translator`: a callable, a `module:callable` spec (loaded here), or None (every value NaN with
    `unavailable` as the reason). A translator that fails, on either set, makes that set's values NaN with the
    error; nothing raises."""
    if translator is None:
        return _all_nan(unavailable or "no back-translator: set eval.back_translator=package.module:callable")
    name = translator if isinstance(translator, str) else getattr(translator, "__name__", type(translator).__name__)
    try:
        fn = load_translator(translator) if isinstance(translator, str) else translator
    except TranslatorError as e:
        return _all_nan(str(e))
    out: dict[str, Any] = {}
    for suffix, clips in (("", generated), ("_real", real)):
        if clips is None:
            out.update(_all_nan("no real clips given", suffix))
            continue
        try:
            texts = translate(fn, clips, language, batch_size)
        except Exception as e:  # the user's model: whatever it raises becomes the metrics' reason
            out.update(_all_nan(f"back-translator {name} failed: {type(e).__name__}: {e}", suffix))
            continue
        scores = text_scores(texts, references)
        for m in TEXT_METRICS:
            out[f"eval/{m}{suffix}"], out[f"eval/{m}{suffix}_status"] = scores[m], scores[f"{m}_status"]
    return out


def _all_nan(reason: str, suffix: str | None = None) -> dict[str, Any]:
    """Every metric NaN with `reason`: of one set (`suffix` "" or "_real"), or of both (None)."""
    suffixes = ("", "_real") if suffix is None else (suffix,)
    return not_computed((f"{m}{s}" for m in TEXT_METRICS for s in suffixes), reason)
