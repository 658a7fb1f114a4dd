"""Evaluate given weights: sample a fixed caption set and compute every metric. No Ray here.

Every ablation samples the same captions (a seeded choice of validation clips) with the same
noise, N = `eval.num_videos`, so Fréchet distances compare at equal sample count. A metric that
cannot be computed is NaN with an `eval/<name>_status` string saying why. With `eval.guidance_scale` a
list, every metric is computed at its first scale and the same prompts and noise are also scored at each
listed scale on FVD-SynthSign and text alignment (`guidance_curve`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
import torch

from t2s_ray.data import build_dataset
from t2s_ray.data.synthsign import gloss_word
from t2s_ray.data.video import to_model_input, to_uint8
from t2s_ray.guidance import CURVE_METRICS, HEADLINE_SCALE_KEY, guidance_key
from t2s_ray.metrics import not_computed
from t2s_ray.metrics.back_translation import back_translation_metrics
from t2s_ray.metrics.efficiency import peak_inference_memory_gb, time_inference
from t2s_ray.metrics.frechet import frechet_from_features
from t2s_ray.metrics.fvd import fvd_and_kid
from t2s_ray.metrics.kid import kid
from t2s_ray.metrics.lpips import load_lpips, lpips_video
from t2s_ray.metrics.temporal import motion_ratio, temporal_consistency
from t2s_ray.metrics.text_alignment import gloss_accuracy, gloss_wer, text_alignment
from t2s_ray.t2s.gloss_evaluator import (
    EvaluatorUnavailable,
    clip_features,
    evaluator_config,
    load_or_train_evaluator,
    recognise,
)
from t2s_ray.t2s.training import TrainState, eval_weights


@dataclass
class EvalSet:
    """The fixed prompts: captions, their real clips (uint8 `(N, T, H, W, 3)`) and gloss labels if any."""

    texts: list[str]
    real: np.ndarray
    glosses: Optional[list[tuple[int, ...]]]
    references: Optional[np.ndarray] = None
    """uint8 `(N, K, T, H, W, 3)`: K other real renders of each prompt's sentence (SynthSign), else None."""


@dataclass
class EvalResult:
    """Flat `eval/*` metrics (+ `*_status` strings), the generated clips and the real clips of the same
    prompts, uint8 `(N, T, H, W, 3)`."""

    metrics: dict[str, Any]
    videos: np.ndarray
    texts: list[str]
    real: Optional[np.ndarray] = None


def eval_set(dataset, n: int, seed: int, references: int = 1) -> EvalSet:
    """A seeded choice of `n` clips of `dataset` (with repetition only when it has fewer than `n`).

    With `references` > 1 and a dataset that can render more clips of a sentence (SynthSign's
    `references`), each prompt also gets that many other real renders (for LPIPS).
    """
    if len(dataset) == 0:
        raise ValueError("the evaluation split is empty: evaluation samples its captions from val")
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(dataset), size=n, replace=n > len(dataset)).tolist()
    videos, texts = dataset.get_batch(idx)
    labels = getattr(dataset, "glosses", None)
    glosses = [tuple(labels[i]) for i in idx] if labels is not None else None
    refs = (
        np.stack([dataset.references(i, references) for i in idx])
        if references > 1 and hasattr(dataset, "references")
        else None
    )
    return EvalSet(texts, videos, glosses, refs)


@torch.no_grad()
def sample(state: TrainState, texts: list[str], seed: int, guidance: Optional[float] = None) -> torch.Tensor:
    """DDIM + classifier-free guidance for `texts` with the evaluated weights; float `(N, C, T, H, W)` on CPU.
    `guidance`: the scale (default: the headline `eval.guidance_scale`)."""
    with eval_weights(state) as model:
        return sample_with(model, state, texts, seed, guidance)


def unconditional(state: TrainState) -> bool:
    """Trained on the empty caption alone: sampled without text or guidance, whatever the scale."""
    return state.cfg.diffusion.caption_dropout >= 1


@torch.no_grad()
def sample_with(
    model, state: TrainState, texts: list[str], seed: int, guidance: Optional[float] = None
) -> torch.Tensor:
    """`sample` with `model` as it is (the caller has put the evaluated weights in place)."""
    c, e = state.cfg, state.cfg.eval
    shape = (3, c.data.frames, c.data.height, c.data.width)
    gen = torch.Generator().manual_seed(seed)
    guidance = e.guidance if guidance is None else guidance
    if unconditional(state):
        texts, guidance = [""] * len(texts), 1.0
    out = []
    with state.autocast:
        uncond = model.encode([""])
        for start in range(0, len(texts), e.batch_size):
            batch = texts[start : start + e.batch_size]
            x = state.diffusion.ddim_sample(
                model, (len(batch), *shape), model.encode(batch), uncond, e.sampling_steps, guidance, gen, state.device
            )
            out.append(x.float().cpu())
    return torch.cat(out)


def _nan(name: str, status: str) -> dict[str, Any]:
    return not_computed((name,), status)


def _cost_metrics(state: TrainState, text: str) -> dict[str, Any]:
    """Inference time per video (median of 3 after a warm-up) and the memory sampling adds (CUDA)."""
    with eval_weights(state) as model:  # swapped once, outside the timer: the same work for EMA and raw arms

        def one() -> torch.Tensor:
            return sample_with(model, state, [text], seed=0)

        timing = time_inference(one, state.device, warmup=1, runs=3)
        peak, status = peak_inference_memory_gb(one, state.device)
    return {
        "eval/inference_ms_per_video": timing["ms_median"],
        "eval/inference_peak_mem_gb": peak,
        "eval/inference_peak_mem_gb_status": status,
    }


def _lpips(fake: torch.Tensor, real: torch.Tensor, references: Optional[np.ndarray], model, status: str):
    """LPIPS of each generated clip against the real renders of its sentence (mean over K), else its one real clip.

    One render is dominated by appearance (look, timing); the mean over several renders is not.
    """
    if model is None:
        return _nan("lpips", status)
    if references is None:
        return {"eval/lpips": lpips_video(model, fake, real), "eval/lpips_status": f"{status} (one real clip each)"}
    k = references.shape[1]
    value = sum(lpips_video(model, fake, to_model_input(references[:, j])) for j in range(k)) / k
    return {"eval/lpips": value, "eval/lpips_status": f"{status} (mean over K={k} real renders of each sentence)"}


def _lpips_metrics(
    fake: torch.Tensor, real: torch.Tensor, references: Optional[np.ndarray], lpips_model, lpips_status: str
) -> dict[str, Any]:
    out = _lpips(fake, real, references, lpips_model, lpips_status)
    value, name, status = temporal_consistency(fake, lpips_model)
    out.update({f"eval/{name}": value, f"eval/{name}_status": status})
    # the real clips' value is the reference: a frozen video scores 1, so the closest to real wins
    out[f"eval/{name}_real"] = temporal_consistency(real, lpips_model)[0]
    if name != "temporal_consistency":
        out.update(_nan("temporal_consistency", f"LPIPS unavailable ({lpips_status}); see eval/{name}"))
    ratio, status = motion_ratio(fake, real)
    out.update({"eval/motion_ratio": ratio, "eval/motion_ratio_status": status})
    return out


def default_evaluator_fn(eval_cfg) -> Callable:
    """The cached (or trained once) SynthSign gloss classifier with the settings of `eval_cfg`."""
    return lambda data_cfg, device: load_or_train_evaluator(data_cfg, device, evaluator_config(eval_cfg))


@dataclass
class GlossJudge:
    """The SynthSign gloss classifier with what it needs to score generated clips of the prompts: their gloss
    labels and the real clips' features (computed once; None when N < 2 leaves no Fréchet distance)."""

    classifier: Any
    glosses: list[tuple[int, ...]]
    real_features: Optional[np.ndarray]

    def score(self, fake_u8: np.ndarray) -> tuple[float, list, Optional[np.ndarray]]:
        """`(fvd_synthsign, predicted glosses, fake features)` of generated uint8 clips of the prompts."""
        fake = None if self.real_features is None else clip_features(self.classifier, fake_u8)
        distance = math.nan if fake is None else frechet_from_features(self.real_features, fake)
        return distance, recognise(self.classifier, fake_u8), fake


GLOSS_METRICS = ("fvd_synthsign", "kid_synthsign", "text_alignment", "gloss_accuracy", "gloss_wer")
"""The metrics that need the gloss classifier (NaN with its reason when there is none)."""


def gloss_judge(state: TrainState, prompts: EvalSet, evaluator_fn) -> GlossJudge | str:
    """The gloss judge of the prompts, or the reason the gloss metrics cannot be computed."""
    try:
        classifier, _ = evaluator_fn(state.cfg.data, state.device)
    except EvaluatorUnavailable as e:
        return str(e)
    if not prompts.glosses or not all(prompts.glosses):
        return "the evaluation clips have no gloss labels"
    real = clip_features(classifier, prompts.real) if len(prompts.texts) >= 2 else None
    return GlossJudge(classifier, prompts.glosses, real)


def _gloss_metrics(state: TrainState, prompts: EvalSet, fake_u8: np.ndarray, judge: GlossJudge | str) -> dict[str, Any]:
    """`fvd_synthsign`, `text_alignment` and the gloss scores with the SynthSign gloss classifier."""
    if isinstance(judge, str):
        return not_computed(GLOSS_METRICS, judge)
    out: dict[str, Any] = {}
    n = len(prompts.texts)
    distance, predicted, fake_features = judge.score(fake_u8)
    if judge.real_features is not None:
        out["eval/fvd_synthsign"] = distance
        out["eval/fvd_synthsign_status"] = f"ok (N={n} real, {n} fake; gloss-classifier features)"
        out["eval/feature_dim_synthsign"] = judge.real_features.shape[1]
        out.update(_real_floor(state, judge.classifier, judge.real_features))
        out["eval/kid_synthsign"], out["eval/kid_synthsign_sd"] = kid(judge.real_features, fake_features)
        out["eval/kid_synthsign_status"] = (
            f"ok (N={n} real, {n} fake; unbiased, sd over half-size subsets)"
            if n >= 4
            else "KID needs eval.num_videos >= 4"
        )
        out["eval/kid_synthsign_sd_status"] = out["eval/kid_synthsign_status"]
    else:
        out.update(_nan("fvd_synthsign", "needs eval.num_videos >= 2"))
        out.update(_nan("kid_synthsign", "needs eval.num_videos >= 4"))
        out.update(_nan("kid_synthsign_sd", "needs eval.num_videos >= 4"))
    out["eval/text_alignment"] = text_alignment(predicted, prompts.glosses)
    out["eval/text_alignment_real"] = text_alignment(recognise(judge.classifier, prompts.real), prompts.glosses)
    out["eval/text_alignment_chance"] = chance_alignment(prompts.glosses)
    out["eval/gloss_accuracy"] = gloss_accuracy(predicted, prompts.glosses)
    out["eval/gloss_wer"] = gloss_wer(predicted, prompts.glosses)
    return out


class GlossTranslator:
    """The built-in back-translator on SynthSign: the gloss classifier reads each clip's glosses and writes them
    as the words of the captions (`thank you`). Its text is scored against the glosses' words of each prompt
    (`signed_texts`): the clip signs the glosses, not the caption's phrasing around them."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.__name__ = "the built-in SynthSign gloss translator"

    def __call__(self, clips: np.ndarray, language: str) -> list[str]:
        return [" ".join(gloss_word(g) for g in glosses) for glosses in recognise(self.classifier, clips)]


DATASET_LANGUAGES = {"synthsign": "en", "how2sign": "en", "phoenix": "de", "manifest": ""}
"""`eval.language=auto`: the captions' language of each dataset format (a manifest's is not known)."""


def signed_texts(prompts: EvalSet) -> list[str]:
    """What each prompt's clip signs, the back-translation's reference: the glosses' words where the prompts
    have gloss labels (SynthSign), else the captions."""
    if prompts.glosses and all(prompts.glosses):
        return [" ".join(gloss_word(g) for g in glosses) for glosses in prompts.glosses]
    return list(prompts.texts)


def _back_translation(state: TrainState, prompts: EvalSet, fake_u8: np.ndarray, judge: GlossJudge | str) -> dict:
    """`eval/bleu1..4`, `chrf`, `rouge_l`, `wer` of the generated clips and (`_real`) of the prompts' real clips,
    through `eval.back_translator` (see `t2s_ray.metrics.back_translation`)."""
    e, d = state.cfg.eval, state.cfg.data
    language = DATASET_LANGUAGES.get(d.spec.split(":", 1)[0], "") if e.language == "auto" else e.language
    translator, unavailable = None, "off (eval.back_translator=none)"
    if e.back_translator == "auto":
        if isinstance(judge, GlossJudge):
            translator = GlossTranslator(judge.classifier)
        else:
            unavailable = (
                f"no back-translator: the built-in one reads SynthSign glosses ({judge}); set "
                "eval.back_translator=package.module:callable to your sign-to-text model"
            )
    elif e.back_translator != "none":
        translator = e.back_translator
    return back_translation_metrics(
        translator, fake_u8, prompts.real, signed_texts(prompts), language, e.batch_size, unavailable
    )


def _real_floor(state: TrainState, classifier, real_features: np.ndarray) -> dict[str, Any]:
    """`fvd_synthsign_real`: the distance between the real prompts (val; their `real_features`) and as
    many real test clips, the floor of `fvd_synthsign` at this N (Fréchet distances are biased by N)."""
    n = len(real_features)
    test = eval_set(build_dataset(state.cfg.data, "test"), n, eval_seed(state.cfg))
    value = frechet_from_features(real_features, clip_features(classifier, test.real))
    return {
        "eval/fvd_synthsign_real": value,
        "eval/fvd_synthsign_real_status": f"ok (N={n} val vs {n} test real clips: the floor at this N)",
    }


def eval_seed(cfg) -> int:
    """The seed of a trial's evaluation prompts and sampling noise: from `eval.seed` and the trial seed, so arms of
    one seed are paired on the same draw and seeds differ (a seed 0 trial keeps `eval.seed` itself)."""
    return int(cfg.eval.seed) + 1_000_003 * int(cfg.seed)


def chance_alignment(glosses: list[tuple[int, ...]]) -> float:
    """The best text alignment a caption-blind generator can expect: the share of the commonest prompt sentence.

    A generator that ignores the caption signs sentence s with some probability p(s) whatever the
    prompt, so it matches sum_s p(s) freq(s) <= max_s freq(s) of the prompts.
    """
    return Counter(map(tuple, glosses)).most_common(1)[0][1] / len(glosses)


def evaluate(
    state: TrainState, dataset, evaluator_fn: Optional[Callable] = None, lpips: Optional[tuple] = None
) -> EvalResult:
    """Sample the fixed prompts of `dataset` with the evaluated weights and compute every metric.

    `evaluator_fn(data_cfg, device) -> (classifier, report)` gives the gloss classifier (default:
    the cached/trained SynthSign one); `lpips` = `(model_or_None, status)` (default: `load_lpips()`).
    """
    e = state.cfg.eval
    lpips_model, lpips_status = lpips if lpips is not None else load_lpips()
    if lpips_model is not None:
        lpips_model = lpips_model.to(state.device)
    # the extra real renders only serve LPIPS: none without it
    seed = eval_seed(state.cfg)
    prompts = eval_set(dataset, e.num_videos, seed, references=e.lpips_references if lpips_model is not None else 1)
    fake = sample(state, prompts.texts, seed)
    fake_u8 = to_uint8(fake)
    real = to_model_input(prompts.real)
    judge = gloss_judge(state, prompts, evaluator_fn or default_evaluator_fn(e))
    metrics: dict[str, Any] = {"eval/num_videos": len(prompts.texts)}
    metrics.update(fvd_and_kid(real, fake, e.fvd_detector, state.device))
    metrics.update(_gloss_metrics(state, prompts, fake_u8, judge))
    metrics.update(_back_translation(state, prompts, fake_u8, judge))
    metrics.update(_lpips_metrics(fake, real, prompts.references, lpips_model, lpips_status))
    metrics.update(_cost_metrics(state, prompts.texts[0]))
    metrics.update(guidance_curve(state, prompts, judge, metrics))
    return EvalResult(metrics, fake_u8, prompts.texts, prompts.real)


def guidance_curve(
    state: TrainState, prompts: EvalSet, judge: GlossJudge | str, headline: dict[str, Any]
) -> dict[str, Any]:
    """`eval/guidance/<scale>/{fvd_synthsign,text_alignment}` for each scale of `eval.guidance_scale`'s list
    (none for a single number), and the headline scale.

    Every scale samples the same prompts with the same noise (`eval_seed`), so the curve is paired; only the
    two curve metrics are computed, against the real features `judge` holds. A scale that samples what the
    headline did (the headline scale itself; any scale of an unconditional model) reuses the `headline`
    metrics; without a judge every value is NaN and `eval/<metric>_status` says why.
    """
    e = state.cfg.eval
    if not e.guidance_sweep:
        return {}
    out: dict[str, Any] = {HEADLINE_SCALE_KEY: e.guidance}
    with eval_weights(state) as model:  # swapped once for every scale
        for scale in e.guidance_sweep:
            if isinstance(judge, str) or scale == e.guidance or unconditional(state):
                values = {m: headline[f"eval/{m}"] for m in CURVE_METRICS}  # NaN without a judge
            else:
                fake_u8 = to_uint8(sample_with(model, state, prompts.texts, eval_seed(state.cfg), guidance=scale))
                distance, predicted, _ = judge.score(fake_u8)
                values = {"fvd_synthsign": distance, "text_alignment": text_alignment(predicted, judge.glosses)}
            out.update({guidance_key(scale, m): values[m] for m in CURVE_METRICS})
    return out
