"""Any corpus listed in a CSV: `data.spec=manifest:FILE.csv`.

    video,text,split
    clips/0001.mp4,a person signs hello,train
    frames/0002,good morning,val

`video` is a video file or a folder of frames (png/jpg), relative to the CSV's folder (or
absolute); `text` is the caption; `split` (optional) is train, val or test (`dev`, `valid`,
`validation` mean val). Without a `split` column every row is train and asking for val or test
raises. Other columns are kept in each clip's info.
"""

from __future__ import annotations

from pathlib import Path

from t2s_ray.data.corpus import Corpus, Row, SplitRows, read_table

SPLIT_ALIASES = {"train": "train", "val": "val", "dev": "val", "valid": "val", "validation": "val", "test": "test"}
LAYOUT = "a comma-separated CSV with columns video,text[,split]; video paths relative to the CSV"


class Manifest(Corpus):
    """The clips of a CSV manifest of video files and/or frame folders, decoded and cached."""

    name = "manifest"
    what = "FILE.csv"

    @classmethod
    def locate(cls, root: Path, split: str) -> Path:
        if not root.is_file():
            raise ValueError(f"manifest:{root}: no such file; expected {LAYOUT}")
        return root

    @classmethod
    def read(cls, root: Path, annotation: Path, split: str) -> SplitRows:
        header, table = read_table(annotation, ",", ("video", "text"))
        has_split = "split" in header
        if not has_split and split != "train":
            raise ValueError(
                f"manifest {annotation} has no 'split' column, so all {len(table)} rows are train and "
                f"the {split} split is empty; add a split column (train/val/test) to hold clips out"
            )
        extra = [c for c in header if c not in ("video", "text", "split")]
        rows, bad, total = [], [], 0
        for line, cells in table:
            where = f"{annotation}:{line}"
            row_split = SPLIT_ALIASES.get(cells.get("split", "").strip().lower()) if has_split else "train"
            if not cells or row_split is None:  # a row of no known split could be any's: it counts against each
                total += 1
                bad.append(
                    (
                        where,
                        f"expected {len(header)} comma-separated cells"
                        if not cells
                        else f"split {cells['split']!r} is not train, val or test",
                    )
                )
                continue
            if row_split != split:
                continue
            total += 1
            video, text = cells["video"].strip(), " ".join(cells["text"].split())
            if not video or not text:
                bad.append((where, "empty video" if not video else "empty text"))
                continue
            rows.append(Row(video, text, annotation.parent / video, {c: cells[c] for c in extra}))
        return SplitRows(rows, total=total, bad=bad)
