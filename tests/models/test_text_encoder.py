"""Text encoder and T2SModel contracts: outputs, frozen vs finetuned, optimizer groups."""

import pytest
import torch

from t2s_ray.metrics.efficiency import count_parameters
from t2s_ray.t2s.ablations import resolve
from t2s_ray.t2s.models.t2s import build_model
from t2s_ray.t2s.models.text_encoder import TextEncoder, TextOutput, default_text_encoder_path, masked_mean

CAPTIONS = ["hello", "the weather tomorrow will be sunny and warm in the north"]


@pytest.fixture(scope="module")
def tiny_bert_path(tmp_path_factory):
    """A 1-layer BERT with the bundled tokenizer: a fast encoder to finetune (and a non-default path)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(default_text_encoder_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def tiny_cfg(freeze: bool, path: str = ""):
    return resolve(
        overrides=[
            f"text_encoder.freeze={freeze}",
            f"text_encoder.path={path}",
            "data.frames=2",
            "data.height=8",
            "data.width=8",
        ]
    )


def test_output_shapes_and_pooling(text_encoder):
    out = text_encoder(CAPTIONS)
    B, L, D = out.tokens.shape
    assert (B, D) == (2, 384) and text_encoder.hidden_size == 384
    assert out.mask.dtype == torch.bool and out.mask.shape == (B, L)
    assert out.mask[0].sum() == 3 and out.mask[1].all()  # [CLS] hello [SEP]; the long caption sets L
    assert out.pooled.shape == (B, D)
    torch.testing.assert_close(out.pooled[0], out.tokens[0, :3].mean(0))
    torch.testing.assert_close(masked_mean(out.tokens, out.mask), out.pooled)


def test_truncates_to_max_length(text_encoder):
    out = text_encoder(["sign " * 100, ""])
    assert out.tokens.shape[1] == text_encoder.max_length == 32
    assert out.mask[1].sum() == 2  # the empty caption is [CLS] [SEP]


def test_frozen_encoder_gets_no_gradient_and_stays_in_eval(text_encoder):
    model = build_model(tiny_cfg(freeze=True), text_encoder=text_encoder)
    model.train()
    assert model.dit.training and not model.text_encoder.model.training
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
    out = model.encode(CAPTIONS)
    assert not out.tokens.requires_grad and not out.pooled.requires_grad


def test_finetuned_encoder_gets_gradients(tiny_bert_path):
    model = build_model(tiny_cfg(freeze=False, path=tiny_bert_path))
    model.train()
    assert model.text_encoder.model.training and model.text_encoder.hidden_size == 16
    text = model.encode(CAPTIONS)
    x, t = torch.randn(2, 3, 2, 8, 8), torch.tensor([5, 600])
    torch.nn.init.normal_(model.dit.final.linear.weight)  # let gradient reach the text path
    torch.nn.init.normal_(model.dit.blocks[0].cross.proj.weight)
    model(x, t, text).square().mean().backward()
    grads = [p.grad for p in model.text_encoder.parameters()]
    assert all(g is not None for g in grads) and all(g.abs().sum() > 0 for g in grads)


def test_param_groups(text_encoder, tiny_bert_path):
    frozen = build_model(tiny_cfg(freeze=True), text_encoder=text_encoder)
    groups = frozen.param_groups(lr=1e-3, text_lr=1e-5, weight_decay=0.0)
    assert [g["name"] for g in groups] == ["dit"]
    assert sum(p.numel() for p in groups[0]["params"]) == sum(p.numel() for p in frozen.dit.parameters())
    total, trainable = count_parameters(frozen)
    assert trainable == sum(p.numel() for p in frozen.dit.parameters())
    assert total - trainable == 22_713_216 - 384 * 384 - 384  # all-MiniLM-L6-v2 without its unused pooler
    assert frozen.parameter_counts() == (total, trainable)

    tuned = build_model(tiny_cfg(freeze=False, path=tiny_bert_path))
    groups = {g["name"]: g for g in tuned.param_groups(lr=1e-3, text_lr=1e-5, weight_decay=0.01)}
    assert set(groups) == {"dit", "text_encoder"}
    assert groups["text_encoder"]["lr"] == 1e-5 and groups["dit"]["lr"] == 1e-3
    assert {id(p) for p in groups["text_encoder"]["params"]} == {id(p) for p in tuned.text_encoder.parameters()}
    torch.optim.AdamW(list(groups.values()))  # the groups are valid optimizer input
    assert count_parameters(tuned)[0] == count_parameters(tuned)[1]


def test_build_model_rejects_mismatched_encoder(text_encoder):
    with pytest.raises(ValueError, match="frozen=True but text_encoder.freeze=False"):
        build_model(tiny_cfg(freeze=False), text_encoder=text_encoder)


def test_missing_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="/no/such/model"):
        TextEncoder("/no/such/model")
    with pytest.raises(ValueError, match=str(tmp_path)):
        TextEncoder(str(tmp_path))  # a directory, but not a model


def test_cat_pads_to_longest():
    a = TextOutput(torch.ones(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 4))
    b = TextOutput(torch.full((2, 5, 4), 2.0), torch.ones(2, 5, dtype=torch.bool), torch.full((2, 4), 2.0))
    out = TextOutput.cat([a, b])
    assert out.tokens.shape == (3, 5, 4) and out.mask.shape == (3, 5) and out.pooled.shape == (3, 4)
    assert out.mask[0].tolist() == [True, True, False, False, False] and out.mask[1:].all()
    assert (out.tokens[0, 2:] == 0).all() and (out.tokens[1:] == 2).all()
    assert len(out) == 3 and out.to("cpu").tokens.device.type == "cpu"


def test_frozen_cache_matches_encoding_each_caption_alone(text_encoder):
    texts = ["a person signs HELLO.", "", "the signer says thank you and goodbye to the class", "a person signs HELLO."]
    cached = text_encoder(texts)
    uncached = TextEncoder(cache_size=0)
    assert len(uncached._cache) == 0
    for i, t in enumerate(texts):
        alone = uncached([t])
        n = alone.tokens.shape[1]
        assert int(cached.mask[i].sum()) == n and not cached.mask[i, n:].any()
        torch.testing.assert_close(cached.tokens[i, :n], alone.tokens[0])
        assert (cached.tokens[i, n:] == 0).all()
        torch.testing.assert_close(cached.pooled[i], alone.pooled[0])


def test_a_caption_first_met_with_static_padding_is_cached_without_it():
    """A compiled model pads every caption to max_length; the cache keeps a caption's real tokens only, so the
    padding never counts as tokens (the mask, the pooled mean), then or later without the padding."""
    enc = TextEncoder()
    enc.pad_to = 32
    padded = enc(["hello", ""])
    assert padded.tokens.shape[1] == 32 and padded.mask.sum(1).tolist() == [3, 2]  # [CLS] hello [SEP]; [CLS] [SEP]
    assert [len(enc._cache[t]) for t in ("hello", "")] == [3, 2]
    enc.pad_to = None
    assert enc(["hello", ""]).mask.sum(1).tolist() == [3, 2]


def test_cache_is_lru_bounded_and_off_when_finetuned():
    enc = TextEncoder(cache_size=2)
    enc(["a", "b"])
    enc(["a"])  # a is now the most recent
    enc(["c"])
    assert list(enc._cache) == ["a", "c"]
    tuned = TextEncoder(freeze=False, cache_size=2)
    tuned(["a", "b"])
    assert tuned.cache_size == 0 and len(tuned._cache) == 0


def test_relative_change_is_zero_frozen_and_measures_finetuning(text_encoder):
    assert text_encoder.relative_change() == 0.0
    tuned = TextEncoder(freeze=False)
    assert tuned.relative_change() == 0.0
    with torch.no_grad():
        for p in tuned.model.parameters():
            p.mul_(1.01)
    assert tuned.relative_change() == pytest.approx(0.01, rel=1e-3)


def test_prefill_encodes_a_split_in_chunks_deterministically(monkeypatch):
    texts = [f"a person signs word {i % 7}" for i in range(20)]
    enc = TextEncoder(cache_size=16)
    calls = []
    encode = enc._encode
    monkeypatch.setattr(enc, "_encode", lambda chunk: calls.append(list(chunk)) or encode(chunk))
    monkeypatch.setattr(TextEncoder, "PREFILL_CHUNK", 4)
    assert enc.prefill(texts) == 7 and [len(c) for c in calls] == [4, 3]  # 7 distinct captions, 2 calls
    assert list(enc._cache) == sorted(set(texts))
    calls.clear()
    out = enc(texts[:5])
    assert calls == []  # every caption answered from the cache
    alone = TextEncoder(cache_size=0)
    for i, t in enumerate(texts[:5]):  # the same states as encoding it alone, up to the padding's rounding
        ref = alone([t])
        n = ref.tokens.shape[1]
        assert int(out.mask[i].sum()) == n
        torch.testing.assert_close(out.tokens[i, :n], ref.tokens[0], atol=1e-5, rtol=1e-4)
    again = TextEncoder(cache_size=16)
    again.prefill(list(reversed(texts)))  # the order the split is read in does not matter
    assert all(torch.equal(again._cache[t], enc._cache[t]) for t in enc._cache)
    assert TextEncoder(cache_size=4).prefill(texts) == 0  # more captions than the cache holds: no prefill
    assert TextEncoder(freeze=False).prefill(texts) == 0


# --- the caption store: a frozen encoder's encodings on disk ------------------------------------------------

TRAIN = ["good morning", "thank you very much", "where is the station", "hello"]


def _encode_all(enc: TextEncoder) -> tuple[int, torch.Tensor, torch.Tensor]:
    """What a trial asks of its encoder: the training captions prefilled, then an unseen caption alone."""
    added = enc.prefill(TRAIN)
    return added, enc(TRAIN).tokens, enc(["an evaluation caption", ""]).tokens


def test_a_warm_caption_store_gives_the_same_bits_without_loading_the_model(tmp_path):
    cold = TextEncoder(store=tmp_path)
    assert not cold.loaded and cold.hidden_size == 384  # read from config.json
    cold_out = _encode_all(cold)
    assert cold.loaded
    warm = TextEncoder(store=tmp_path)
    warm_out = _encode_all(warm)
    assert not warm.loaded, "every encoding was in the store, yet the model was loaded"
    assert warm_out[0] == cold_out[0] == len(TRAIN)
    assert torch.equal(warm_out[1], cold_out[1]) and torch.equal(warm_out[2], cold_out[2])
    assert warm.parameter_counts() == cold.parameter_counts() == (22_713_216 - 384 * 384 - 384, 0)
    assert not warm.loaded  # counted from the store
    plain = TextEncoder()  # no store: what the store must reproduce
    assert torch.equal(_encode_all(plain)[1], cold_out[1]) and torch.equal(_encode_all(plain)[2], cold_out[2])


def test_the_store_keeps_apart_what_changes_the_bits(tmp_path):
    _encode_all(TextEncoder(store=tmp_path))
    other_length = TextEncoder(max_length=8, store=tmp_path)  # another tokenisation
    _encode_all(other_length)
    assert other_length.loaded
    padded = TextEncoder(store=tmp_path)
    padded.pad_to = 32  # a compiled model's static padding
    _encode_all(padded)
    assert padded.loaded
    other_set = TextEncoder(store=tmp_path)
    other_set.prefill(TRAIN[:2])  # another caption set: other chunks, so its own entry
    assert other_set.loaded
    assert len(list(tmp_path.iterdir())) == 3  # one folder per identity (tokenisation, padding)


def test_a_damaged_store_entry_is_encoded_again_and_rewritten(tmp_path, caplog):
    cold_out = _encode_all(TextEncoder(store=tmp_path))
    (entry,) = tmp_path.glob("*/prefill-*.pt")
    entry.write_bytes(entry.read_bytes()[:100])  # cut short
    again = TextEncoder(store=tmp_path)
    out = _encode_all(again)
    assert again.loaded and torch.equal(out[1], cold_out[1])
    assert f"caption store entry {entry} does not load" in caplog.text
    assert torch.load(entry, weights_only=True)["captions"] == sorted(TRAIN)  # rewritten whole
    warm = TextEncoder(store=tmp_path)
    assert torch.equal(_encode_all(warm)[1], cold_out[1]) and not warm.loaded


def test_an_unwritable_store_only_costs_the_encoding(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    enc = TextEncoder(store=blocked)
    added, tokens, _ = _encode_all(enc)
    assert added == len(TRAIN) and enc.loaded
    assert "caption store" in caplog.text and "not written" in caplog.text


def test_a_finetuned_encoder_ignores_the_store(tiny_bert_path, tmp_path):
    enc = TextEncoder(tiny_bert_path, freeze=False, store=tmp_path)
    assert enc.store is None and enc.loaded
    enc(TRAIN)
    assert not list(tmp_path.iterdir())
