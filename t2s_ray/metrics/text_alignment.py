"""Text alignment (back-translation): do the glosses recognised in a generated clip match its prompt?

The recogniser is passed in by the caller (on SynthSign: `GlossClassifier.predict`); these are
pure functions of the recognised and the prompted gloss sequences.
"""

from __future__ import annotations

from typing import Sequence


def _check_pairs(predicted: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> None:
    if len(predicted) != len(targets):
        raise ValueError(f"got {len(predicted)} predicted sequences for {len(targets)} targets")
    if not targets:
        raise ValueError("text alignment of zero clips is undefined: pass at least one (prediction, target) pair")
    if any(len(t) == 0 for t in targets):
        raise ValueError("every target needs at least one gloss; got an empty target sequence")


def text_alignment(predicted: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
    """Fraction of clips whose recognised gloss sequence equals the prompt's exactly (order and length)."""
    _check_pairs(predicted, targets)
    return sum(tuple(p) == tuple(t) for p, t in zip(predicted, targets)) / len(targets)


def gloss_accuracy(predicted: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
    """Mean over clips of the fraction of the target's positions recognised correctly.

    Softer than `text_alignment`: (A, B, X) for target (A, B, C) scores 2/3. Predicted glosses
    beyond the target's length are not counted.
    """
    _check_pairs(predicted, targets)
    per_clip = [sum(i < len(p) and p[i] == g for i, g in enumerate(t)) / len(t) for p, t in zip(predicted, targets)]
    return sum(per_clip) / len(per_clip)


def gloss_wer(predicted: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
    """Word error rate over glosses: total edit distance (substitutions, insertions, deletions) / target glosses,
    by `jiwer` (each gloss id one word), the library that scores back-translation WER too.

    Unlike `gloss_accuracy`, one inserted gloss costs one error instead of shifting every later position.
    Lower is better; can exceed 1 when the recogniser reads many extra glosses.
    """
    import jiwer

    _check_pairs(predicted, targets)
    words = lambda seqs: [" ".join(f"g{g}" for g in seq) for seq in seqs]
    return float(jiwer.wer(words(targets), words(predicted)))
