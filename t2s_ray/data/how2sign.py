"""How2Sign (ASL, English captions): `data.spec=how2sign:ROOT`.

Layout (as published; our val is How2Sign's val):

    ROOT/how2sign_realigned_{train,val,test}.csv    tab-separated, also found up to two folders down
    ROOT/{split}_rgb_front_clips/raw_videos/<SENTENCE_NAME>.mp4    (or without raw_videos/)

The realigned CSVs have `VIDEO_ID VIDEO_NAME SENTENCE_ID SENTENCE_NAME START_REALIGNED
END_REALIGNED SENTENCE`; without them the original `how2sign_{split}.csv` (`START`/`END`) is read.
Each row's clip is already cut to its sentence, so the times are kept as info only. The caption
is `SENTENCE`.
"""

from __future__ import annotations

from pathlib import Path

from t2s_ray.data.corpus import Corpus, Row, SplitRows, read_table

LAYOUT = (
    "ROOT/how2sign_realigned_{split}.csv (tab-separated; or how2sign_{split}.csv) and "
    "ROOT/{split}_rgb_front_clips/raw_videos/<SENTENCE_NAME>.mp4"
)
_STEMS = ("how2sign_realigned", "how2sign")  # realigned first: its times match the published clips
_TIMES = (("START_REALIGNED", "END_REALIGNED"), ("START", "END"))


def find_annotation(root: Path, split: str) -> Path | None:
    """The shallowest `how2sign_realigned_{split}.csv` (else `how2sign_{split}.csv`) at most two folders down."""
    for stem in _STEMS:
        for pattern in ("", "*/", "*/*/"):
            found = sorted(root.glob(f"{pattern}{stem}_{split}.csv"))
            if found:
                return found[0]
    return None


def clip_folder(root: Path, annotation: Path, split: str) -> Path | None:
    """`{split}_rgb_front_clips/raw_videos` (else the folder itself) in ROOT or next to the CSV."""
    bases = dict.fromkeys([root, annotation.parent, annotation.parent.parent])  # ordered, no repeats
    for base in bases:
        for folder in (base / f"{split}_rgb_front_clips" / "raw_videos", base / f"{split}_rgb_front_clips"):
            if folder.is_dir():
                return folder
    return None


class How2Sign(Corpus):
    """A How2Sign split (front camera), decoded and cached; captions are the English `SENTENCE`."""

    name = "how2sign"

    @classmethod
    def locate(cls, root: Path, split: str) -> Path:
        if not root.is_dir():
            raise ValueError(f"how2sign:{root}: no such folder; expected {LAYOUT.format(split=split)}")
        annotation = find_annotation(root, split)
        if annotation is None:
            raise ValueError(
                f"how2sign:{root}: no how2sign_realigned_{split}.csv or how2sign_{split}.csv in it "
                f"or two folders down; expected {LAYOUT.format(split=split)}"
            )
        return annotation

    @classmethod
    def read(cls, root: Path, annotation: Path, split: str) -> SplitRows:
        header, table = read_table(annotation, "\t", ("SENTENCE_NAME", "SENTENCE"))
        folder = clip_folder(root, annotation, split)
        if folder is None:
            raise ValueError(
                f"how2sign:{root}: no {split}_rgb_front_clips/ folder in it or next to {annotation}; "
                f"expected {LAYOUT.format(split=split)}"
            )
        start, end = next((t for t in _TIMES if t[0] in header and t[1] in header), (None, None))
        rows, bad = [], []
        for line, cells in table:
            where = f"{annotation}:{line}"
            if not cells:
                bad.append((where, f"expected {len(header)} tab-separated cells"))
                continue
            name, text = cells["SENTENCE_NAME"].strip(), " ".join(cells["SENTENCE"].split())
            if not name or not text:
                bad.append((where, "empty SENTENCE_NAME" if not name else "empty SENTENCE"))
                continue
            info = {
                "video_id": cells.get("VIDEO_ID", ""),
                "video_name": cells.get("VIDEO_NAME", ""),
                "sentence_id": cells.get("SENTENCE_ID", ""),
            }
            try:
                if start:
                    info.update(start=float(cells[start]), end=float(cells[end]))
            except ValueError:
                bad.append((where, f"unparsable {start}/{end}: {cells[start]!r}, {cells[end]!r}"))
                continue
            rows.append(Row(name, text, folder / f"{name}.mp4", info))
        return SplitRows(rows, total=len(table), bad=bad)
