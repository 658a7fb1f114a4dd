"""`DataConfig`: which clips a trial trains on and how they are shaped, for any study that uses the dataset library
(the bundled study's config nests it as `data`)."""

from __future__ import annotations

from dataclasses import dataclass

from t2s_ray.schema import _check, _one_of


@dataclass(frozen=True)
class DataConfig:
    """Which clips a trial trains on and how they are shaped."""

    spec: str = "synthsign"
    """Dataset spec: `synthsign`, `how2sign:ROOT`, `phoenix:ROOT` or `manifest:FILE.csv`."""
    frames: int = 8
    """Frames per clip (T)."""
    height: int = 32
    """Frame height in pixels (H)."""
    width: int = 32
    """Frame width in pixels (W)."""
    train_clips: int = 512
    """SynthSign: clips rendered for the train split (val/test get `eval_clips` each)."""
    eval_clips: int = 64
    """SynthSign: clips rendered for each of the val and test splits."""
    seed: int = 0
    """SynthSign: generator seed; the same for every trial so that trials share one dataset."""
    vocabulary: int = 0
    """SynthSign: glosses in use (0 = all 68); a subset picks one gloss per body location first."""
    min_glosses: int = 1
    """SynthSign: fewest glosses in a sentence."""
    max_glosses: int = 3
    """SynthSign: most glosses in a sentence (at most 3)."""
    signers: int = 0
    """SynthSign: signer appearances (0 = a new look, position and colours for every clip; 1 = one fixed signer)."""
    motion_scale: float = 1.0
    """SynthSign: multiplies the size of every movement (larger = easier to tell movements apart)."""
    split_by: str = "sentence"
    """SynthSign: `sentence` (val/test sentences never trained on) or `clip` (same sentences, new renders)."""
    cache_dir: str = ""
    """Where rendered/decoded clips are cached; empty = `$T2S_RAY_CACHE` or `~/.cache/t2s-ray`."""
    max_bad_fraction: float = 0.05
    """Real corpora: fraction of a split's rows that may be skipped (bad row, unreadable clip); at least 1 may."""

    def __post_init__(self) -> None:
        _check(bool(self.spec), "data.spec", "must not be empty (e.g. 'synthsign')")
        _check(self.frames >= 1, "data.frames", f"must be >= 1, got {self.frames}")
        _check(self.height >= 8 and self.width >= 8, "data.height/width", "must be >= 8 pixels")
        _check(self.train_clips >= 1, "data.train_clips", f"must be >= 1, got {self.train_clips}")
        _check(self.eval_clips >= 1, "data.eval_clips", f"must be >= 1, got {self.eval_clips}")
        _check(0 <= self.vocabulary <= 68, "data.vocabulary", f"must be in [0, 68] (0 = all), got {self.vocabulary}")
        _check(
            1 <= self.min_glosses <= self.max_glosses <= 3,
            "data.min_glosses/max_glosses",
            f"need 1 <= min_glosses <= max_glosses <= 3, got {self.min_glosses}, {self.max_glosses}",
        )
        _check(
            self.vocabulary != 1 or self.max_glosses == 1,
            "data.max_glosses",
            "must be 1 with data.vocabulary=1 (a gloss is never signed twice in a row)",
        )
        _check(self.signers >= 0, "data.signers", f"must be >= 0, got {self.signers}")
        _check(0 < self.motion_scale <= 3, "data.motion_scale", f"must be in (0, 3], got {self.motion_scale}")
        _one_of(self.split_by, "data.split_by", ("sentence", "clip"))
        _check(
            0 <= self.max_bad_fraction < 1, "data.max_bad_fraction", f"must be in [0, 1), got {self.max_bad_fraction}"
        )
