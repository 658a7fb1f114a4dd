"""The text-to-sign model: a text encoder and the video DiT that cross-attends to it."""

from __future__ import annotations

from torch import nn

from t2s_ray.data.cache import cache_root
from t2s_ray.metrics.efficiency import count_parameters
from t2s_ray.t2s.config import Config
from t2s_ray.t2s.models.dit import VideoDiT
from t2s_ray.t2s.models.sizes import DIT_SIZES
from t2s_ray.t2s.models.text_encoder import TextEncoder, TextOutput, default_text_encoder_path


class T2SModel(nn.Module):
    """Text encoder + video DiT; `forward` is the denoiser, `encode` the captions."""

    def __init__(self, text_encoder: TextEncoder, dit: VideoDiT):
        super().__init__()
        self.text_encoder = text_encoder
        self.dit = dit

    def encode(self, texts: list[str]) -> TextOutput:
        """Captions -> `TextOutput` (with gradients only when the encoder is finetuned)."""
        return self.text_encoder(texts)

    def forward(self, x, t, text: TextOutput):
        """Denoiser prediction for noisy clips `x` (B, C, T, H, W) at timesteps `t` (B,)."""
        return self.dit(x, t, text)

    def parameter_counts(self) -> tuple[int, int]:
        """(total, trainable) parameters, the text encoder's counted whether it is loaded or not."""
        dit, dit_trainable = count_parameters(self.dit)
        text, text_trainable = self.text_encoder.parameter_counts()
        return dit + text, dit_trainable + text_trainable

    def param_groups(self, lr: float, text_lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups: "dit" at `lr`, plus "text_encoder" at `text_lr` when it is finetuned."""
        groups = [
            {
                "name": "dit",
                "params": [p for p in self.dit.parameters() if p.requires_grad],
                "lr": lr,
                "weight_decay": weight_decay,
            }
        ]
        if not self.text_encoder.frozen:
            params = [p for p in self.text_encoder.parameters() if p.requires_grad]
            groups.append({"name": "text_encoder", "params": params, "lr": text_lr, "weight_decay": weight_decay})
        return groups


def build_model(cfg: Config, text_encoder: TextEncoder | None = None) -> T2SModel:
    """T2SModel from `cfg.model`, `cfg.data` and `cfg.text_encoder`; `text_encoder` reuses a loaded one.

    A frozen encoder keeps its caption encodings in the data cache (`<cache>/captions`): a trial whose captions
    were encoded before on the same kind of device does not load the encoder."""
    tc = cfg.text_encoder
    if text_encoder is None:
        text_encoder = TextEncoder(
            tc.path,
            freeze=tc.freeze,
            max_length=tc.max_length,
            cache_size=tc.cache_size,
            store=cache_root(cfg.data) / "captions",
        )
    else:
        _check_encoder_matches(text_encoder, tc)
    dit = VideoDiT(
        DIT_SIZES[cfg.model.size],
        frames=cfg.data.frames,
        height=cfg.data.height,
        width=cfg.data.width,
        patch_size=cfg.model.patch_size,
        in_channels=3,
        text_dim=text_encoder.hidden_size,
        grad_checkpointing=cfg.model.grad_checkpointing,
    )
    return T2SModel(text_encoder, dit)


def _check_encoder_matches(enc: TextEncoder, tc) -> None:
    """A pre-loaded encoder must be the one the config describes (path, freeze, max_length)."""
    want_path = tc.path or default_text_encoder_path()
    if enc.frozen != tc.freeze:
        raise ValueError(
            f"the given text encoder has frozen={enc.frozen} but text_encoder.freeze={tc.freeze}; "
            "load one with TextEncoder(freeze=cfg.text_encoder.freeze)"
        )
    if enc.path != want_path or enc.max_length != tc.max_length:
        raise ValueError(
            f"the given text encoder (path={enc.path!r}, max_length={enc.max_length}) is not the "
            f"configured one (text_encoder.path={want_path!r}, max_length={tc.max_length})"
        )
