"""Log-mel features and SpecAugment as torch modules, run on the model's device.

They live inside the model, so training and inference can never compute features
differently. librosa supplies only the mel filterbank; ``tests/test_features.py`` checks the
output against ``librosa.feature.melspectrogram`` + ``power_to_db``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speechstack.config import FeatureConfig, PcenConfig, SpecAugmentConfig

AMIN = 1e-10  # power floor before the log, as librosa.power_to_db


class Decibels(nn.Module):
    """Mel power ``(batch, frames, n_mels)`` -> dB ``(batch, n_mels, frames)`` (10·log10 of
    power, ref 1.0, floored at ``AMIN`` as librosa's ``power_to_db``)."""

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return (10.0 * torch.log10(mel.clamp_min(AMIN))).transpose(1, 2)


class Pcen(nn.Module):
    """Mel power ``(batch, frames, n_mels)`` -> per-channel energy normalised
    ``(batch, n_mels, frames)`` (``PcenConfig``). The smoother ``M`` is the IIR filter
    ``M[t] = b·E[t] + (1 - b)·M[t - 1]``, ``M[-1] = E[0]`` (librosa's ``pcen`` with its
    state scaled to the first frame, so the start does not depend on the recording's
    level), computed as one product with a lower-triangular matrix of the filter's
    impulse response: no loop over frames, and an exported graph holds it as a constant.
    """

    CACHED_LENGTHS = 8  # smoother matrices kept (one per input length and device)

    def __init__(self, config: PcenConfig, n_mels: int, frames_per_second: float) -> None:
        super().__init__()
        t_frames = config.time_constant * frames_per_second
        self.b = (math.sqrt(1 + 4 * t_frames**2) - 1) / (2 * t_frames**2)  # as librosa
        self.eps = config.eps
        initial = torch.log(torch.tensor([config.alpha, config.delta, config.r]))
        initial = initial[:, None].expand(3, n_mels).clone()  # log alpha, log delta, log r
        if config.trainable:
            self.log_params = nn.Parameter(initial)
        else:
            self.register_buffer("log_params", initial)
        self._smoothers: dict[tuple[int, str], torch.Tensor] = {}

    def smoother(self, frames: int, device: torch.device) -> torch.Tensor:
        """``(frames, frames)``: ``M[:, t] = E[:, j] @ W[j, t]`` (cached per length)."""
        key = (frames, str(device))
        if key not in self._smoothers:
            if len(self._smoothers) >= self.CACHED_LENGTHS:  # variable-length batches (ASR):
                self._smoothers.clear()  # frames² floats each, so only a few are kept
            lag = torch.arange(frames, dtype=torch.float64)
            lag = lag[None, :] - lag[:, None]  # t - j
            weights = torch.where(lag >= 0, self.b * (1 - self.b) ** lag.clamp_min(0), 0.0)
            weights[0] += (1 - self.b) ** (torch.arange(frames, dtype=torch.float64) + 1)
            self._smoothers[key] = weights.float().to(device)
        return self._smoothers[key]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        mel = mel.transpose(1, 2)  # (batch, n_mels, frames)
        smooth = mel @ self.smoother(mel.shape[-1], mel.device)
        alpha, delta, r = self.log_params.exp()[..., None]  # each (n_mels, 1)
        gain = (self.eps + smooth).pow(-alpha)
        return (mel * gain + delta).pow(r) - delta.pow(r)


class LogMel(nn.Module):
    """Waveform ``(batch, samples)`` at ``sample_rate`` Hz -> log-mel ``(batch, n_mels, frames)``
    in dB (10·log10 of power, ref 1.0), frames = 1 + samples // hop_length (centred,
    zero-padded STFT, as librosa); with ``config.pcen`` the mel power is normalised by
    ``Pcen`` instead of the dB scale.

    The arithmetic of ``torch.stft`` + ``|.|²`` + filterbank matmul, arranged for speed: the
    frames are windowed and ``rfft``-ed directly; the power is ``re² + im²`` of the real view
    of the spectrum (no complex intermediates); the filterbank is applied band by band
    (``MELS_PER_BAND`` filters times only the FFT bins they cover: a quarter of the dense
    matmul's work at 64 mels); and on the CPU the batch goes through in chunks of about
    ``CPU_CHUNK_FRAMES`` frames, so the intermediates stay in cache. ``make bench`` compares it
    with a single ``torch.stft`` of the batch and with librosa (README, Benchmarks).
    """

    MELS_PER_BAND = 16
    CPU_CHUNK_FRAMES = 1600  # frames per chunk on the CPU (15 one-second clips)

    def __init__(
        self, config: FeatureConfig, sample_rate: int, warp: SpecAugmentConfig | None = None
    ) -> None:
        super().__init__()
        self.warp = warp if warp is not None and warp.warp_p > 0 and warp.warp > 0 else None
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.win_length = config.win_length
        import librosa  # here, not at import (slow to import; only the filterbank)

        filterbank = librosa.filters.mel(
            sr=sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.f_min,
            fmax=config.f_max,
        )  # (n_mels, n_fft // 2 + 1)
        self.register_buffer("filterbank", torch.from_numpy(filterbank), persistent=False)
        # torch.stft's window: a periodic Hann of win_length, centred in n_fft with zeros
        left = (config.n_fft - config.win_length) // 2
        window = torch.hann_window(config.win_length, periodic=True)
        window = F.pad(window, (left, config.n_fft - config.win_length - left))
        self.register_buffer("window", window, persistent=False)
        self.bands = _filterbank_bands(self.filterbank, self.MELS_PER_BAND)
        self.compress: nn.Module = (
            Pcen(config.pcen, config.n_mels, sample_rate / config.hop_length)
            if config.pcen is not None
            else Decibels()
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            waveform = waveform.float()
            if waveform.dim() == 1:
                return self.forward(waveform[None])[0]
            chunk = waveform.shape[0]
            if waveform.device.type == "cpu":
                frames = frame_count(waveform.shape[-1], self.hop_length)
                chunk = max(1, self.CPU_CHUNK_FRAMES // frames)
            return torch.cat([self._log_mel(part) for part in waveform.split(chunk)])

    def _log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` float32 -> ``(batch, n_mels, frames)`` dB."""
        padded = F.pad(waveform, (self.n_fft // 2, self.n_fft // 2))
        frames = padded.unfold(-1, self.n_fft, self.hop_length)  # (batch, frames, n_fft)
        spectrum = torch.view_as_real(torch.fft.rfft(frames * self.window))  # (..., bins, 2)
        real, imaginary = spectrum[..., 0], spectrum[..., 1]
        power = torch.addcmul(real.square(), imaginary, imaginary)  # (batch, frames, bins)
        if self.warp is not None and self.training:
            power = warp_frequencies(power, self.warp.warp_p, self.warp.warp)
        mel = torch.cat(
            [
                power[..., bin_start:bin_stop]
                @ self.filterbank[mel_start:mel_stop, bin_start:bin_stop].T
                for mel_start, mel_stop, bin_start, bin_stop in self.bands
            ],
            dim=-1,
        )  # (batch, frames, n_mels)
        return self.compress(mel)

    def exportable(self) -> DftLogMel:
        """The same log-mel in operators every ONNX runtime has (``export.py``)."""
        return DftLogMel(self)


class DftLogMel(nn.Module):
    """``LogMel``'s arithmetic for export: the frames are gathered with a fixed index (the
    window's non-zero taps only) and the windowed real DFT is one matrix product with a
    cosine/sine basis, so the graph needs no FFT, unfold or complex operator (ONNX's DFT
    and STFT operators are slower in ONNX Runtime than this product on the CPU). Same
    output as the ``LogMel`` it is made from, to float32 rounding (``tests/test_export.py``).
    The gather index becomes a constant of an exported graph, so the graph takes windows of
    the length it was exported with."""

    def __init__(self, log_mel: LogMel) -> None:
        super().__init__()
        self.n_fft = log_mel.n_fft
        self.hop_length = log_mel.hop_length
        taps = log_mel.window.ne(0).nonzero().flatten()
        self.first_tap = int(taps[0])
        self.taps = int(taps[-1]) + 1 - self.first_tap
        self.bins = self.n_fft // 2 + 1
        times = torch.arange(self.first_tap, self.first_tap + self.taps, dtype=torch.float64)
        bins = torch.arange(self.bins, dtype=torch.float64)
        angle = 2 * math.pi * ((bins[:, None] * times[None, :]) % self.n_fft) / self.n_fft
        window = log_mel.window.double()[self.first_tap : self.first_tap + self.taps]
        basis = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
        self.register_buffer("basis", basis.T.float().contiguous(), persistent=False)
        self.register_buffer("filterbank", log_mel.filterbank.T.contiguous(), persistent=False)
        self.compress = log_mel.compress

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.compress(self.mel_power(waveform))

    def mel_power(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(batch, samples)`` -> mel power ``(batch, frames, n_mels)``, before compression."""
        samples = waveform.shape[-1]
        frames = frame_count(samples, self.hop_length)
        before = self.n_fft // 2 - self.first_tap
        after = max(0, (frames - 1) * self.hop_length + self.taps - before - samples)
        padded = F.pad(waveform.float(), (before, after))
        index = (
            torch.arange(frames, device=waveform.device)[:, None] * self.hop_length
            + torch.arange(self.taps, device=waveform.device)[None, :]
        )  # (frames, taps): a constant of the exported graph
        spectrum = padded[:, index] @ self.basis  # (batch, frames, 2 * bins)
        real, imaginary = spectrum[..., : self.bins], spectrum[..., self.bins :]
        return (real * real + imaginary * imaginary) @ self.filterbank


def warp_frequencies(power: torch.Tensor, p: float, warp: float) -> torch.Tensor:
    """Vocal-tract length perturbation of a power spectrum ``(batch, frames, bins)``: with
    chance ``p`` per clip, bin ``k`` takes the (linearly interpolated) power at ``k / a``
    for a factor ``a`` drawn uniformly from ``[1 - warp, 1 + warp]``, so every frequency
    moves by ``a`` (a > 1: a shorter vocal tract, higher formants); what falls beyond the
    top bin is cut, what the stretch leaves empty at the top is the top bin's power."""
    batch, _, bins = power.shape
    device = power.device
    factor = 1 + warp * (2 * torch.rand(batch, device=device) - 1)
    factor = torch.where(torch.rand(batch, device=device) < p, factor, torch.ones_like(factor))
    source = (torch.arange(bins, device=device)[None, :] / factor[:, None]).clamp(max=bins - 1)
    low = source.floor().long()
    high = (low + 1).clamp(max=bins - 1)
    weight = (source - low)[:, None, :]  # (batch, 1, bins)
    index = (batch, power.shape[1], bins)
    below = power.gather(2, low[:, None, :].expand(index))
    above = power.gather(2, high[:, None, :].expand(index))
    return torch.lerp(below, above, weight.to(power.dtype))


def _filterbank_bands(
    filterbank: torch.Tensor, mels_per_band: int
) -> list[tuple[int, int, int, int]]:
    """Split ``(n_mels, bins)`` into bands of consecutive filters:
    ``(mel_start, mel_stop, bin_start, bin_stop)``, the bins spanning every nonzero weight of
    the band's filters (an empty span for a band of all-zero filters)."""
    bands = []
    for mel_start in range(0, filterbank.shape[0], mels_per_band):
        mel_stop = min(mel_start + mels_per_band, filterbank.shape[0])
        used = filterbank[mel_start:mel_stop].ne(0).any(dim=0).nonzero().flatten().tolist()
        bin_start, bin_stop = (used[0], used[-1] + 1) if used else (0, 0)
        bands.append((mel_start, mel_stop, bin_start, bin_stop))
    return bands


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


class Lifter(nn.Module):
    """Cepstral smoothing of log-mel ``(batch, n_mels, frames)``: each frame's orthonormal
    DCT-II along the mel axis keeps its first ``coefficients`` terms and is transformed back
    to ``n_mels`` bands. One fixed ``n_mels x n_mels`` matrix (a projection: applying it twice
    changes nothing), so it costs one small matrix product and exports as one."""

    def __init__(self, n_mels: int, coefficients: int) -> None:
        super().__init__()
        bands = torch.arange(n_mels, dtype=torch.float64)
        orders = torch.arange(coefficients, dtype=torch.float64)
        dct = torch.cos(math.pi / n_mels * (bands[None, :] + 0.5) * orders[:, None])
        dct = dct * math.sqrt(2.0 / n_mels)
        dct[0] /= math.sqrt(2.0)  # (coefficients, n_mels), orthonormal rows
        self.register_buffer("projection", (dct.T @ dct).float(), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.einsum("mn,bnt->bmt", self.projection, features)


class FrequencyNorm(nn.Module):
    """Level-invariant scaling of log-mel ``(batch, n_mels, frames)``: each clip's mean dB
    is subtracted (``mode="clip"``: a recording's gain is a constant dB offset) or each mel
    band's mean over the clip (``mode="band"``: a fixed microphone, channel or room colouring
    is a constant dB offset per band too), or nothing (``mode="none"``: the level stays
    visible), then batch normalisation per mel bin puts the values on a unit scale without
    a dataset-statistics pass."""

    def __init__(self, n_mels: int, mode: str = "clip") -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)
        self.dims: tuple[int, ...] | None = {"clip": (1, 2), "band": (2,), "none": None}[mode]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.dims is None:
            return self.norm(features)
        return self.norm(features - features.mean(dim=self.dims, keepdim=True))


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
        self.log_mel = LogMel(config, sample_rate, spec_augment)
        self.lifter = (
            Lifter(config.n_mels, config.lifter) if config.lifter is not None else nn.Identity()
        )
        self.norm = FrequencyNorm(config.n_mels, config.norm)
        self.spec_augment = SpecAugment(spec_augment)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.spec_augment(self.norm(self.lifter(self.log_mel(waveform))))
