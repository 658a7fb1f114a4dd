"""SynthSign: a procedural sign-language dataset that needs no download.

A stick-figure signer (head, torso, two arms, two gloved hands) is rasterised with numpy. Each
gloss is a distinct (location, movement, handshape, hands) combination; a sentence is 1-3 glosses
signed in order and captioned by one of several English phrasings. Everything is a pure function
of `(DataConfig.seed, split, clip index)`; a split is rendered once into
`<cache>/synthsign/<key>/<split>-<n>.npy` (uint8 `(N, T, H, W, 3)`) plus a JSON sidecar with the
captions and gloss labels, and is memory-mapped from then on.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from t2s_ray.data.cache import SPLITS, CachedSplit, cache_root, read_cached
from t2s_ray.data.cache import locked as _locked
from t2s_ray.data.config import DataConfig
from t2s_ray.io import atomic_path as _atomic_path
from t2s_ray.io import content_hash as _content_hash

log = logging.getLogger(__name__)

RENDER_VERSION = 2
"""Bump whenever rendering, captions or the sentence pool change: it invalidates every cache."""

# --- vocabulary -------------------------------------------------------------------------------

# Where the dominant (image-left) hand signs, in frame units (x right, y down, 0..1), and how far
# in front of the body (depth only bends the elbows: the camera looks straight on).
LOCATIONS: dict[str, tuple[float, float, float]] = {
    "forehead": (0.45, 0.11, 0.1),
    "cheek": (0.40, 0.21, 0.08),
    "chin": (0.47, 0.30, 0.1),
    "chest": (0.45, 0.50, 0.08),
    "shoulder": (0.62, 0.44, 0.08),
    "stomach": (0.46, 0.68, 0.08),
    "neutral": (0.30, 0.60, 0.22),
    "side": (0.14, 0.42, 0.1),
}
# Handshapes are gloves: (outline, half-size in frame units, RGB) so they read at 32x32.
HANDSHAPES: dict[str, tuple[str, float, tuple[int, int, int]]] = {
    "flat": ("square", 0.050, (245, 205, 60)),
    "fist": ("disc", 0.048, (215, 60, 50)),
    "point": ("diamond", 0.070, (50, 190, 225)),
    "open": ("disc", 0.068, (90, 200, 90)),
    "bent": ("bar", 0.068, (200, 90, 210)),
}

# word, location, movement (see _movement), handshape, hands: "one"; "both" mirrored; "alt" mirrored with
# the opposite movement
SIGNS: tuple[tuple[str, str, str, str, str], ...] = (
    ("HELLO", "forehead", "across", "flat", "one"),
    ("THINK", "forehead", "tap", "point", "one"),
    ("KNOW", "forehead", "tap", "flat", "one"),
    ("FATHER", "forehead", "tap", "open", "one"),
    ("REMEMBER", "forehead", "down", "fist", "one"),
    ("DREAM", "forehead", "arc", "point", "one"),
    ("WHY", "forehead", "shake", "bent", "one"),
    ("WORRY", "forehead", "circle", "flat", "alt"),
    ("SMART", "forehead", "across", "point", "one"),
    ("GIRL", "cheek", "down", "fist", "one"),
    ("HOME", "cheek", "tap", "bent", "one"),
    ("APPLE", "cheek", "circle", "fist", "one"),
    ("PRETTY", "cheek", "circle", "open", "one"),
    ("CANDY", "cheek", "shake", "point", "one"),
    ("TOMORROW", "cheek", "arc", "fist", "one"),
    ("YESTERDAY", "cheek", "arc", "bent", "one"),
    ("MOTHER", "chin", "tap", "open", "one"),
    ("EAT", "chin", "tap", "bent", "one"),
    ("DRINK", "chin", "arc", "fist", "one"),
    ("THANK-YOU", "chin", "down", "flat", "one"),
    ("GOOD", "chin", "down", "flat", "both"),
    ("WATER", "chin", "tap", "point", "one"),
    ("TALK", "chin", "across", "point", "alt"),
    ("SWEET", "chin", "circle", "flat", "one"),
    ("PLEASE", "chest", "circle", "flat", "one"),
    ("SORRY", "chest", "circle", "fist", "one"),
    ("LIKE", "chest", "across", "open", "one"),
    ("ME", "chest", "tap", "point", "one"),
    ("MY", "chest", "tap", "flat", "one"),
    ("FEEL", "chest", "down", "open", "one"),
    ("HAPPY", "chest", "circle", "flat", "both"),
    ("LOVE", "chest", "tap", "fist", "both"),
    ("EXCITED", "chest", "circle", "open", "alt"),
    ("PAST", "shoulder", "arc", "flat", "one"),
    ("TIRED", "shoulder", "down", "bent", "both"),
    ("COLD", "shoulder", "shake", "fist", "both"),
    ("BELIEVE", "shoulder", "tap", "fist", "one"),
    ("PROUD", "shoulder", "down", "point", "one"),
    ("HUNGRY", "stomach", "down", "bent", "one"),
    ("FULL", "stomach", "across", "flat", "one"),
    ("SICK", "stomach", "circle", "bent", "one"),
    ("WAIT", "stomach", "shake", "open", "both"),
    ("AFRAID", "stomach", "across", "open", "both"),
    ("HOUSE", "neutral", "arc", "flat", "both"),
    ("CAR", "neutral", "circle", "fist", "alt"),
    ("BOOK", "neutral", "across", "flat", "both"),
    ("SCHOOL", "neutral", "tap", "flat", "both"),
    ("WORK", "neutral", "tap", "fist", "both"),
    ("PLAY", "neutral", "shake", "bent", "both"),
    ("MORE", "neutral", "tap", "bent", "both"),
    ("WHAT", "neutral", "shake", "open", "one"),
    ("WHERE", "neutral", "shake", "point", "one"),
    ("FINISH", "neutral", "across", "open", "both"),
    ("HELP", "neutral", "down", "fist", "one"),
    ("TREE", "neutral", "circle", "open", "one"),
    ("NAME", "neutral", "tap", "point", "both"),
    ("SIGN", "neutral", "circle", "point", "alt"),
    ("FRIEND", "neutral", "tap", "bent", "alt"),
    ("WANT", "neutral", "across", "bent", "both"),
    ("YES", "neutral", "tap", "fist", "one"),
    ("NO", "neutral", "tap", "bent", "one"),
    ("BYE", "side", "shake", "open", "one"),
    ("GO", "side", "across", "point", "both"),
    ("COME", "side", "arc", "point", "both"),
    ("RAIN", "side", "down", "open", "both"),
    ("SUN", "side", "circle", "open", "one"),
    ("BIRD", "side", "tap", "point", "one"),
    ("FLY", "side", "arc", "flat", "alt"),
)
GLOSSES: tuple[str, ...] = tuple(s[0] for s in SIGNS)


def vocabulary(size: int) -> tuple[int, ...]:
    """The gloss ids of a `size`-gloss vocabulary (0 = all): one per body location in turn, so few differ most."""
    by_location = [[g for g, sign in enumerate(SIGNS) if sign[1] == loc] for loc in LOCATIONS]
    order = [col[k] for k in range(max(map(len, by_location))) for col in by_location if k < len(col)]
    return tuple(order[:size]) if size else tuple(range(len(GLOSSES)))


# --- sentences and captions -------------------------------------------------------------------

_POOL_SIZES = {1: len(GLOSSES), 2: 270, 3: 270}  # distinct sentences per length at most (608 with all glosses)
_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
# (template, gloss case, joiner): several phrasings per sentence so that the text encoder matters.
_TEMPLATES: tuple[tuple[str, str, str], ...] = (
    ("A person signs {}.", "upper", " then "),
    ("Someone is signing: {}", "lower", ", "),
    ("the signer says {}", "lower", "and"),
    ("{}", "upper", " "),
    ("A signer signs the words {}.", "lower", "and"),
    ("In sign language: {}.", "lower", ", then "),
    ("Sign language video: {}.", "upper", ", "),
    ("A person says {} in sign language.", "lower", "and"),
)
NUM_PHRASINGS = len(_TEMPLATES)


def gloss_word(gloss: int) -> str:
    """The English word(s) of a gloss id as they appear in lower-case captions (`thank you`)."""
    return GLOSSES[gloss].lower().replace("-", " ")


def caption(glosses: Sequence[int], template: int) -> str:
    """The caption of a gloss sequence in phrasing number `template` (< `NUM_PHRASINGS`)."""
    text, case, joiner = _TEMPLATES[template]
    words = [GLOSSES[g] if case == "upper" else gloss_word(g) for g in glosses]
    if joiner == "and":
        listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    else:
        listed = joiner.join(words)
    return text.format(listed)


def _distinct_sequences(
    rng: np.random.Generator, vocab: Sequence[int], length: int, count: int
) -> list[tuple[int, ...]]:
    """`count` distinct `length`-gloss sequences over `vocab`, no gloss twice in a row (all of them if fewer exist)."""
    if length == 1:
        return [(g,) for g in vocab]
    possible = len(vocab) * (len(vocab) - 1) ** (length - 1)
    if possible <= 2 * count:  # few enough to list: take a seeded choice of all of them
        seqs = [s for s in itertools.product(vocab, repeat=length) if all(a != b for a, b in zip(s, s[1:]))]
        return [seqs[i] for i in rng.permutation(len(seqs))[:count]]
    found: dict[tuple[int, ...], None] = {}  # insertion-ordered set keeps the draw deterministic
    while len(found) < count:
        seq = tuple(int(vocab[g]) for g in rng.integers(len(vocab), size=length))
        if all(a != b for a, b in zip(seq, seq[1:])):
            found[seq] = None
    return list(found)


def split_sentences(
    seed: int, vocab_size: int = 0, min_glosses: int = 1, max_glosses: int = 3, split_by: str = "sentence"
) -> dict[str, list[tuple[int, ...]]]:
    """The gloss sequences of each split: a seeded pool per length, split 80/10/10 (`sentence`) or shared (`clip`).

    With `split_by="clip"` every split holds the whole pool and differs only by its renders (a small
    vocabulary has too few sentences to hold some out).
    """
    rng = np.random.default_rng([seed, 0xC0FFEE])
    vocab = vocabulary(vocab_size)
    out: dict[str, list[tuple[int, ...]]] = {s: [] for s in SPLITS}
    for length, count in _POOL_SIZES.items():
        pool = _distinct_sequences(rng, vocab, length, count)
        order = rng.permutation(len(pool))
        if not min_glosses <= length <= max_glosses:
            continue  # drawn all the same, so that other lengths' sentences do not change
        if split_by == "clip":
            for split in SPLITS:
                out[split] += pool
            continue
        n = len(pool)
        n_train, n_val = int(n * _SPLIT_FRACTIONS[0]), int(n * _SPLIT_FRACTIONS[1])
        bounds = {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}
        for split, (lo, hi) in bounds.items():
            out[split] += [pool[i] for i in order[lo:hi]]
    empty = [split for split, seqs in out.items() if not seqs]
    if empty:
        raise ValueError(
            f"SynthSign: data.split_by='sentence' leaves no sentence for the {'/'.join(empty)} split "
            f"with data.vocabulary={vocab_size}; use --set data.split_by=clip (new renders of the same "
            "sentences) or a larger vocabulary"
        )
    return {split: [seqs[i] for i in rng.permutation(len(seqs))] for split, seqs in out.items()}


def sentences_of(cfg: DataConfig) -> dict[str, list[tuple[int, ...]]]:
    """`split_sentences` for the knobs of `cfg`."""
    return split_sentences(cfg.seed, cfg.vocabulary, cfg.min_glosses, cfg.max_glosses, cfg.split_by)


def _clip_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index])


# --- motion -----------------------------------------------------------------------------------

_AMPLITUDE = 0.075
_SHOULDERS = np.array([[0.35, 0.42, 0.0], [0.65, 0.42, 0.0]])  # dominant (image left), other
_REST = np.array([0.70, 0.80, 0.0])  # the other hand hanging by the hip in one-handed signs
_ARM = 0.2  # upper arm and forearm length
_ELBOWS_TOWARD = np.array([[-0.5, 1.0, 0.0], [0.5, 1.0, 0.0]])  # elbows bend out and down
_REST_SHAPE = len(HANDSHAPES)  # shape id of a bare, resting hand


def _movement(name: str, s: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Hand offset `(len(s), 3)` along a movement path (in the picture plane) at phase `s` in [0, 1]."""
    a, zero = _AMPLITUDE * scale, np.zeros_like(s)
    x, y = {
        "across": (a * (2 * s - 1), zero),
        "down": (zero, a * (2 * s - 1)),
        "arc": (-a * np.cos(np.pi * s), -a * np.sin(np.pi * s)),
        "circle": (a * np.cos(2 * np.pi * s), a * np.sin(2 * np.pi * s)),
        "tap": (zero, -0.8 * a * np.abs(np.sin(2 * np.pi * s))),  # two taps
        "shake": (0.7 * a * np.sin(4 * np.pi * s), zero),  # two wiggles
    }[name]
    return np.stack([x, y, zero], axis=-1)


def _sign_pose(gloss: int, phase: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """3-D positions `(T, 3)` of both hands and their shape ids while signing `gloss` (movements x `scale`)."""
    _, location, movement, shape, hands = SIGNS[gloss]
    loc, offset = np.array(LOCATIONS[location]), _movement(movement, phase, scale)
    shape_id = list(HANDSHAPES).index(shape)
    if hands == "one":
        return loc + offset, np.broadcast_to(_REST, offset.shape), shape_id, _REST_SHAPE
    # each hand on its own side of the body; the other hand mirrors it about x = 0.5
    loc[0] = min(0.5 - abs(loc[0] - 0.5), 0.42)
    other = loc - offset if hands == "alt" else loc + offset
    other[:, 0] = 1 - other[:, 0]
    return loc + offset, other, shape_id, shape_id


def _timeline(n: int, frames: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clip time per frame `(T,)` and each gloss's start/end times `(n,)`, with timing jitter."""
    bounds = np.arange(n + 1) / n
    bounds[1:-1] += rng.uniform(-0.05, 0.05, size=n - 1)
    gap = 0.25 / n  # transition time between consecutive glosses
    starts, ends = bounds[:-1] + gap / 2, bounds[1:] - gap / 2
    starts[0], ends[-1] = 0.0, 1.0
    u = np.clip((np.arange(frames) + 0.5 + rng.uniform(-0.3, 0.3)) / frames, 0.0, 1.0)
    return u, starts, ends


def _hand_tracks(
    glosses: Sequence[int], frames: int, rng: np.random.Generator, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame 3-D hand positions `(T, 2, 3)` (dominant, other) and shape ids `(T, 2)`."""
    u, starts, ends = _timeline(len(glosses), frames, rng)
    pos, shape = None, None
    for k, g in enumerate(glosses):
        phase = np.clip((u - starts[k]) / (ends[k] - starts[k]), 0.0, 1.0)
        dom, other, s_dom, s_other = _sign_pose(g, phase, scale)
        p_k, s_k = np.stack([dom, other], axis=1), np.broadcast_to([s_dom, s_other], (frames, 2))
        if pos is None:
            pos, shape = p_k, s_k
            continue
        # blend from the end of the previous gloss into the start of this one
        w = np.clip((u - ends[k - 1]) / (starts[k] - ends[k - 1]), 0.0, 1.0)[:, None, None]
        pos, shape = (1 - w) * pos + w * p_k, np.where(w[:, :, 0] >= 0.5, s_k, shape)
    return pos, np.asarray(shape, dtype=np.int64)


def _arms(hands: np.ndarray, shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shoulders, elbows and reachable hands `(T, 2, 2)` in the picture, by two-link 3-D IK."""
    shoulders = np.broadcast_to(_SHOULDERS + shift, hands.shape)
    d = hands - shoulders
    dist = np.linalg.norm(d, axis=-1, keepdims=True)
    unit = d / np.maximum(dist, 1e-6)
    dist = np.clip(dist, 1e-4, 2 * _ARM - 1e-4)
    bend = _ELBOWS_TOWARD - (_ELBOWS_TOWARD * unit).sum(-1, keepdims=True) * unit
    bend /= np.maximum(np.linalg.norm(bend, axis=-1, keepdims=True), 1e-6)
    elbows = shoulders + unit * dist / 2 + bend * np.sqrt(_ARM**2 - (dist / 2) ** 2)
    return shoulders[..., :2], elbows[..., :2], (shoulders + unit * dist)[..., :2]


# --- rasterising ------------------------------------------------------------------------------

_SKINS = np.array([(238, 200, 170), (205, 155, 115), (140, 95, 65)])
_SHIRTS = np.array([(40, 60, 120), (55, 55, 60), (30, 90, 70), (105, 40, 50)])
_HAIRS = np.array([(40, 30, 25), (95, 65, 35), (20, 20, 20)])
_GLOVES = np.array([c for _, _, c in HANDSHAPES.values()])
_BACKGROUND = np.array([222, 228, 236])


class _Look(NamedTuple):
    """Per-clip appearance: where the signer stands and what it wears."""

    shift: np.ndarray  # (2,) position jitter in frame units
    bg: np.ndarray
    skin: np.ndarray
    shirt: np.ndarray
    hair: np.ndarray
    gloves: np.ndarray  # (len(HANDSHAPES) + 1, 3); the last row is the bare resting hand


def _sample_look(rng: np.random.Generator) -> _Look:
    def jitter(base, amount):
        return np.clip(base + rng.integers(-amount, amount + 1, size=3), 0, 255).astype(np.uint8)

    skin = jitter(_SKINS[rng.integers(len(_SKINS))], 8)
    gloves = np.concatenate([np.clip(_GLOVES + rng.integers(-10, 11, size=3), 0, 255), skin[None]])
    return _Look(
        shift=rng.uniform(-0.03, 0.03, size=2),
        bg=jitter(_BACKGROUND, 12),
        skin=skin,
        shirt=jitter(_SHIRTS[rng.integers(len(_SHIRTS))], 10),
        hair=jitter(_HAIRS[rng.integers(len(_HAIRS))], 8),
        gloves=gloves.astype(np.uint8),
    )


def _fixed_look() -> _Look:
    """The one signer of `signers=1`: centred, in the base colours."""
    skin = _SKINS[0].astype(np.uint8)
    gloves = np.concatenate([_GLOVES, skin[None]]).astype(np.uint8)
    return _Look(
        shift=np.zeros(2),
        bg=_BACKGROUND.astype(np.uint8),
        skin=skin,
        shirt=_SHIRTS[0].astype(np.uint8),
        hair=_HAIRS[0].astype(np.uint8),
        gloves=gloves,
    )


class Style(NamedTuple):
    """How varied SynthSign's renders are (`DataConfig.signers`, `motion_scale`, `seed`)."""

    signers: int = 0
    """0 = every clip its own look; 1 = one fixed signer; k = k looks drawn from `seed`."""
    motion_scale: float = 1.0
    """Multiplies every movement's size."""
    seed: int = 0
    """Seeds the k looks."""

    @classmethod
    def of(cls, cfg: DataConfig) -> Style:
        return cls(cfg.signers, cfg.motion_scale, cfg.seed)

    def look(self, rng: np.random.Generator) -> _Look:
        """The look of the clip whose generator is `rng`."""
        if self.signers == 0:
            return _sample_look(rng)
        if self.signers == 1:
            return _fixed_look()
        return _sample_look(np.random.default_rng([self.seed, 0x516E, int(rng.integers(self.signers))]))


FULL_VARIETY = Style()
"""Every clip its own signer, movements at their natural size (the default)."""


class _Canvas:
    """Pixel-centre coordinates of an `(H, W)` frame in frame units (aspect ratio preserved)."""

    def __init__(self, height: int, width: int):
        size = min(height, width)
        self.size = size
        self.x = (((np.arange(width) + 0.5 - width / 2) / size) + 0.5).astype(np.float32)[None, None, :]
        self.y = (((np.arange(height) + 0.5 - height / 2) / size) + 0.5).astype(np.float32)[None, :, None]

    def radius(self, r: float) -> float:
        # never thinner than ~1.5 px, so that limbs survive at 16x16
        return max(r, 0.75 / self.size)

    def capsule(self, a: np.ndarray, b: np.ndarray, r: float) -> np.ndarray:
        """Mask `(F, H, W)` of pixels within `r` of the segments `a[f] -> b[f]` (`(F, 2)`)."""
        a, b = a.astype(np.float32)[:, :, None, None], b.astype(np.float32)[:, :, None, None]
        ax, ay = a[:, 0], a[:, 1]
        abx, aby = b[:, 0] - ax, b[:, 1] - ay
        px, py = self.x - ax, self.y - ay
        t = np.clip((px * abx + py * aby) * (1 / (abx**2 + aby**2 + 1e-12)), 0.0, 1.0)
        r = np.float32(self.radius(r))
        return (px - t * abx) ** 2 + (py - t * aby) ** 2 <= r * r

    def shape(self, kind: str, centre: np.ndarray, r: float) -> np.ndarray:
        """Mask `(F, H, W)` of a disc/square/diamond/bar of half-size `r` at `centre` (`(F, 2)`)."""
        centre = centre.astype(np.float32)
        dx = np.abs(self.x - centre[:, 0, None, None])
        dy = np.abs(self.y - centre[:, 1, None, None])
        r = np.float32(self.radius(r))
        if kind == "disc":
            return dx**2 + dy**2 <= r * r
        if kind == "square":
            return (dx <= r) & (dy <= r)
        if kind == "diamond":
            return dx + dy <= r
        return (dx <= r) & (dy <= 0.55 * r)  # bar


# Layers, back to front: pixels hold a layer id and each frame a colour per layer (cheaper than RGB).
BG, SHIRT, SKIN, HAIR, EYES, SLEEVE, OTHER_HAND, DOMINANT_HAND = range(8)


def _paint(labels: np.ndarray, mask: np.ndarray, layer: int) -> None:
    np.copyto(labels, np.uint8(layer), where=mask)


def _draw_body(canvas: _Canvas, look: _Look) -> np.ndarray:
    """Layer ids `(1, H, W)` of the still part of the signer: torso, neck, head."""
    labels = np.full((1, canvas.y.shape[1], canvas.x.shape[2]), BG, np.uint8)
    at = lambda *xy: np.array([xy]) + look.shift  # noqa: E731 - a point as a (1, 2) array
    _paint(labels, canvas.capsule(at(0.5, 0.62), at(0.5, 1.3), 0.17), SHIRT)  # torso
    _paint(labels, canvas.capsule(at(0.37, 0.44), at(0.63, 0.44), 0.05), SHIRT)  # shoulders
    _paint(labels, canvas.capsule(at(0.5, 0.26), at(0.5, 0.4), 0.035), SKIN)  # neck
    _paint(labels, canvas.shape("disc", at(0.5, 0.185), 0.092), HAIR)
    _paint(labels, canvas.shape("disc", at(0.5, 0.21), 0.082), SKIN)  # face below the hairline
    for eye_x in (0.468, 0.532) if canvas.size >= 32 else ():  # eyes would be blobs below 32 px
        _paint(labels, canvas.shape("disc", at(eye_x, 0.205), 0.012), EYES)
    return labels


def _draw_hands(labels: np.ndarray, canvas: _Canvas, hands: np.ndarray, shapes: np.ndarray) -> None:
    """Hands at picture positions `(T, 2, 2)`, each frame in the outline of its shape id `(T, 2)`."""
    outlines = [(kind, r) for kind, r, _ in HANDSHAPES.values()] + [("disc", 0.04)]
    for hand, layer in ((1, OTHER_HAND), (0, DOMINANT_HAND)):
        mask = np.zeros(labels.shape, bool)
        for sid in np.unique(shapes[:, hand]):
            sel = shapes[:, hand] == sid
            kind, r = outlines[sid]
            mask[sel] = canvas.shape(kind, hands[sel, hand], r)
        _paint(labels, mask, layer)


def _colours(look: _Look, shapes: np.ndarray) -> np.ndarray:
    """The colour of every layer in every frame: `(T, 8, 3)` uint8."""
    sleeve = (look.shirt * 0.75).astype(np.uint8)  # darker than the torso so arms show in front of it
    still = np.stack([look.bg, look.shirt, look.skin, look.hair, np.full(3, 30, np.uint8), sleeve])
    hands = look.gloves[shapes[:, ::-1]]  # (T, 2, 3): other hand, dominant hand
    return np.concatenate([np.broadcast_to(still, (len(shapes), *still.shape)), hands], axis=1)


def _draw_frames(body: np.ndarray, canvas: _Canvas, tracks, look: _Look) -> np.ndarray:
    """Arms and hands over the still body for every frame: `(T, H, W, 3)` uint8."""
    hands, shapes = tracks
    labels = np.repeat(body, len(hands), axis=0)
    shift = np.append(look.shift, 0.0)
    shoulders, elbows, hands = _arms(hands + shift, shift)
    for hand in (1, 0):
        _paint(labels, canvas.capsule(shoulders[:, hand], elbows[:, hand], 0.038), SLEEVE)
        _paint(labels, canvas.capsule(elbows[:, hand], hands[:, hand], 0.03), SKIN)
    _draw_hands(labels, canvas, hands, shapes)
    return _colours(look, shapes)[np.arange(len(labels))[:, None, None], labels]


def render_clip(
    glosses: Sequence[int], frames: int, height: int, width: int, rng: np.random.Generator, style: Style = FULL_VARIETY
) -> np.ndarray:
    """Render the signer signing `glosses` in order: uint8 `(frames, height, width, 3)`.

    `rng` draws the per-clip variation (appearance, position, timing) as far as `style` allows;
    the same generator state gives the same bytes.
    """
    if not 1 <= len(glosses) <= 3 or not all(0 <= g < len(GLOSSES) for g in glosses):
        raise ValueError(f"glosses must be 1-3 ids in [0, {len(GLOSSES)}), got {tuple(glosses)}")
    if frames < 1 or height < 8 or width < 8:
        raise ValueError(f"need frames >= 1 and height, width >= 8, got {frames}x{height}x{width}")
    look = style.look(rng)
    tracks = _hand_tracks(glosses, frames, rng, style.motion_scale)
    canvas = _Canvas(height, width)
    return _draw_frames(_draw_body(canvas, look), canvas, tracks, look)


# --- cache ------------------------------------------------------------------------------------


def cache_key(cfg: DataConfig) -> str:
    """Hash of everything that changes SynthSign's pixels, captions or labels."""
    fields = {
        "dataset": "synthsign",
        "version": RENDER_VERSION,
        "seed": cfg.seed,
        "frames": cfg.frames,
        "height": cfg.height,
        "width": cfg.width,
        "vocabulary": cfg.vocabulary,
        "min_glosses": cfg.min_glosses,
        "max_glosses": cfg.max_glosses,
        "signers": cfg.signers,
        "motion_scale": cfg.motion_scale,
        "split_by": cfg.split_by,
    }
    return _content_hash(fields)


def _load_cached(npy: Path, meta: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict] | None:
    """The memory-mapped split and its sidecar, or None (with the reason logged) if unusable."""
    if (cached := read_cached(npy, meta, "SynthSign")) is None:
        return None
    videos, sidecar = cached
    good = (
        videos.shape == shape
        and videos.dtype == np.uint8
        and sidecar.get("shape") == list(shape)
        and len(sidecar.get("texts", ())) == shape[0]
        and len(sidecar.get("glosses", ())) == shape[0]
    )
    if not good:
        log.warning("SynthSign cache %s has shape %s, expected %s; rebuilding it", npy, videos.shape, shape)
        return None
    return videos, sidecar


class _Clip(NamedTuple):
    text: str
    glosses: tuple[int, ...]
    rng: np.random.Generator  # what is left of the clip's generator draws its look


def _clips(cfg: DataConfig, split: str, n: int) -> Iterator[_Clip]:
    sentences = sentences_of(cfg)[split]
    for i in range(n):
        rng = _clip_rng(cfg.seed, split, i)
        glosses = sentences[i % len(sentences)]  # cycle so that the first clips cover distinct sentences
        yield _Clip(caption(glosses, int(rng.integers(NUM_PHRASINGS))), glosses, rng)


def _render_split(cfg: DataConfig, split: str, shape: tuple[int, ...], npy: Path, meta: Path) -> None:
    n, frames, height, width, _ = shape
    t0 = time.perf_counter()
    texts, labels, style = [], [], Style.of(cfg)
    with _atomic_path(npy, ".npy.tmp") as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        for i, clip in enumerate(_clips(cfg, split, n)):
            out[i] = render_clip(clip.glosses, frames, height, width, clip.rng, style)
            texts.append(clip.text)
            labels.append(list(clip.glosses))
        out.flush()
        del out
    sidecar = {
        "dataset": "synthsign",
        "version": RENDER_VERSION,
        "key": cache_key(cfg),
        "split": split,
        "shape": list(shape),
        "seed": cfg.seed,
        "glosses_vocab": list(GLOSSES),
        "texts": texts,
        "glosses": labels,
    }
    with _atomic_path(meta, ".json.tmp") as tmp, open(tmp, "w") as f:
        json.dump(sidecar, f)
    log.info(
        "SynthSign: rendered %s (%d clips of %dx%dx%d) in %.1fs into %s",
        split,
        n,
        frames,
        height,
        width,
        time.perf_counter() - t0,
        npy.parent,
    )


def load_split(cfg: DataConfig, split: str) -> tuple[np.ndarray, dict, Path]:
    """The split's memory-mapped videos, its sidecar and the `.npy` path, rendering it if needed."""
    n = cfg.train_clips if split == "train" else cfg.eval_clips
    shape = (n, cfg.frames, cfg.height, cfg.width, 3)
    folder = cache_root(cfg) / "synthsign" / cache_key(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    npy, meta = folder / f"{split}-{n}.npy", folder / f"{split}-{n}.json"
    cached = _load_cached(npy, meta, shape)
    if cached is None:
        with _locked(folder / f"{split}-{n}.lock"):
            cached = _load_cached(npy, meta, shape)  # another process may have built it meanwhile
            if cached is None:
                _render_split(cfg, split, shape, npy, meta)
                cached = _load_cached(npy, meta, shape)
    if cached is None:
        raise RuntimeError(f"SynthSign cache {npy} is unreadable right after rendering it")
    return (*cached, npy)


# --- dataset ----------------------------------------------------------------------------------


class SynthSign(CachedSplit):
    """The SynthSign split `split` of `cfg`: memory-mapped uint8 videos, captions, gloss labels."""

    name = "SynthSign"
    num_glosses = len(GLOSSES)

    def __init__(self, cfg: DataConfig, split: str):
        if cfg.spec != "synthsign":
            raise ValueError(f"SynthSign takes no argument: data.spec must be 'synthsign', got {cfg.spec!r}")
        super().__init__(cfg, split)

    def references(self, index: int, k: int) -> np.ndarray:
        """`k` other real renders of clip `index`'s sentence, uint8 `(k, T, H, W, 3)`: new look and timing."""
        c, style = self.cfg, Style.of(self.cfg)
        return np.stack(
            [
                render_clip(
                    self.glosses[index],
                    c.frames,
                    c.height,
                    c.width,
                    np.random.default_rng([c.seed, 0x2EF, SPLITS.index(self.split), index, j]),
                    style,
                )
                for j in range(k)
            ]
        )

    def _open(self) -> None:
        self.videos, sidecar, self.path = load_split(self.cfg, self.split)
        self.texts = list(sidecar["texts"])
        self.glosses = [tuple(g) for g in sidecar["glosses"]]
