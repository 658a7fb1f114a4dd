"""RWTH-PHOENIX-Weather-2014T (DGS, German captions): `data.spec=phoenix:ROOT`.

ROOT is the `PHOENIX-2014-T` folder or its parent `PHOENIX-2014-T-release-v3`:

    PHOENIX-2014-T/annotations/manual/PHOENIX-2014-T.{train,dev,test}.corpus.csv
        '|'-separated: name|video|start|end|speaker|orth|translation
    PHOENIX-2014-T/features/fullFrame-210x260px/{train,dev,test}/<name>/images0001.png ...

Our `val` is PHOENIX's `dev`. The caption is `translation` (lower-cased German); the gloss string
`orth` and the `speaker` are kept in each clip's info. The `video` column says `<name>/1/*.png`
but the release has no `1/` folder: both are accepted.
"""

from __future__ import annotations

from pathlib import Path

from t2s_ray.data.corpus import Corpus, Row, SplitRows, read_table

SPLIT_NAMES = {"train": "train", "val": "dev", "test": "test"}
"""Our split -> PHOENIX's."""
FOLDER = "PHOENIX-2014-T"
LAYOUT = (
    f"{FOLDER}/annotations/manual/PHOENIX-2014-T.{{split}}.corpus.csv ('|'-separated) and "
    f"{FOLDER}/features/fullFrame-210x260px/{{split}}/<name>/images0001.png ...; ROOT is {FOLDER} or its parent"
)


def annotation_file(corpus: Path, split: str) -> Path:
    return corpus / "annotations" / "manual" / f"PHOENIX-2014-T.{SPLIT_NAMES[split]}.corpus.csv"


def frame_folder(base: Path, name: str) -> Path:
    """A clip's frames: `<name>/1/` as the `video` column says, if it exists, else `<name>/` (the release)."""
    listed = base / name / "1"
    return listed if listed.is_dir() else base / name  # a missing folder is reported by the decoder


class Phoenix(Corpus):
    """A PHOENIX-2014T split (full frames, 210x260), decoded and cached; captions are German."""

    name = "phoenix"

    @classmethod
    def locate(cls, root: Path, split: str) -> Path:
        layout = LAYOUT.format(split=SPLIT_NAMES[split])
        if not root.is_dir():
            raise ValueError(f"phoenix:{root}: no such folder; expected {layout}")
        for corpus in (root, root / FOLDER):
            if annotation_file(corpus, split).is_file():
                return annotation_file(corpus, split)
        raise ValueError(
            f"phoenix:{root}: found neither {annotation_file(root, split)} nor "
            f"{annotation_file(root / FOLDER, split)}; expected {layout}"
        )

    @classmethod
    def read(cls, root: Path, annotation: Path, split: str) -> SplitRows:
        header, table = read_table(annotation, "|", ("name", "translation"))
        base = annotation.parents[2] / "features" / "fullFrame-210x260px" / SPLIT_NAMES[split]
        if not base.is_dir():
            raise ValueError(
                f"phoenix:{root}: no frame folder {base}; expected {LAYOUT.format(split=SPLIT_NAMES[split])}"
            )
        rows, bad = [], []
        for line, cells in table:
            where = f"{annotation}:{line}"
            if not cells:
                bad.append((where, f"expected {len(header)} '|'-separated cells"))
                continue
            name, text = cells["name"].strip(), " ".join(cells["translation"].split())
            if not name or not text:
                bad.append((where, "empty name" if not name else "empty translation"))
                continue
            info = {"orth": cells.get("orth", "").strip(), "speaker": cells.get("speaker", "").strip()}
            rows.append(Row(name, text, frame_folder(base, name), info))
        return SplitRows(rows, total=len(table), bad=bad)
