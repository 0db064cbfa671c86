"""Audio Spectrogram Transformer: HF ``ASTForAudioClassification`` on a Kaldi fbank.

For real use, ``pretrained: MIT/ast-finetuned-speech-commands-v2`` (98.1% on Speech
Commands v2; 128 frames = 1.28 s input) or ``MIT/ast-finetuned-audioset-10-10-0.4593``
(1024 frames); the classifier is replaced when the label count differs. A from-scratch
``config`` makes a small model for offline demos and tests.

The fbank is computed in torch on the model's device, as ``torchaudio.compliance.kaldi.fbank``
(what ``ASTFeatureExtractor`` uses) does it: 25 ms frames every 10 ms without edge padding
(``snip_edges``), per-frame DC removal, pre-emphasis 0.97, a window, a 512-point power
spectrum, Kaldi mel filters (20 Hz .. Nyquist) and the natural log. Frames are zero-padded
to the model's ``max_length`` and normalised as ``(fbank - mean) / (2 * std)``.
``tests/test_transformer_models.py`` checks it against ``ASTFeatureExtractor``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from speechstack.features import SpecAugment
from speechstack.models import ModelContext, register_model
from speechstack.models.pooling import PooledClassifier
from speechstack.models.pretrained import (
    class_names,
    encoder_layers,
    freeze,
    freeze_first_layers,
    load_transformer,
    read_preprocessor_config,
    require_checkpoint_rate,
)
from speechstack.params.models import ASTParams, WindowName

log = logging.getLogger(__name__)

AUDIOSET_MEAN = -4.2677393  # ASTFeatureExtractor defaults: fbank statistics of AudioSet
AUDIOSET_STD = 4.5689974
FLOAT_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's floor on mel energies before the log


def kaldi_mel(frequency: torch.Tensor) -> torch.Tensor:
    """Hz -> Kaldi mel (``1127 ln(1 + f / 700)``)."""
    return 1127.0 * torch.log1p(frequency / 700.0)


def kaldi_mel_filters(
    n_mels: int, n_fft: int, sample_rate: int, low_hz: float = 20.0, high_hz: float = 0.0
) -> torch.Tensor:
    """Kaldi's triangular mel filters ``(n_mels, n_fft // 2 + 1)``: triangles equally spaced
    on the mel scale between ``low_hz`` and ``high_hz`` (``<= 0``: Nyquist minus that),
    unnormalised, weights computed in mel space; the Nyquist bin gets no weight."""
    nyquist = sample_rate / 2
    high_hz = high_hz if high_hz > 0 else nyquist + high_hz
    mel_low, mel_high = kaldi_mel(torch.tensor([low_hz, high_hz], dtype=torch.float64))
    delta = (mel_high - mel_low) / (n_mels + 1)
    bins = torch.arange(n_mels, dtype=torch.float64).unsqueeze(1)
    left = mel_low + bins * delta
    centre = mel_low + (bins + 1) * delta
    right = mel_low + (bins + 2) * delta
    bin_hz = sample_rate / n_fft * torch.arange(n_fft // 2, dtype=torch.float64)
    mel = kaldi_mel(bin_hz).unsqueeze(0)  # (1, n_fft // 2)
    rising = (mel - left) / (centre - left)
    falling = (right - mel) / (right - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.nn.functional.pad(filters, (0, 1)).float()  # zero weight on the Nyquist bin


def kaldi_window(name: WindowName, length: int) -> torch.Tensor:
    """Kaldi's symmetric analysis windows: ``hanning`` (what AST checkpoints were trained
    with), ``povey`` (hann ** 0.85, Kaldi's default) and ``hamming``."""
    if name == "hanning":
        return torch.hann_window(length, periodic=False, dtype=torch.float64).float()
    if name == "povey":
        return torch.hann_window(length, periodic=False, dtype=torch.float64).pow(0.85).float()
    if name == "hamming":
        return torch.hamming_window(
            length, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64
        ).float()
    raise ValueError(f"unknown window '{name}'; known: hanning, povey, hamming")


class KaldiFbank(nn.Module):
    """Waveform ``(batch, samples)`` at ``sample_rate`` Hz -> Kaldi log mel filterbank
    ``(batch, frames, n_mels)`` (natural log of power), ``frames = 1 + (samples - frame) //
    hop`` with ``frame``/``hop`` = 25 ms/10 ms in samples (no edge padding).

    ``dither`` (standard deviation of Gaussian noise added to each frame, in waveform units)
    applies in training mode only, so evaluation is deterministic.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        n_mels: int = 128,
        window: WindowName = "hanning",
        frame_seconds: float = 0.025,
        hop_seconds: float = 0.010,
        preemphasis: float = 0.97,
        low_hz: float = 20.0,
        dither: float = 0.0,
    ) -> None:
        super().__init__()
        self.frame_length = round(sample_rate * frame_seconds)
        self.hop_length = round(sample_rate * hop_seconds)
        self.n_fft = 1 << math.ceil(math.log2(self.frame_length))  # Kaldi: next power of two
        self.preemphasis = preemphasis
        self.dither = dither
        self.register_buffer("window", kaldi_window(window, self.frame_length), persistent=False)
        self.register_buffer(
            "filters",
            kaldi_mel_filters(n_mels, self.n_fft, sample_rate, low_hz),
            persistent=False,
        )

    def frame_count(self, samples: int) -> int:
        return 1 + (samples - self.frame_length) // self.hop_length

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.shape[-1] < self.frame_length:
            raise ValueError(
                f"clips of {waveform.shape[-1]} samples are shorter than one fbank frame "
                f"({self.frame_length} samples)"
            )
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            frames = waveform.float().unfold(-1, self.frame_length, self.hop_length)
            if self.training and self.dither > 0:
                frames = frames + self.dither * torch.randn_like(frames)
            frames = frames - frames.mean(dim=-1, keepdim=True)
            previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
            frames = (frames - self.preemphasis * previous) * self.window
            spectrum = torch.fft.rfft(frames, n=self.n_fft)  # zero-padded to n_fft
            power = spectrum.real.square() + spectrum.imag.square()
            mel = torch.matmul(power, self.filters.T)  # (batch, frames, n_mels)
            return mel.clamp_min(FLOAT_EPSILON).log()


class ASTClassifier(nn.Module):
    """Waveform ``(batch, samples)`` -> fbank ``(batch, frames, num_mel_bins)`` zero-padded to
    ``max_length`` frames and normalised -> (training) SpecAugment -> AST tokens ``(batch,
    2 + patches, hidden)`` -> its own head, or a pooling of the patch tokens -> logits
    ``(batch, num_classes)``. ``num_mel_bins`` and ``max_length`` come from the model's
    config, so the features always match what the checkpoint expects."""

    def __init__(self, params: ASTParams, context: ModelContext) -> None:
        from transformers import ASTConfig, ASTForAudioClassification

        super().__init__()
        require_checkpoint_rate(params, context)
        self.model = load_transformer(
            ASTForAudioClassification, ASTConfig, params, class_names(context), has_head=True
        )
        config = self.model.config
        self.fbank = KaldiFbank(
            context.audio.sample_rate, config.num_mel_bins, params.window, dither=params.dither
        )
        self.max_length = config.max_length
        frames = self.fbank.frame_count(context.audio.clip_samples)
        if frames > self.max_length:
            raise ValueError(
                f"clips of {context.audio.clip_seconds} s give {frames} fbank frames but the "
                f"AST model takes at most max_length={self.max_length}: shorten "
                "audio.clip_seconds or use a model with a longer max_length"
            )
        preprocessor = read_preprocessor_config(params.pretrained)
        self.mean = _statistic(params.fbank_mean, preprocessor, "mean", AUDIOSET_MEAN, params)
        self.std = _statistic(params.fbank_std, preprocessor, "std", AUDIOSET_STD, params)
        self.spec_augment = SpecAugment(context.spec_augment)
        base = self.model.audio_spectrogram_transformer
        if params.pretrained is None:  # HF zero-initialises these; checkpoints overwrite them
            for parameter in (
                base.embeddings.position_embeddings,
                base.embeddings.cls_token,
                base.embeddings.distillation_token,
            ):
                nn.init.trunc_normal_(parameter, std=0.02)
        if params.freeze_layers:
            freeze_first_layers(encoder_layers(base), params.freeze_layers)
            freeze(base.embeddings)
        self.token_classifier = None
        if params.pooling != "cls":
            self.token_classifier = PooledClassifier(
                params.pooling, config.hidden_size, context.num_classes, params.dropout
            )
            freeze(self.model.classifier)  # unused: frozen so no optimiser/DDP expects grads

    def features(self, waveform: torch.Tensor) -> torch.Tensor:
        """Waveform ``(batch, samples)`` -> normalised fbank ``(batch, max_length, mels)``,
        exactly the ``input_values`` ``ASTFeatureExtractor`` would give (before SpecAugment)."""
        fbank = self.fbank(waveform)[:, : self.max_length]
        fbank = nn.functional.pad(fbank, (0, 0, 0, self.max_length - fbank.shape[1]))
        return (fbank - self.mean) / (2 * self.std)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.spec_augment(self.features(waveform).transpose(1, 2)).transpose(1, 2)
        if self.token_classifier is None:
            return self.model(input_values=features).logits
        tokens = self.model.audio_spectrogram_transformer(features).last_hidden_state
        return self.token_classifier(tokens[:, 2:])  # patches: after [CLS] and distillation


def _statistic(
    value: float | None, preprocessor: dict, key: str, default: float, params: ASTParams
) -> float:
    if value is not None:
        return value
    if key in preprocessor:
        return float(preprocessor[key])
    if params.pretrained is not None:
        log.warning(
            "AST: no fbank_%s in model.params and no preprocessor_config.json in %s; using "
            "the AudioSet value %s (set model.params.fbank_%s to the checkpoint's own)",
            key,
            params.pretrained,
            default,
            key,
        )
    return default


TINY_CONFIG = {  # ~26k parameters: 32 mel bins x 100 frames in 16x16 patches (2 x 6)
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "num_mel_bins": 32,
    "max_length": 100,
    "patch_size": 16,
    "frequency_stride": 16,
    "time_stride": 16,
}


@register_model("ast", ASTParams, tiny={"config": TINY_CONFIG})
def build_ast(params: ASTParams, context: ModelContext) -> nn.Module:
    return ASTClassifier(params, context)
