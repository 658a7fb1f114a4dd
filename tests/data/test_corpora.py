"""Real corpora (How2Sign, PHOENIX-2014T, CSV manifests) on tiny fixtures written by the tests."""

import dataclasses
import hashlib
import logging
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from t2s_ray.data import DATASETS, build_dataset, decode
from t2s_ray.data.corpus import max_skipped
from t2s_ray.data.decode import ClipError, decode_clip, resize_crop, sample_indices
from t2s_ray.data.how2sign import How2Sign
from t2s_ray.data.manifest import Manifest
from t2s_ray.data.phoenix import Phoenix
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.config import DataConfig
from tests.data import fixtures as fx
from tests.helpers import tiny_overrides

COUNTS = {"train": 4, "val": 2, "test": 1}


def cfg_for(spec: str, cache: Path) -> DataConfig:
    return DataConfig(spec=spec, frames=4, height=16, width=16, cache_dir=str(cache))


def levels(videos: np.ndarray) -> np.ndarray:
    """The grey level of each frame's top-left corner (`fx.frame_level` of the source frame)."""
    return videos[..., :2, :2, :].mean(axis=(-3, -2, -1))


def forbid_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("decoded a clip although the cache was valid")

    monkeypatch.setattr(decode, "decode_clip", boom)


@pytest.fixture(scope="module")
def how2sign_root(tmp_path_factory) -> Path:
    return fx.make_how2sign(tmp_path_factory.mktemp("how2sign"), COUNTS)


@pytest.fixture(scope="module")
def phoenix_release(tmp_path_factory) -> Path:
    release = tmp_path_factory.mktemp("PHOENIX-2014-T-release-v3")
    fx.make_phoenix(release, COUNTS)
    return release


@pytest.fixture(scope="module")
def manifest_csv(tmp_path_factory) -> Path:
    """Two videos and two frame folders for train, one of each kind for val, nothing for test."""
    root = tmp_path_factory.mktemp("manifest")
    rows = []
    for i in range(3):
        fx.write_video(root / "clips" / f"c{i}.mp4")
        fx.write_frames(root / "frames" / f"f{i}", frames=6, width=40, height=30)
        rows += [
            {"video": f"clips/c{i}.mp4", "text": f"video {i}", "split": "train" if i < 2 else "val"},
            {"video": f"frames/f{i}", "text": f"frames {i}", "split": "train" if i < 2 else "dev"},
        ]
    return fx.write_manifest(root / "list.csv", rows)


# --- decoding ---------------------------------------------------------------------------------


def test_uniform_sampling_covers_the_clip_and_repeats_short_ones():
    assert sample_indices(12, 4).tolist() == [0, 4, 7, 11]
    assert sample_indices(3, 6).tolist() == [0, 0, 1, 1, 2, 2]
    assert sample_indices(1, 3).tolist() == [0, 0, 0]


def test_resize_crop_keeps_the_centre():
    img = np.zeros((20, 40, 3), np.uint8)  # 40 wide: blue sides, red centre square
    img[..., 2] = 255
    img[:, 10:30] = (255, 0, 0)
    out = resize_crop(Image.fromarray(img), 16, 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert (out[..., 0] > 200).all() and (out[..., 2] < 60).all()
    assert resize_crop(Image.fromarray(img), 8, 24).shape == (8, 24, 3)


def test_decoding_samples_the_right_frames(tmp_path):
    video = fx.write_video(tmp_path / "v.mp4", frames=12)
    frames = fx.write_frames(tmp_path / "f", frames=12, width=30, height=40)
    want = [fx.frame_level(i) for i in sample_indices(12, 4)]
    for clip in (decode_clip(video, 4, 16, 16), decode_clip(frames, 4, 16, 16)):
        assert clip.shape == (4, 16, 16, 3) and clip.dtype == np.uint8
        np.testing.assert_allclose(levels(clip), want, atol=8)
    short = decode_clip(video, 20, 8, 8)  # more frames than the clip: repeats, in order
    assert short.shape == (20, 8, 8, 3) and np.all(np.diff(levels(short)) > -8)


def test_unreadable_clips_raise_clip_error(tmp_path):
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all" * 10)
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "bad.mp4", tmp_path / "missing.mp4", tmp_path / "empty"):
        with pytest.raises(ClipError) as err:
            decode_clip(path, 4, 16, 16)
        assert err.value.path.name.startswith(path.name[:3]) and err.value.reason


# --- How2Sign ---------------------------------------------------------------------------------


def test_how2sign_splits_texts_and_clips(how2sign_root, tmp_path):
    cfg = cfg_for(f"how2sign:{how2sign_root}", tmp_path)
    for split, n in COUNTS.items():
        ds = build_dataset(cfg, split)
        assert isinstance(ds, How2Sign) and len(ds) == n and ds.num_glosses == 0
        assert ds.videos.shape == (n, 4, 16, 16, 3) and ds.videos.dtype == np.uint8
        assert ds.texts == [fx.sentence(split, i) for i in range(n)]
        assert ds.glosses == [()] * n and ds.sources[0] == f"vid{split}0_0-5-rgb_front"
        assert ds.info[-1]["start"] == n - 1 and ds.info[-1]["end"] == n + 1
        np.testing.assert_allclose(levels(ds.videos), [[20, 100, 160, 240]] * n, atol=8)
    videos, texts = ds.get_batch([0, 0])
    assert videos.shape == (2, 4, 16, 16, 3) and videos.flags.writeable and texts == [ds.texts[0]] * 2
    item = ds[-1]
    assert item["text"] == ds.texts[-1] and item["glosses"] == () and item["video"].shape == (4, 16, 16, 3)
    with pytest.raises(IndexError):
        ds.get_batch([n])
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.texts == ds.texts and np.array_equal(clone.videos, ds.videos)


@pytest.mark.parametrize(
    "realigned, raw_videos, csv_dir",
    [
        (True, False, ""),  # flat clips folder, no raw_videos/
        (False, True, ""),  # original how2sign_{split}.csv with START/END
        (True, True, "how2sign/annotations"),  # CSVs two folders down
    ],
)
def test_how2sign_layout_variants(tmp_path, realigned, raw_videos, csv_dir):
    root = fx.make_how2sign(tmp_path / "h2s", {"train": 2, "val": 1}, realigned, raw_videos, csv_dir=csv_dir)
    cfg = cfg_for(f"how2sign:{root}", tmp_path / "cache")
    ds = build_dataset(cfg, "train")
    assert len(ds) == 2 and ds.texts == [fx.sentence("train", i) for i in range(2)]
    assert ds.info[1]["start"] == 1.0 and len(build_dataset(cfg, "val")) == 1


# --- PHOENIX-2014T ----------------------------------------------------------------------------


@pytest.mark.parametrize("parent", [True, False], ids=["release-folder", "PHOENIX-2014-T"])
def test_phoenix_splits_texts_and_glosses(phoenix_release, tmp_path, parent):
    root = phoenix_release if parent else phoenix_release / "PHOENIX-2014-T"
    cfg = cfg_for(f"phoenix:{root}", tmp_path)
    for split, n in COUNTS.items():
        ds = build_dataset(cfg, split)
        assert isinstance(ds, Phoenix) and len(ds) == n and ds.videos.shape == (n, 4, 16, 16, 3)
        assert ds.texts[0] == f"tiefer luftdruck bestimmt in den nächsten tagen unser wetter {split} 0"
        assert ds.info[0] == {"orth": "DRUCK TIEF KOMMEN 0", "speaker": "Signer01"}
        np.testing.assert_allclose(levels(ds.videos), [[20, 60, 120, 160]] * n, atol=2)  # 8 PNGs: 0, 2, 5, 7


def test_phoenix_accepts_the_1_subfolder(tmp_path):
    fx.make_phoenix(tmp_path / "release", {"train": 2}, one_subfolder=True)
    ds = build_dataset(cfg_for(f"phoenix:{tmp_path / 'release'}", tmp_path / "cache"), "train")
    assert len(ds) == 2 and ds.info[1]["orth"] == "DRUCK TIEF KOMMEN 1"


# --- manifest ---------------------------------------------------------------------------------


def test_manifest_with_videos_frame_folders_and_splits(manifest_csv, tmp_path, caplog):
    cfg = cfg_for(f"manifest:{manifest_csv}", tmp_path)
    train, val = build_dataset(cfg, "train"), build_dataset(cfg, "val")
    assert isinstance(train, Manifest) and train.texts == ["video 0", "frames 0", "video 1", "frames 1"]
    assert train.sources[1] == "frames/f0" and train.videos.shape == (4, 4, 16, 16, 3)
    assert val.texts == ["video 2", "frames 2"]  # 'dev' means val
    with caplog.at_level(logging.WARNING):
        test = build_dataset(cfg, "test")
    assert len(test) == 0 and test.videos.shape == (0, 4, 16, 16, 3) and "empty" in caplog.text


def test_manifest_without_split_column_is_all_train(manifest_csv, tmp_path):
    csv = tmp_path / "nosplit.csv"
    csv.write_text(
        "video,text,signer\n" + "".join(f"{manifest_csv.parent}/clips/c{i}.mp4,clip {i},s{i}\n" for i in range(3))
    )
    cfg = cfg_for(f"manifest:{csv}", tmp_path / "cache")
    train = build_dataset(cfg, "train")
    assert train.texts == ["clip 0", "clip 1", "clip 2"] and train.info[2] == {"signer": "s2"}
    with pytest.raises(ValueError, match="no 'split' column"):
        build_dataset(cfg, "val")


# --- caching ----------------------------------------------------------------------------------


def test_second_use_reads_the_cache(how2sign_root, phoenix_release, manifest_csv, tmp_path, monkeypatch):
    specs = [f"how2sign:{how2sign_root}", f"phoenix:{phoenix_release}", f"manifest:{manifest_csv}"]
    first = [build_dataset(cfg_for(s, tmp_path), "train") for s in specs]
    forbid_decoding(monkeypatch)
    for spec, ds in zip(specs, first):
        again = build_dataset(cfg_for(spec, tmp_path), "train")
        assert again.texts == ds.texts and np.array_equal(again.videos, ds.videos)
        assert isinstance(again.videos, np.memmap)


def test_stale_or_partial_cache_is_rebuilt(tmp_path, monkeypatch):
    root = fx.make_how2sign(tmp_path / "h2s", {"train": 2})
    cfg = cfg_for(f"how2sign:{root}", tmp_path / "cache")
    ds = build_dataset(cfg, "train")
    calls = []
    real = decode.decode_clip
    monkeypatch.setattr(decode, "decode_clip", lambda *a: calls.append(a) or real(*a))
    ds.path.with_suffix(".json").unlink()  # a build that died between the .npy and its sidecar
    assert len(build_dataset(cfg, "train")) == 2 and len(calls) == 2
    annotation = root / "how2sign_realigned_train.csv"
    annotation.write_text(annotation.read_text().replace("train sentence number 1.", "edited caption"))
    assert build_dataset(cfg, "train").texts[1] == "edited caption" and len(calls) == 4
    assert not list(ds.path.parent.glob(".*tmp"))  # no temp files left behind


def test_concurrent_builds_agree(how2sign_root, tmp_path):
    # the trials of a sweep open the same split at once: one decodes, the others wait and read its cache
    cfg = cfg_for(f"how2sign:{how2sign_root}", tmp_path)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        built = list(pool.map(How2Sign, [cfg] * 2, ["train"] * 2))
    ds = How2Sign(cfg, "train")
    assert len(pickle.dumps(ds)) < ds.videos.nbytes  # pickles as its config, not its pixels
    assert len({hashlib.sha256(d.videos.tobytes()).hexdigest() for d in built + [ds]}) == 1
    assert sorted(p.name for p in ds.path.parent.iterdir()) == ["train.json", "train.lock", "train.npy"]


# --- bad rows and layouts ---------------------------------------------------------------------


def test_bad_rows_are_skipped_below_the_threshold_and_fail_above(tmp_path, caplog):
    bad_row = ["vx", "vx-5-rgb_front", "vx_0", "vx_0-5-rgb_front", "1.0", "2.0", ""]  # empty SENTENCE
    missing = ["vy", "vy-5-rgb_front", "vy_0", "vy_0-5-rgb_front", "1.0", "2.0", "no clip for this one"]
    assert max_skipped(5, 0.05) == 1 and max_skipped(100, 0.05) == 5 and max_skipped(100, 0.29) == 29
    root = fx.make_how2sign(tmp_path / "ok", {"train": 4}, extra_rows=[missing])
    with caplog.at_level(logging.WARNING):
        ds = build_dataset(cfg_for(f"how2sign:{root}", tmp_path / "cache"), "train")
    assert len(ds) == 4 and "skipped 1 of 5 rows" in caplog.text and "vy_0-5-rgb_front.mp4" in caplog.text
    assert ds.skipped == [
        (str(root / "train_rgb_front_clips/raw_videos/vy_0-5-rgb_front.mp4"), "no such file or folder")
    ]
    root = fx.make_how2sign(tmp_path / "bad", {"train": 4}, extra_rows=[bad_row, missing])
    with pytest.raises(ValueError, match=r"2 of 6 rows .* more than data.max_bad_fraction=0.05 allows \(1 row") as err:
        build_dataset(cfg_for(f"how2sign:{root}", tmp_path / "cache"), "train")
    assert "empty SENTENCE" in str(err.value) and "vy_0-5-rgb_front.mp4" in str(err.value)


def test_max_bad_fraction_is_a_knob(tmp_path, monkeypatch):
    bad = [
        ["vx", "vx-5-rgb_front", "vx_0", "vx_0-5-rgb_front", "1.0", "2.0", ""],  # empty SENTENCE
        ["vy", "vy-5-rgb_front", "vy_0", "vy_0-5-rgb_front", "1.0", "2.0", "no clip for this one"],
    ]
    root = fx.make_how2sign(tmp_path / "h2s", {"train": 6}, extra_rows=bad)
    strict = cfg_for(f"how2sign:{root}", tmp_path / "cache")
    with pytest.raises(
        ValueError,
        match=r"2 of 8 rows .* data\.max_bad_fraction=0\.05 allows .*"
        r"--set data\.max_bad_fraction=0\.3",
    ):
        build_dataset(strict, "train")
    loose = dataclasses.replace(strict, max_bad_fraction=0.3)
    assert len(build_dataset(loose, "train")) == 6
    forbid_decoding(monkeypatch)  # one cache for both thresholds: the stricter one still refuses it
    assert len(build_dataset(loose, "train")) == 6
    with pytest.raises(ValueError, match="data.max_bad_fraction=0.05"):
        build_dataset(strict, "train")


def test_corrupt_clips_count_as_skipped(tmp_path):
    root = fx.make_how2sign(tmp_path / "h2s", {"train": 3})
    clips = sorted((root / "train_rgb_front_clips" / "raw_videos").glob("*.mp4"))
    for clip in clips[:2]:
        clip.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="undecodable video"):
        build_dataset(cfg_for(f"how2sign:{root}", tmp_path / "cache"), "train")
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert left == []  # nothing half-built is left


@pytest.mark.parametrize("name", ["how2sign", "phoenix", "manifest"])
def test_missing_root_or_annotations_name_the_layout(tmp_path, name):
    with pytest.raises(ValueError, match="no such (folder|file); expected") as err:
        build_dataset(cfg_for(f"{name}:{tmp_path / 'nope'}", tmp_path), "train")
    assert str(tmp_path / "nope") in str(err.value) and "\n" not in str(err.value)
    if name != "manifest":
        with pytest.raises(ValueError, match="corpus.csv|how2sign_realigned_train.csv"):
            build_dataset(cfg_for(f"{name}:{tmp_path}", tmp_path), "train")


def test_relative_or_empty_spec_paths_raise(tmp_path):
    with pytest.raises(ValueError, match="absolute path"):
        build_dataset(cfg_for("how2sign:data/How2Sign", tmp_path), "train")
    with pytest.raises(ValueError, match="'phoenix:ROOT'"):
        build_dataset(cfg_for("phoenix:", tmp_path), "train")


def test_empty_train_split_raises(tmp_path):
    csv = fx.write_manifest(tmp_path / "m.csv", [{"video": "x.mp4", "text": "only val", "split": "val"}])
    with pytest.raises(ValueError, match="train split .* no usable clips"):
        build_dataset(cfg_for(f"manifest:{csv}", tmp_path / "cache"), "train")


# --- training on each format ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["how2sign", "phoenix", "manifest"])
def test_smoke_training_on_each_format(fmt, how2sign_root, phoenix_release, manifest_csv, tmp_path, text_encoder):
    from t2s_ray.t2s.in_process import train_local

    arg = {"how2sign": how2sign_root, "phoenix": phoenix_release, "manifest": manifest_csv}[fmt]
    cfg = resolve(
        "baseline",
        "smoke",
        0,
        tiny_overrides(
            f"data.spec={fmt}:{arg}",
            "model.patch_size=4",
            "training.steps=2",
            "training.report_every=1",
            "training.checkpoint_every=2",
            f"data.cache_dir={tmp_path / 'cache'}",
            drop=(
                "data.train_clips",
                "data.eval_clips",
                "training.warmup_steps",
                "eval.num_videos",
                "eval.sampling_steps",
                "eval.evaluator_clips",
                "eval.evaluator_epochs",
            ),
        ),
    )
    run = train_local(cfg, tmp_path / "out", dataset=build_dataset(cfg.data, "train"), text_encoder=text_encoder)
    assert run.state.step == 2 and np.isfinite(run.last_metrics["loss"])


def test_registry_names_every_format():
    assert {"synthsign", "how2sign", "phoenix", "manifest"} <= set(DATASETS)
