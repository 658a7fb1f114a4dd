"""SynthSign: determinism, splits, labels, captions, caching, and the video tensor helpers."""

import hashlib
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from t2s_ray.data import DATASETS, SPLITS, build_dataset, synthsign
from t2s_ray.data.synthsign import GLOSSES, SIGNS, SynthSign, caption, gloss_word, render_clip, split_sentences
from t2s_ray.data.video import save_gif, to_model_input, to_uint8
from t2s_ray.t2s.config import DataConfig


def tiny(tmp_path, **kw) -> DataConfig:
    return DataConfig(
        **{"frames": 4, "height": 16, "width": 16, "train_clips": 16, "eval_clips": 4, "cache_dir": str(tmp_path), **kw}
    )


def forbid_rendering(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("rendered although the cache was valid")

    monkeypatch.setattr(synthsign, "render_clip", boom)


# --- vocabulary and sentences -----------------------------------------------------------------


def test_vocabulary_has_50_distinct_signs():
    assert len(GLOSSES) >= 50 and len(set(GLOSSES)) == len(GLOSSES)
    assert len({sign[1:] for sign in SIGNS}) == len(SIGNS)  # (location, movement, handshape, hands)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_splits_are_disjoint_by_sentence_and_train_covers_every_gloss(seed):
    sentences = split_sentences(seed)
    sets = {s: set(sentences[s]) for s in SPLITS}
    assert all(len(sets[s]) == len(sentences[s]) for s in SPLITS)
    assert not sets["train"] & sets["val"] and not sets["train"] & sets["test"] and not sets["val"] & sets["test"]
    assert {g for seq in sets["train"] for g in seq} == set(range(len(GLOSSES)))
    assert {len(seq) for s in SPLITS for seq in sets[s]} == {1, 2, 3}


def test_phrasings_differ_and_mention_every_gloss():
    seq = (GLOSSES.index("THANK-YOU"), GLOSSES.index("HOUSE"), GLOSSES.index("CAR"))
    texts = {caption(seq, k) for k in range(synthsign.NUM_PHRASINGS)}
    assert len(texts) == synthsign.NUM_PHRASINGS >= 4
    for text in texts:
        low = text.lower().replace("-", " ")
        assert all(gloss_word(g) in low for g in seq), text
    assert "A person signs THANK-YOU then HOUSE then CAR." in texts


# --- the dataset ------------------------------------------------------------------------------


def test_shapes_dtypes_and_labels(tmp_path):
    cfg = tiny(tmp_path)
    for split, n in (("train", 16), ("val", 4), ("test", 4)):
        ds = build_dataset(cfg, split)
        assert isinstance(ds, SynthSign) and len(ds) == n and ds.num_glosses == len(GLOSSES)
        assert ds.videos.shape == (n, 4, 16, 16, 3) and ds.videos.dtype == np.uint8
        assert len(ds.texts) == len(ds.glosses) == n
        assert all(1 <= len(g) <= 3 and all(0 <= i < len(GLOSSES) for i in g) for g in ds.glosses)
    item = ds[-1]
    assert item["video"].shape == (4, 16, 16, 3) and item["index"] == 3
    assert item["text"] == ds.texts[3] and item["glosses"] == ds.glosses[3]
    with pytest.raises(IndexError):
        ds[4]


def test_get_batch_returns_a_writable_copy(tmp_path):
    ds = SynthSign(tiny(tmp_path), "train")
    videos, texts = ds.get_batch([3, 0, 3])
    assert videos.shape == (3, 4, 16, 16, 3) and videos.dtype == np.uint8
    assert type(videos) is np.ndarray and videos.flags.writeable and videos.flags.owndata
    assert texts == [ds.texts[3], ds.texts[0], ds.texts[3]]
    np.testing.assert_array_equal(videos[1], ds.videos[0])
    with pytest.raises(IndexError):
        ds.get_batch([16])


def test_captions_mention_glosses_and_vary(tmp_path):
    ds = SynthSign(tiny(tmp_path, train_clips=32), "train")
    for text, glosses in zip(ds.texts, ds.glosses):
        low = text.lower().replace("-", " ")
        assert all(gloss_word(g) in low for g in glosses), (text, glosses)
    frames = set()
    for text, glosses in zip(ds.texts, ds.glosses):
        for g in glosses:  # what is left once the gloss words are removed is the phrasing
            text = text.replace(GLOSSES[g], "").replace(gloss_word(g), "")
        frames.add(text)
    assert len(frames) >= 4


def test_same_config_gives_same_bytes_and_another_seed_does_not(tmp_path):
    a = SynthSign(tiny(tmp_path / "a"), "train")
    b = SynthSign(tiny(tmp_path / "b"), "train")
    c = SynthSign(tiny(tmp_path / "c", seed=1), "train")
    assert a.path != b.path and a.videos.tobytes() == b.videos.tobytes()
    assert a.texts == b.texts and a.glosses == b.glosses
    assert a.videos.tobytes() != c.videos.tobytes()


def test_splits_of_the_dataset_do_not_share_sentences(tmp_path):
    cfg = tiny(tmp_path, train_clips=64, eval_clips=16)
    seen = {split: set(SynthSign(cfg, split).glosses) for split in SPLITS}
    assert not seen["train"] & seen["val"] and not seen["train"] & seen["test"] and not seen["val"] & seen["test"]


def test_distinct_glosses_render_distinct_videos():
    clips = np.stack([render_clip([g], 4, 16, 16, np.random.default_rng(7)) for g in range(len(GLOSSES))])
    flat = clips.reshape(len(clips), -1).astype(np.float32)
    diff = np.abs(flat[:, None] - flat[None]).mean(-1)
    np.fill_diagonal(diff, np.inf)
    assert diff.min() > 0.3  # grey levels; glosses differing only in handshape are the closest


def test_render_clip_is_deterministic_and_checks_its_input():
    a = render_clip([0, 5, 9], 6, 24, 20, np.random.default_rng(3))
    b = render_clip([0, 5, 9], 6, 24, 20, np.random.default_rng(3))
    assert a.shape == (6, 24, 20, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    with pytest.raises(ValueError, match="glosses"):
        render_clip([0, 1, 2, 3], 4, 16, 16, np.random.default_rng(0))
    with pytest.raises(ValueError, match="glosses"):
        render_clip([len(GLOSSES)], 4, 16, 16, np.random.default_rng(0))


# --- the cache --------------------------------------------------------------------------------


def test_second_build_reads_the_cache(tmp_path, monkeypatch):
    first = SynthSign(tiny(tmp_path), "val")
    forbid_rendering(monkeypatch)
    second = SynthSign(tiny(tmp_path), "val")
    assert second.path == first.path and np.array_equal(second.videos, first.videos)
    assert isinstance(second.videos, np.memmap)


def test_cache_dir_falls_back_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("T2S_RAY_CACHE", str(tmp_path))
    ds = SynthSign(tiny(tmp_path, cache_dir=""), "test")
    assert ds.path.is_relative_to(tmp_path)
    with pytest.raises(ValueError, match="absolute"):
        SynthSign(tiny(tmp_path, cache_dir="relative/cache"), "test")


@pytest.mark.parametrize("damage", ["truncate", "garbage_sidecar", "no_sidecar", "wrong_shape"])
def test_damaged_cache_is_rebuilt(tmp_path, damage):
    good = SynthSign(tiny(tmp_path), "val")
    expected, meta = good.videos.tobytes(), good.path.with_suffix(".json")
    del good
    if damage == "truncate":
        data = meta.with_suffix(".npy").read_bytes()
        meta.with_suffix(".npy").write_bytes(data[: len(data) // 2])
    elif damage == "garbage_sidecar":
        meta.write_text("{not json")
    elif damage == "no_sidecar":
        meta.unlink()
    else:
        np.save(meta.with_suffix(".npy"), np.zeros((4, 4, 16, 8, 3), np.uint8))
    again = SynthSign(tiny(tmp_path), "val")
    assert again.videos.tobytes() == expected
    assert not [p for p in again.path.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_concurrent_builds_agree(tmp_path):
    # Ray trials of one sweep build the same cache at the same time (workers return pickled datasets)
    cfg = tiny(tmp_path, train_clips=48)
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as pool:
        built = list(pool.map(SynthSign, [cfg] * 3, ["train"] * 3))
    hashes = {hashlib.sha256(ds.videos.tobytes()).hexdigest() for ds in built + [SynthSign(cfg, "train")]}
    assert len(hashes) == 1
    folder = next((tmp_path / "synthsign").iterdir())
    assert sorted(p.suffix for p in folder.iterdir() if not p.name.startswith(".")) == [".json", ".lock", ".npy"]
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


def test_pickle_reopens_the_memmap_instead_of_copying_it(tmp_path):
    ds = SynthSign(tiny(tmp_path), "train")
    blob = pickle.dumps(ds)
    assert len(blob) < ds.videos.nbytes
    back = pickle.loads(blob)
    assert np.array_equal(back.videos, ds.videos) and back.texts == ds.texts


def test_unknown_split_and_spec_are_named(tmp_path):
    cfg = tiny(tmp_path)
    with pytest.raises(ValueError, match=r"'dev'.*train, val, test"):
        build_dataset(cfg, "dev")
    with pytest.raises(ValueError, match=r"'nope'.*synthsign"):
        build_dataset(tiny(tmp_path, spec="nope:/data"), "train")
    with pytest.raises(ValueError, match="synthsign"):
        build_dataset(tiny(tmp_path, spec="synthsign:extra"), "train")
    with pytest.raises(ValueError, match="known datasets: " + ", ".join(DATASETS)):
        build_dataset(tiny(tmp_path, spec="nope"), "train")
    assert DATASETS["synthsign"] is SynthSign and type(build_dataset(cfg, "val")) is SynthSign


# --- video helpers ----------------------------------------------------------------------------


def test_model_input_round_trip():
    videos = np.random.default_rng(0).integers(0, 256, size=(2, 3, 8, 6, 3), dtype=np.uint8)
    x = to_model_input(videos)
    assert x.shape == (2, 3, 3, 8, 6) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], torch.from_numpy(videos[..., 0]).float() / 127.5 - 1)
    np.testing.assert_array_equal(to_uint8(x), videos)
    np.testing.assert_array_equal(to_uint8(to_model_input(torch.from_numpy(videos))), videos)
    assert torch.equal(to_model_input(videos[:, ::-1], device="cpu"), x.flip(2))  # any strides, a device
    out_of_range = torch.tensor([-5.0, -1.0, 0.5, 1.0, 5.0]).view(1, 1, 5, 1, 1).expand(1, 3, 5, 1, 1)
    assert to_uint8(out_of_range)[0, :, 0, 0, 0].tolist() == [0, 0, 191, 255, 255]  # clamped, rounded


def test_video_helpers_check_shapes():
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(np.zeros((2, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_model_input(np.zeros((1, 2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="C=3"):
        to_uint8(torch.zeros(1, 4, 2, 8, 8))


def test_save_gif_writes_a_readable_gif(tmp_path):
    clips = np.stack([render_clip([g], 5, 16, 16, np.random.default_rng(g)) for g in range(3)])
    path = tmp_path / "out" / "clips.gif"
    save_gif(path, clips, ["A person signs HELLO.", "THINK", "someone is signing: know"], scale=2, fps=5)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5
        assert gif.size[0] == 3 * 16 * 2 and gif.size[1] > 16 * 2  # captions below the clips
    save_gif(path, clips[:1])  # no captions; overwrites atomically
    with Image.open(path) as gif:
        assert gif.size == (48, 48)
    with pytest.raises(ValueError, match="captions"):
        save_gif(path, clips, ["one"])


# --- difficulty knobs -------------------------------------------------------------------------


def test_vocabulary_takes_one_gloss_per_location_first():
    from t2s_ray.data.synthsign import LOCATIONS, vocabulary

    eight = vocabulary(8)
    assert len(eight) == 8 and {SIGNS[g][1] for g in eight} == set(LOCATIONS)
    assert vocabulary(0) == tuple(range(len(GLOSSES))) and sorted(vocabulary(len(GLOSSES))) == list(range(len(GLOSSES)))
    assert vocabulary(12)[:8] == eight


def test_small_vocabulary_single_gloss_clip_split():
    sentences = split_sentences(0, vocab_size=8, min_glosses=1, max_glosses=1, split_by="clip")
    assert sentences["train"] and all(len(s) == 1 for seqs in sentences.values() for s in seqs)
    assert set(sentences["train"]) == set(sentences["val"]) == set(sentences["test"])  # same sentences, new renders
    with pytest.raises(ValueError, match="split_by=clip"):
        split_sentences(0, vocab_size=8, min_glosses=1, max_glosses=1, split_by="sentence")


def test_default_knobs_keep_the_sentence_disjoint_splits():
    sets = {k: set(v) for k, v in split_sentences(3).items()}
    assert not (sets["train"] & sets["val"]) and not (sets["train"] & sets["test"])
    two = split_sentences(3, vocab_size=10, min_glosses=2, max_glosses=2)
    assert all(len(s) == 2 and s[0] != s[1] for seqs in two.values() for s in seqs)


def test_one_signer_looks_the_same_in_every_clip():
    from t2s_ray.data.synthsign import Style

    g = GLOSSES.index("MOTHER")
    fixed = [render_clip([g], 4, 32, 32, np.random.default_rng(i), Style(signers=1)) for i in range(3)]
    varied = [render_clip([g], 4, 32, 32, np.random.default_rng(i)) for i in range(3)]
    # frame 0's background corner is the signer's backdrop: one colour for one signer, several otherwise
    assert len({tuple(c[0, 0, 0]) for c in fixed}) == 1 and len({tuple(c[0, 0, 0]) for c in varied}) == 3


def test_motion_scale_moves_the_hands_further():
    from t2s_ray.data.synthsign import Style

    g = GLOSSES.index("HELLO")  # a sweep across the forehead

    def travel(scale):
        clip = render_clip([g], 8, 32, 32, np.random.default_rng(0), Style(signers=1, motion_scale=scale))
        return np.abs(np.diff(clip.astype(int), axis=0)).sum()

    assert travel(2.0) > 1.3 * travel(1.0)


def test_knobs_are_in_the_cache_key_and_the_data(tmp_path):
    from t2s_ray.data.synthsign import cache_key, vocabulary
    from t2s_ray.t2s.config import DataConfig

    base = DataConfig(cache_dir=str(tmp_path), train_clips=16, eval_clips=8, frames=4, height=16, width=16)
    small = DataConfig(**{**base.__dict__, "vocabulary": 4, "max_glosses": 1, "signers": 1, "split_by": "clip"})
    assert cache_key(base) != cache_key(small)
    ds = SynthSign(small, "val")
    assert {g for seq in ds.glosses for g in seq} <= set(vocabulary(4)) and all(len(s) == 1 for s in ds.glosses)


def test_references_are_other_renders_of_the_same_sentence(tmp_path):
    from t2s_ray.t2s.config import DataConfig

    ds = SynthSign(
        DataConfig(cache_dir=str(tmp_path), train_clips=8, eval_clips=4, frames=4, height=16, width=16), "val"
    )
    refs = ds.references(1, 3)
    assert refs.shape == (3, 4, 16, 16, 3) and refs.dtype == np.uint8
    assert np.array_equal(refs, ds.references(1, 3))  # deterministic
    assert not np.array_equal(refs[0], refs[1]) and not np.array_equal(refs[0], ds[1]["video"])
