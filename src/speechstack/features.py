"""Log-mel features and SpecAugment as torch modules, run on the model's device.

They live inside the model, so training and inference can never compute features
differently. librosa supplies only the mel filterbank; ``tests/test_features.py`` checks the
output against ``librosa.feature.melspectrogram`` + ``power_to_db``.
"""

from __future__ import annotations

import librosa
import torch
from torch import nn

from speechstack.config import FeatureConfig, SpecAugmentConfig

AMIN = 1e-10  # power floor before the log, as librosa.power_to_db


class LogMel(nn.Module):
    """Waveform ``(batch, samples)`` at ``sample_rate`` Hz -> log-mel ``(batch, n_mels, frames)``
    in dB (10·log10 of power, ref 1.0), frames = 1 + samples // hop_length (centred,
    zero-padded STFT, as librosa)."""

    def __init__(self, config: FeatureConfig, sample_rate: int) -> None:
        super().__init__()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.win_length = config.win_length
        filterbank = librosa.filters.mel(
            sr=sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.f_min,
            fmax=config.f_max,
        )
        self.register_buffer("filterbank", torch.from_numpy(filterbank), persistent=False)
        self.register_buffer(
            "window", torch.hann_window(config.win_length, periodic=True), persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            spectrum = torch.stft(
                waveform.float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                win_length=self.win_length,
                window=self.window,
                center=True,
                pad_mode="constant",
                return_complex=True,
            )
            power = spectrum.real.square() + spectrum.imag.square()
            mel = torch.matmul(self.filterbank, power)
            return 10.0 * torch.log10(mel.clamp_min(AMIN))


class SpecAugment(nn.Module):
    """Random time and frequency masks on ``(batch, n_mels, frames)``, training only.

    Masked cells are set to the per-example mean, so the mask carries no level cue.
    """

    def __init__(self, config: SpecAugmentConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        config = self.config
        if not self.training or config.p == 0:
            return features
        batch, n_mels, frames = features.shape
        device = features.device
        apply = torch.rand(batch, 1, 1, device=device) < config.p
        mask = torch.zeros_like(features, dtype=torch.bool)
        for size, width, count, axis in (
            (n_mels, config.freq_width, config.freq_masks, 1),
            (frames, config.time_width, config.time_masks, 2),
        ):
            positions = torch.arange(size, device=device)
            for _ in range(count):
                widths = torch.randint(0, width + 1, (batch, 1), device=device)
                starts = (torch.rand(batch, 1, device=device) * (size - widths + 1)).long()
                band = (positions >= starts) & (positions < starts + widths)  # (batch, size)
                mask |= band.unsqueeze(3 - axis)
        mean = features.mean(dim=(1, 2), keepdim=True)
        return torch.where(mask & apply, mean, features)


class FrequencyNorm(nn.Module):
    """Level-invariant scaling of log-mel ``(batch, n_mels, frames)``: each clip's mean dB
    is subtracted (a recording's gain is a constant dB offset), then batch normalisation
    per mel bin puts the values on a unit scale without a dataset-statistics pass."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(features - features.mean(dim=(1, 2), keepdim=True))


def frame_count(samples: int, hop_length: int) -> int:
    """Frames a centred STFT yields for ``samples`` samples."""
    return 1 + samples // hop_length


class LogMelFrontEnd(nn.Module):
    """The shared front-end of the spectrogram families: waveform ``(batch, samples)`` ->
    normalised, (in training) SpecAugmented log-mel ``(batch, n_mels, frames)``."""

    def __init__(
        self, config: FeatureConfig, sample_rate: int, spec_augment: SpecAugmentConfig
    ) -> None:
        super().__init__()
        self.log_mel = LogMel(config, sample_rate)
        self.norm = FrequencyNorm(config.n_mels)
        self.spec_augment = SpecAugment(spec_augment)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.spec_augment(self.norm(self.log_mel(waveform)))
