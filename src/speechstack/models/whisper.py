"""Whisper's audio encoder with a frame head and pooled classifier.

For real use, ``pretrained: openai/whisper-tiny`` (8M encoder parameters) or
``openai/whisper-base`` (20M); only the encoder is kept (loaded through
``WhisperForAudioClassification``, which never builds the decoder). A from-scratch ``config``
makes a small encoder for offline demos and tests.

Whisper's log-mel is computed in torch on the model's device exactly as
``WhisperFeatureExtractor`` does: the clip zero-padded to the encoder's input length, a
centred 400-point STFT (periodic Hann, hop 160, reflect padding, last frame dropped), Slaney
mel filters 0-8000 Hz (80 or 128 bins, from the model config), ``log10`` floored at 1e-10,
clamped to ``max - 8`` per clip and scaled ``(x + 4) / 4``. The real encoder takes 3000
frames (30 s); ``max_source_positions`` can cut that (each position = 2 frames = 20 ms).
Only encoder frames that hold the clip are pooled. ``tests/test_transformer_models.py``
checks the log-mel against ``WhisperFeatureExtractor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from pydantic import Field
from torch import nn

from speechstack.features import SpecAugment
from speechstack.models import ModelContext, register_model
from speechstack.models.pooling import PooledClassifier, PoolingName
from speechstack.models.pretrained import (
    FrameHead,
    HeadName,
    LayerWeightedSum,
    TransformerParams,
    ceil_div,
    class_names,
    freeze,
    freeze_first_layers,
    load_transformer,
    require_checkpoint_rate,
    valid_mask,
)

if TYPE_CHECKING:
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

LOG_FLOOR = 1e-10  # mel power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below each clip's maximum (80 dB)


class WhisperLogMel(nn.Module):
    """Waveform ``(batch, samples)`` -> Whisper log-mel ``(batch, n_mels, frames)`` with
    ``frames = total_samples // hop_length`` (the clip is zero-padded to ``total_samples``
    first, as ``WhisperFeatureExtractor`` pads to 30 s). Values are about -1.5 .. 1.5."""

    def __init__(
        self,
        n_mels: int,
        total_samples: int,
        sample_rate: int = 16000,
        n_fft: int = 400,
        hop_length: int = 160,
    ) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.total_samples = total_samples
        import librosa  # here, not at import (slow to import; only the filterbank)

        filters = librosa.filters.mel(
            sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=8000.0, norm="slaney"
        )
        self.register_buffer("filters", torch.from_numpy(filters), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        samples = waveform.shape[-1]
        if samples > self.total_samples:
            raise ValueError(
                f"clips of {samples} samples are longer than the Whisper encoder's input "
                f"({self.total_samples} samples); raise model.params.max_source_positions"
            )
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            # Zeros past the input length too (half a window), so the last frames see the
            # same silence they would in a 30 s pad, not a reflection of the clip.
            extra = self.total_samples - samples + self.n_fft // 2
            padded = nn.functional.pad(waveform.float(), (0, extra))
            frames = self.total_samples // self.hop_length
            spectrum = torch.stft(
                padded,
                self.n_fft,
                self.hop_length,
                window=self.window,
                center=True,
                pad_mode="reflect",
                return_complex=True,
            )[..., :frames]
            power = spectrum.real.square() + spectrum.imag.square()
            log_mel = torch.matmul(self.filters, power).clamp_min(LOG_FLOOR).log10()
            peak = log_mel.amax(dim=(1, 2), keepdim=True)
            log_mel = torch.maximum(log_mel, peak - DYNAMIC_RANGE)
            return (log_mel + 4.0) / 4.0


class WhisperParams(TransformerParams):
    hf_config: ClassVar[str] = "WhisperConfig"

    max_source_positions: int | None = Field(None, ge=1)  # encoder positions kept, 20 ms
    #   (2 log-mel frames) each; null = the model's own (1500 = 30 s for openai checkpoints).
    #   Fewer is proportionally faster: the positional table is cut to the first N
    freeze_encoder: bool = False  # train only the head (linear probing)
    freeze_layers: int = Field(0, ge=0)  # the conv stem and the first N transformer layers
    #   are not trained
    weighted_layer_sum: bool = False  # pool a learned softmax mix of every hidden layer
    head: HeadName = "linear"  # per-frame head: none, linear, cnn, lstm
    head_dim: int = Field(256, ge=1)  # output width of the head (unused for none)
    pooling: PoolingName = "mean"  # over the frames that hold the clip
    dropout: float = Field(0.1, ge=0, lt=1)  # before the head and before the classifier


class WhisperClassifier(nn.Module):
    """Waveform ``(batch, samples)`` at 16 kHz -> log-mel ``(batch, n_mels, 2 * positions)``
    -> (training) SpecAugment on the clip's frames -> Whisper encoder ``(batch, positions,
    d_model)`` -> optional layer mix -> frame head -> pooled over the clip's positions ->
    logits ``(batch, num_classes)``."""

    def __init__(self, params: WhisperParams, context: ModelContext) -> None:
        from transformers import WhisperConfig, WhisperForAudioClassification
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        super().__init__()
        require_checkpoint_rate(params, context)
        names = class_names(context)
        if params.pretrained is None:
            self.encoder = load_transformer(WhisperEncoder, WhisperConfig, params, names)
        else:
            loaded = load_transformer(WhisperForAudioClassification, WhisperConfig, params, names)
            self.encoder = loaded.encoder  # the projector/classifier of that class are unused
        encoder = self.encoder
        self.skips_layers = encoder.config.encoder_layerdrop > 0  # DDP: look for unused
        if params.max_source_positions is not None:
            _cut_positions(encoder, params.max_source_positions)
        self.stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]  # frames per position
        self.positions = encoder.config.max_source_positions
        self.hop_length = 160
        self.log_mel = WhisperLogMel(
            encoder.config.num_mel_bins,
            self.positions * self.stride * self.hop_length,
            context.audio.sample_rate,
            hop_length=self.hop_length,
        )
        if context.audio.clip_samples > self.log_mel.total_samples:
            raise ValueError(
                f"clips of {context.audio.clip_seconds} s are longer than the Whisper encoder "
                f"input ({self.positions} positions = "
                f"{self.log_mel.total_samples / context.audio.sample_rate:g} s): raise "
                "model.params.max_source_positions (at most the checkpoint's own)"
            )
        self.spec_augment = SpecAugment(context.spec_augment)
        dim = encoder.config.d_model
        self.layer_sum = (
            LayerWeightedSum(encoder.config.encoder_layers + 1)
            if params.weighted_layer_sum
            else None
        )
        self.head = FrameHead(params.head, dim, params.head_dim, params.dropout)
        self.classifier = PooledClassifier(
            params.pooling, self.head.out_dim, context.num_classes, params.dropout
        )
        if params.freeze_encoder:
            freeze(encoder)
        if params.freeze_layers:
            freeze_first_layers(encoder.layers, params.freeze_layers)
            freeze(encoder.conv1)
            freeze(encoder.conv2)

    def forward(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """``lengths``: optional ``(batch,)`` valid samples per clip; ``None`` = the whole
        ``samples`` axis is audio. Encoder positions past the audio are not pooled."""
        samples = waveform.shape[-1]
        features = self.log_mel(waveform)
        clip_frames = ceil_div(samples, self.hop_length)
        if self.training:  # mask time/frequency only where the clip is, not in the padding
            augmented = self.spec_augment(features[..., :clip_frames])
            features = torch.cat([augmented, features[..., clip_frames:]], dim=-1)
        outputs = self.encoder(features, output_hidden_states=self.layer_sum is not None)
        if self.layer_sum is not None:
            hidden = self.layer_sum(outputs.hidden_states)
        else:
            hidden = outputs.last_hidden_state  # (batch, positions, d_model)
        if lengths is None:
            lengths = torch.full((waveform.shape[0],), samples, device=waveform.device)
        positions = ceil_div(ceil_div(lengths, self.hop_length), self.stride)
        mask = valid_mask(positions, hidden.shape[1])
        return self.classifier(self.head(hidden, mask), mask)


def _cut_positions(encoder: WhisperEncoder, positions: int) -> None:
    """Keep the first ``positions`` rows of the (fixed, sinusoidal) positional table, so the
    encoder takes ``2 * positions`` log-mel frames instead of 3000."""
    table = encoder.embed_positions
    if positions > table.num_embeddings:
        raise ValueError(
            f"model.params.max_source_positions={positions} but the encoder has only "
            f"{table.num_embeddings} positions"
        )
    if positions == table.num_embeddings:
        return
    cut = nn.Embedding(positions, table.embedding_dim)
    cut.weight.data.copy_(table.weight.data[:positions])
    cut.requires_grad_(table.weight.requires_grad)
    encoder.embed_positions = cut.to(table.weight.device)
    encoder.config.max_source_positions = positions
    encoder.max_source_positions = positions


TINY_CONFIG = {  # ~31k parameters, 1 s input (50 positions = 100 log-mel frames)
    "d_model": 32,
    "encoder_layers": 2,
    "encoder_attention_heads": 2,
    "encoder_ffn_dim": 64,
    "num_mel_bins": 80,
    "max_source_positions": 50,
}


@register_model(
    "whisper", WhisperParams, tiny={"config": TINY_CONFIG, "head_dim": 32, "dropout": 0.0}
)
def build_whisper(params: WhisperParams, context: ModelContext) -> nn.Module:
    return WhisperClassifier(params, context)
