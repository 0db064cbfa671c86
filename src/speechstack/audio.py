"""Decode audio files into fixed-rate mono float32 waveforms, with clear errors.

Handled where a user would expect it: any PCM width (8/16/24/32-bit) or float WAV, stereo
(downmixed), other sample rates (resampled), clips longer or shorter than the target length
(cropped or zero-padded). Refused with an error naming the file: missing, empty, corrupt or
truncated files, files holding no samples.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import soundfile

# libsndfile notes "data : <found> (should be <declared>)" when a WAV's data chunk is cut short.
TRUNCATED = re.compile(r"^\s*data : \d+ \(should be \d+\)", re.MULTILINE)


class AudioError(ValueError):
    """An audio file cannot be used; the message names the file and the reason."""


def read_audio(
    path: Path | str,
    sample_rate: int,
    *,
    start_seconds: float = 0.0,
    duration_seconds: float | None = None,
) -> np.ndarray:
    """Read ``path`` as mono float32 in [-1, 1] at ``sample_rate`` Hz.

    ``start_seconds``/``duration_seconds`` select a segment (in the file's own time), so a
    silence clip can be cut from a long noise file without decoding all of it.
    Returns shape ``(samples,)``.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: file is empty (0 bytes)")
    try:
        with soundfile.SoundFile(path) as sound:
            native_rate = sound.samplerate
            if sound.format == "WAV" and TRUNCATED.search(sound.extra_info):
                raise AudioError(
                    f"{path}: truncated (the header declares more audio data than the file holds)"
                )
            start = round(start_seconds * native_rate)
            if start:
                sound.seek(min(start, sound.frames))
            frames = -1 if duration_seconds is None else round(duration_seconds * native_rate)
            data = sound.read(frames=frames, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as error:
        raise AudioError(
            f"{path}: cannot decode audio ({error}); corrupt or not a sound file"
        ) from error
    except (RuntimeError, ValueError) as error:
        raise AudioError(f"{path}: cannot decode audio ({error})") from error
    if data.shape[0] == 0:
        raise AudioError(f"{path}: holds no audio samples (empty or truncated data chunk)")
    waveform = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(waveform).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    if native_rate != sample_rate:
        waveform = resample(waveform, native_rate, sample_rate)
    return np.ascontiguousarray(waveform, dtype=np.float32)


def resample(waveform: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a 1-D float waveform."""
    import soxr

    return soxr.resample(waveform, source_rate, target_rate, quality="HQ").astype(np.float32)


def fit_length(
    waveform: np.ndarray, samples: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Crop or zero-pad a 1-D waveform to exactly ``samples``.

    With ``rng`` (training) the crop window / padding offset is random; without it the clip
    is centred, so evaluation is deterministic.
    """
    length = waveform.shape[0]
    if length == samples:
        return waveform
    if length > samples:
        start = (
            int(rng.integers(0, length - samples + 1))
            if rng is not None
            else (length - samples) // 2
        )
        return waveform[start : start + samples]
    pad = samples - length
    before = int(rng.integers(0, pad + 1)) if rng is not None else pad // 2
    return np.pad(waveform, (before, pad - before))


def audio_info(path: Path | str) -> tuple[int, float]:
    """(sample rate in Hz, duration in seconds) without decoding the samples."""
    path = Path(path)
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise AudioError(f"{path}: cannot read audio header ({error})") from error
    return info.samplerate, info.frames / info.samplerate
