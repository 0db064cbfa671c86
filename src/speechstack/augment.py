"""Waveform augmentation: what differs between the training clips and the clips of unseen
speakers, rooms and channels, drawn afresh for every training clip; and the fixed, test-like
corruption of validation clips (``shifted_condition``) that experiments are compared on.

Training transforms are called as ``transform(samples (samples,) float32, sample_rate Hz)
-> (samples,) float32``; each applies with its probability ``p`` and draws its randomness
only from Python's ``random`` and NumPy's global ``np.random`` functions, as audiomentations
does, so seeding both (the training process and every loader worker do) reproduces the
output. None of them changes its input in place (it may be a stored clip).

``shifted_condition`` instead draws from a generator seeded by the config's seed and the
clip's name, so every experiment sees the identical corrupted clip, with noise kinds the
training transforms never produce.
"""

from __future__ import annotations

import hashlib
import math
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import scipy.signal
from pydantic import BaseModel

from speechstack.audio import read_audio
from speechstack.config import (
    AugmentConfig,
    BandAugment,
    ColoredNoiseAugment,
    EqAugment,
    MixAugment,
    NoiseAugment,
    PitchAugment,
    PlacementAugment,
    ReverbAugment,
    ShiftAugment,
    ShiftedValidationConfig,
    SpeedAugment,
    StretchAugment,
)
from speechstack.registry import Registry

WaveformTransform = Callable[[np.ndarray, int], np.ndarray]
ClipSource = Callable[[], np.ndarray]

# Below this RMS a clip counts as silent: there is no level to set an SNR against.
SILENT_RMS = 1e-9


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.dot(samples, samples) / samples.size))


def _random_source(rng: np.random.Generator | None) -> Any:
    """``rng``, or NumPy's global functions (what a training transform draws from)."""
    return np.random if rng is None else rng


def _add_at_snr(samples: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``samples + noise`` scaled so the clip's RMS is ``snr_db`` above the noise's; the
    clip unchanged when either is silent (no level to set, no division by zero)."""
    signal_rms = _rms(samples) if samples.size else 0.0
    noise_rms = _rms(noise) if noise.size else 0.0
    if signal_rms < SILENT_RMS or noise_rms < SILENT_RMS:
        return samples
    scale = signal_rms / noise_rms / 10 ** (snr_db / 20)
    return samples + noise * np.float32(scale)


# Cut-offs are rounded to grids (in octaves) so filters and curves are made once, then cached.
CUTOFF_GRID_OCTAVES = 1 / 24  # band filters
ABSORPTION_GRID_OCTAVES = 1 / 6  # reverb tails


def _on_grid(hz: float, octaves: float = CUTOFF_GRID_OCTAVES) -> float:
    """``hz`` rounded to the nearest point of a grid ``octaves`` apart."""
    steps = round(math.log2(hz) / octaves)
    return round(2 ** (steps * octaves), 3)


# ---------------------------------------------------------------------------------------
# Background noise files


class BackgroundNoise:
    """Mix in a random segment of a random noise file at a random SNR (dB, relative to the
    clip's RMS), with probability ``p``: ``audiomentations.AddBackgroundNoise`` with the same
    parameters, the same draws from ``random`` in the same order, and the same mix, but each
    noise file is decoded once per process (on first use; ~25 MB for Kaggle's six files) and
    segments are sliced in memory, instead of a file open, seek and read on every call (that
    was most of the loader's time).

    Called as ``transform(samples (samples,) float32, sample_rate) -> samples``.
    """

    def __init__(
        self, noise_files: Sequence[Path], min_snr_db: float, max_snr_db: float, p: float
    ) -> None:
        if not noise_files:
            raise ValueError("BackgroundNoise needs at least one noise file")
        if min_snr_db > max_snr_db:
            raise ValueError(f"min_snr_db {min_snr_db} > max_snr_db {max_snr_db}")
        self.noise_files = [Path(path) for path in noise_files]
        self.min_snr_db = min_snr_db
        self.max_snr_db = max_snr_db
        self.p = p
        self._noise: dict[tuple[int, int], np.ndarray] = {}  # (file index, rate) -> waveform

    def __getstate__(self) -> dict:
        # A pickled copy (spawned loader workers) decodes its own noise instead of carrying it.
        return {**self.__dict__, "_noise": {}}

    def noise(self, index: int, sample_rate: int) -> np.ndarray:
        """Noise file ``index`` as mono float32 at ``sample_rate``, decoded once."""
        key = (index, sample_rate)
        if key not in self._noise:
            self._noise[key] = read_audio(self.noise_files[index], sample_rate)
        return self._noise[key]

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        # The draws of audiomentations' randomize_parameters, in its order.
        if not random.random() < self.p:
            return samples
        snr_db = random.uniform(self.min_snr_db, self.max_snr_db)
        random.uniform(-45.0, -15.0)  # its absolute-level draw, unused in relative mode
        index = random.randint(0, len(self.noise_files) - 1)
        noise = self.noise(index, sample_rate)
        signal_seconds = len(samples) / sample_rate
        offset = random.uniform(0.0, max(0.0, len(noise) / sample_rate - signal_seconds))
        if len(samples) == 0:
            return samples
        start = int(offset * sample_rate)
        segment = noise[start : start + int(signal_seconds * sample_rate)]
        noise_rms = _rms(segment)
        if noise_rms < 1e-9:
            warnings.warn(
                f"{self.noise_files[index]} is too silent to be added as noise; "
                "the clip is left unchanged",
                stacklevel=2,
            )
            return samples
        desired_rms = _rms(samples) / 10 ** (snr_db / 20)
        segment = segment * np.float32(desired_rms / noise_rms)
        if len(segment) < len(samples):  # a noise file shorter than the clip is repeated
            segment = np.tile(segment, -(-len(samples) // len(segment)))
        return samples + segment[: len(samples)]


# ---------------------------------------------------------------------------------------
# Placement: where in the window the word is


def loud_span(
    samples: np.ndarray, sample_rate: int, threshold_db: float, frame_seconds: float = 0.01
) -> tuple[int, int] | None:
    """``(start, stop)`` in samples of the span from the first to the last frame (of
    ``frame_seconds``) whose mean power is within ``threshold_db`` (<= 0) of the loudest
    frame's; None for an empty or silent clip."""
    count = len(samples)
    frame = max(1, round(frame_seconds * sample_rate))
    if count == 0:
        return None
    full = count // frame
    head = samples[: full * frame].reshape(full, frame)
    power = np.einsum("ij,ij->i", head, head) / frame
    if full * frame < count:
        rest = samples[full * frame :]
        power = np.append(power, np.dot(rest, rest) / len(rest))
    peak = float(power.max())
    if not peak > SILENT_RMS**2:
        return None
    loud = power >= peak * 10 ** (threshold_db / 10)
    first = int(np.argmax(loud))
    last = len(loud) - 1 - int(np.argmax(loud[::-1]))
    return first * frame, min(count, (last + 1) * frame)


class Placement:
    """Move the spoken part to a random place in the clip, with probability ``p``: the clip
    is rolled circularly so that its loud span (``loud_span``) starts at a uniformly drawn
    sample where the span still fits; what wraps around is the clip's own background, so no
    silence or edge is invented. A silent clip, or one loud throughout, is left as is.
    Test speakers do not start their word where training speakers did."""

    def __init__(self, threshold_db: float = -30.0, p: float = 1.0) -> None:
        self.threshold_db = threshold_db
        self.p = p

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if not random.random() < self.p:
            return samples
        span = loud_span(samples, sample_rate, self.threshold_db)
        if span is None:
            return samples
        start, stop = span
        new_start = random.randint(0, len(samples) - (stop - start))
        if new_start == start:
            return samples
        return np.roll(samples, new_start - start)


# ---------------------------------------------------------------------------------------
# Speed: the voice's tempo, pitch and formants together


def change_speed(samples: np.ndarray, rate: float) -> np.ndarray:
    """Resample ``(samples,)`` by ``rate`` (> 1: faster and higher) with linear
    interpolation to ``round(samples / rate)`` samples, then centre-crop or zero-pad
    (symmetric) back to the input's length. The same mapping as ``torch``'s linear
    interpolation (``align_corners=False``) that the test-time views use, so training and
    prediction resample alike."""
    count = len(samples)
    if count == 0 or rate == 1.0:
        return samples
    length = max(1, round(count / rate))
    if length >= count:
        first, before = (length - count) // 2, 0
    else:
        first, before = 0, (count - length) // 2
    kept = min(length, count)  # resampled samples that land in the output
    positions = np.arange(first, first + kept, dtype=np.float64)
    positions += 0.5
    positions *= count / length
    positions -= 0.5
    np.maximum(positions, 0.0, out=positions)
    resampled = np.interp(positions, np.arange(count), samples).astype(np.float32)
    if kept == count:
        return resampled
    out = np.zeros(count, dtype=np.float32)
    out[before : before + kept] = resampled
    return out


class Speed:
    """Resample by a rate uniform in [``min_rate``, ``max_rate``] (``change_speed``), with
    probability ``p``: a longer or shorter vocal tract and a slower or faster talker at
    once, at a fraction of the cost of a pitch shift or time stretch."""

    def __init__(self, min_rate: float, max_rate: float, p: float) -> None:
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.p = p

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if not random.random() < self.p:
            return samples
        return change_speed(samples, random.uniform(self.min_rate, self.max_rate))


# ---------------------------------------------------------------------------------------
# Reverb: synthetic rooms


@dataclass(frozen=True)
class Room:
    """A synthetic room's impulse response parameters."""

    rt60: float  # s for the tail's energy to fall by 60 dB
    predelay: float  # s from the direct sound to the onset of the tail
    direct_to_reverberant_db: float  # direct-path energy over the tail's energy (dB)
    absorption_hz: float  # the tail's low-pass cut-off (Hz): walls and air absorb highs

    @property
    def seconds(self) -> float:
        """Duration of the response up to the tail's -60 dB point."""
        return self.predelay + self.rt60


@dataclass(frozen=True)
class RoomRanges:
    """Uniform ranges that ``draw_room`` draws a Room's fields from."""

    predelay: tuple[float, float] = (0.002, 0.02)  # s
    direct_to_reverberant_db: tuple[float, float] = (-3.0, 12.0)  # dB
    absorption_hz: tuple[float, float] = (2000.0, 8000.0)  # Hz


TRAINING_ROOMS = RoomRanges()
# Validation's test-like rooms: farther from the talker (more tail), darker, longer delays.
SHIFTED_ROOMS = RoomRanges(
    predelay=(0.005, 0.03), direct_to_reverberant_db=(-6.0, 6.0), absorption_hz=(1500.0, 5000.0)
)
SHIFTED_RT60 = (0.3, 1.2)  # s


def draw_room(
    uniform: Callable[[float, float], float],
    min_rt60: float,
    max_rt60: float,
    ranges: RoomRanges = TRAINING_ROOMS,
) -> Room:
    """A Room with every field uniform in its range; ``uniform`` is ``random.uniform`` in
    training and a seeded generator's ``uniform`` for shifted validation."""
    return Room(
        rt60=uniform(min_rt60, max_rt60),
        predelay=uniform(*ranges.predelay),
        direct_to_reverberant_db=uniform(*ranges.direct_to_reverberant_db),
        absorption_hz=uniform(*ranges.absorption_hz),
    )


def _fft_size(count: int) -> int:
    """The smallest 2**k x (1, 5/4, 3/2 or 7/4) >= ``count``: mostly-radix-2 sizes, which
    pocketfft transforms faster than the 5-smooth ones ``next_fast_len`` returns."""
    power = 1 << max(0, (count - 1).bit_length() - 4)  # 8 x power <= count <= 16 x power
    return min(size for size in (8, 10, 12, 14, 16) if size * power >= count) * power


@lru_cache(maxsize=128)
def _absorption(size: int, sample_rate: int, absorption_hz: float) -> tuple[np.ndarray, float]:
    """A one-pole low-pass magnitude at ``absorption_hz`` on the ``size // 2 + 1`` bins of a
    ``size``-point rFFT (float32), and its mean power gain."""
    frequencies = scipy.fft.rfftfreq(size, 1 / sample_rate)
    magnitude = (1 / np.sqrt(1 + (frequencies / absorption_hz) ** 2)).astype(np.float32)
    return magnitude, float(np.mean(magnitude.astype(np.float64) ** 2))


def _room_spectrum(
    room: Room, sample_rate: int, length: int, size: int, rng: np.random.Generator | None
) -> np.ndarray:
    """The rFFT (``size`` points, ``size // 2 + 1`` bins, complex64) of ``room``'s impulse
    response cut to ``length`` samples (see ``room_impulse_response``). The direct path is
    a constant 1 and the tail's absorption a zero-phase one-pole magnitude (its cut-off
    rounded to a 1/6-octave grid, so the curve is cached), both applied in the frequency
    domain at no time-domain cost."""
    onset = min(max(1, round(room.predelay * sample_rate)), length)
    if onset == length:
        return np.ones(size // 2 + 1, dtype=np.complex64)
    tail = _random_source(rng).random(length - onset).astype(np.float32)
    tail -= 0.5
    decay = -3 * math.log(10) / (room.rt60 * sample_rate)  # amplitude: 10**-3 per RT60
    tail *= np.exp(np.arange(length - onset, dtype=np.float32) * np.float32(decay))
    absorption, power_gain = _absorption(
        size, sample_rate, _on_grid(room.absorption_hz, ABSORPTION_GRID_OCTAVES)
    )
    # The tail's energy after absorption: a white tail's, scaled by the mean power gain.
    tail_energy = float(np.dot(tail, tail)) * power_gain
    if not tail_energy > 0:
        return np.ones(size // 2 + 1, dtype=np.complex64)
    placed = np.zeros(length, dtype=np.float32)
    placed[onset:] = tail
    spectrum = scipy.fft.rfft(placed, size)
    reverberant = 10 ** (-room.direct_to_reverberant_db / 10)
    unit = 1 / math.sqrt(1 + reverberant)  # direct + tail energy = 1
    spectrum *= absorption * np.float32(unit * math.sqrt(reverberant / tail_energy))
    spectrum += np.float32(unit)  # the direct path
    return spectrum


def room_impulse_response(
    room: Room,
    sample_rate: int,
    *,
    max_samples: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``(samples,)`` float32 impulse response of unit energy (a reverberated clip keeps
    its level): the direct path (a unit impulse at sample 0), then after ``room.predelay``
    a noise tail whose energy falls 60 dB over ``room.rt60``, low-passed at
    ``room.absorption_hz`` and scaled to ``room.direct_to_reverberant_db`` below the direct
    path. Lasts ``room.seconds`` (at most ``max_samples``); the tail noise is drawn from
    ``rng`` (default: NumPy's global functions)."""
    length = max(1, round(room.seconds * sample_rate) + 1)
    if max_samples is not None:
        length = max(1, min(length, max_samples))
    size = _fft_size(2 * length)
    spectrum = _room_spectrum(room, sample_rate, length, size, rng)
    return scipy.fft.irfft(spectrum, size)[:length].astype(np.float32, copy=False)


def reverberate(
    samples: np.ndarray, room: Room, sample_rate: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``(samples,)`` convolved with ``room``'s impulse response (linear, by FFT), cropped
    to the input's length: the clip as heard in that room, direct sound undelayed."""
    count = len(samples)
    if count == 0:
        return samples
    length = max(1, min(round(room.seconds * sample_rate) + 1, count))
    size = _fft_size(count + length - 1)
    spectrum = scipy.fft.rfft(samples, size)
    spectrum *= _room_spectrum(room, sample_rate, length, size, rng)
    return scipy.fft.irfft(spectrum, size)[:count].astype(np.float32, copy=False)


class Reverb:
    """Convolution with a synthetic room (``room_impulse_response``) whose RT60 is uniform
    in [``min_rt60``, ``max_rt60``] s, with probability ``p``: test clips are recorded in
    rooms the training speakers never were in."""

    def __init__(self, min_rt60: float, max_rt60: float, p: float) -> None:
        self.min_rt60 = min_rt60
        self.max_rt60 = max_rt60
        self.p = p

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if not random.random() < self.p:
            return samples
        room = draw_room(random.uniform, self.min_rt60, self.max_rt60)
        return reverberate(samples, room, sample_rate)


# ---------------------------------------------------------------------------------------
# Band: channels (telephone, cheap microphones)


@lru_cache(maxsize=1024)
def _butterworth(kind: str, order: int, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    """A Butterworth ``kind`` ('highpass'/'lowpass') filter as float32 second-order sections."""
    sos = scipy.signal.butter(order, cutoff_hz, kind, fs=sample_rate, output="sos")
    return sos.astype(np.float32)


def band_limit(
    samples: np.ndarray,
    sample_rate: int,
    low_hz: float | None,
    high_hz: float | None,
    low_order: int = 2,
    high_order: int = 4,
) -> np.ndarray:
    """``(samples,)`` through a Butterworth high-pass at ``low_hz`` (order ``low_order``)
    and low-pass at ``high_hz`` (order ``high_order``); None, or a low-pass cut-off at or
    above 0.45 x ``sample_rate`` (nothing left to cut), skips that side. Cut-offs are
    rounded to a 1/24-octave grid so each filter is designed once."""
    sections = []
    if low_hz is not None:
        sections.append(_butterworth("highpass", low_order, _on_grid(low_hz), sample_rate))
    if high_hz is not None and high_hz < 0.45 * sample_rate:
        sections.append(_butterworth("lowpass", high_order, _on_grid(high_hz), sample_rate))
    if not sections or len(samples) == 0:
        return samples
    sos = sections[0] if len(sections) == 1 else np.concatenate(sections)
    return scipy.signal.sosfilt(sos, samples).astype(np.float32, copy=False)


class Band:
    """A band-limited channel, with probability ``p``: a high-pass at a cut-off uniform in
    [``min_low_hz``, ``max_low_hz``] and a low-pass at one uniform in [``min_high_hz``,
    ``max_high_hz``] (Hz), each of order 2 or 4 (drawn): telephones, laptop and phone
    microphones cut what the training microphones kept."""

    def __init__(
        self,
        min_low_hz: float,
        max_low_hz: float,
        min_high_hz: float,
        max_high_hz: float,
        p: float,
    ) -> None:
        self.min_low_hz = min_low_hz
        self.max_low_hz = max_low_hz
        self.min_high_hz = min_high_hz
        self.max_high_hz = max_high_hz
        self.p = p

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if not random.random() < self.p:
            return samples
        low_hz = random.uniform(self.min_low_hz, self.max_low_hz)
        high_hz = random.uniform(self.min_high_hz, self.max_high_hz)
        low_order = random.choice((2, 4))
        high_order = random.choice((2, 4))
        return band_limit(samples, sample_rate, low_hz, high_hz, low_order, high_order)


# ---------------------------------------------------------------------------------------
# Colored noise

# Colored noise has no power below this (a microphone's DC block; the log-mel front-end
# starts about here), so its SNR counts only power the model sees.
COLORED_NOISE_MIN_HZ = 20.0


@lru_cache(maxsize=64)
def _log_frequencies(count: int, sample_rate: int) -> tuple[np.ndarray, int]:
    """ln(frequency) of the rFFT bins of a ``count``-sample signal from
    ``COLORED_NOISE_MIN_HZ`` up, and the index of the first of them."""
    frequencies = scipy.fft.rfftfreq(count, 1 / sample_rate)
    first = int(np.searchsorted(frequencies, COLORED_NOISE_MIN_HZ))
    return np.log(frequencies[first:]).astype(np.float32), first


def colored_noise(
    count: int, sample_rate: int, exponent: float, rng: np.random.Generator | None = None
) -> np.ndarray:
    """``(count,)`` float32 noise of unit RMS whose power spectral density falls as
    1/f**``exponent`` (-2 violet, 0 white, 1 pink, 2 brown) from ``COLORED_NOISE_MIN_HZ``
    up, with none below; zeros when no bin is that high. Drawn in the frequency domain
    (random real and imaginary parts per bin, one inverse FFT) from ``rng`` (default:
    NumPy's global functions)."""
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    log_frequencies, first = _log_frequencies(count, sample_rate)
    bins = count // 2 + 1
    parts = _random_source(rng).random(2 * bins).astype(np.float32)
    parts -= 0.5
    spectrum = parts.view(np.complex64)
    spectrum[:first] = 0
    spectrum[first:] *= np.exp(log_frequencies * np.float32(-exponent / 2))
    noise = scipy.fft.irfft(spectrum, count)
    rms = _rms(noise)
    if rms < SILENT_RMS:
        return np.zeros(count, dtype=np.float32)
    return (noise * np.float32(1 / rms)).astype(np.float32, copy=False)


class ColoredNoise:
    """Add ``colored_noise`` with an exponent uniform in [``min_exponent``,
    ``max_exponent``] at an SNR uniform in [``min_snr_db``, ``max_snr_db``] (dB, relative to
    the clip's RMS), with probability ``p``: hiss, hum-free rumble and everything between,
    beyond the few noise files a task ships. A silent clip is left as is."""

    def __init__(
        self,
        min_snr_db: float,
        max_snr_db: float,
        min_exponent: float,
        max_exponent: float,
        p: float,
    ) -> None:
        self.min_snr_db = min_snr_db
        self.max_snr_db = max_snr_db
        self.min_exponent = min_exponent
        self.max_exponent = max_exponent
        self.p = p

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if not random.random() < self.p:
            return samples
        snr_db = random.uniform(self.min_snr_db, self.max_snr_db)
        exponent = random.uniform(self.min_exponent, self.max_exponent)
        if len(samples) == 0 or _rms(samples) < SILENT_RMS:
            return samples
        return _add_at_snr(samples, colored_noise(len(samples), sample_rate, exponent), snr_db)


# ---------------------------------------------------------------------------------------
# Another voice


class MixClip:
    """Add other clips, from ``source()`` (the training set passes one returning a random
    training clip as stored), at an SNR uniform in [``min_snr_db``, ``max_snr_db``] dB below
    the clip, with probability ``p``: a voice in the background, as in a room of people, or
    with ``max_voices`` > 1 a crowd of ``min_voices``..``max_voices`` clips, each at unit
    RMS before their sum is set to the SNR (babble). A longer clip is cut at a random
    offset, a shorter one placed at a random offset; a silent clip on either side adds
    nothing. ``source`` should draw from seeded generators too, for a seed to reproduce
    the output."""

    def __init__(
        self,
        source: ClipSource,
        min_snr_db: float,
        max_snr_db: float,
        p: float,
        min_voices: int = 1,
        max_voices: int = 1,
    ) -> None:
        if not 1 <= min_voices <= max_voices:
            raise ValueError(
                f"voices must satisfy 1 <= min_voices ({min_voices}) <= max_voices ({max_voices})"
            )
        self.source = source
        self.min_snr_db = min_snr_db
        self.max_snr_db = max_snr_db
        self.p = p
        self.min_voices = min_voices
        self.max_voices = max_voices

    def _voice(self, count: int) -> np.ndarray | None:
        """One clip from the source fitted to ``count`` samples (None: an empty one)."""
        other = np.asarray(self.source(), dtype=np.float32)
        other_count = len(other)
        if other_count == 0:
            return None
        offset = random.randint(0, abs(other_count - count))
        if other_count >= count:
            return other[offset : offset + count]
        placed = np.zeros(count, dtype=np.float32)
        placed[offset : offset + other_count] = other
        return placed

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        if not random.random() < self.p:
            return samples
        snr_db = random.uniform(self.min_snr_db, self.max_snr_db)
        count = len(samples)
        if count == 0:
            return samples
        if self.max_voices == 1:  # one voice: the draws of the original transform
            other = self._voice(count)
            return samples if other is None else _add_at_snr(samples, other, snr_db)
        crowd = np.zeros(count, dtype=np.float32)
        for _ in range(random.randint(self.min_voices, self.max_voices)):
            other = self._voice(count)
            level = 0.0 if other is None else _rms(other)
            if other is not None and level >= SILENT_RMS:
                crowd += other / np.float32(level)
        return _add_at_snr(samples, crowd, snr_db)


# ---------------------------------------------------------------------------------------
# The pipeline


class WaveformPipeline:
    """The enabled transforms, applied in order to ``(samples,)`` float32 at
    ``sample_rate`` Hz. The output is float32 and finite: a non-finite sample is an error
    naming the input or the transforms, never a silent NaN in a batch."""

    def __init__(self, transforms: Sequence[tuple[str, WaveformTransform]]) -> None:
        self.transforms = list(transforms)

    @property
    def names(self) -> list[str]:
        """The config sections of the transforms, in the order they run."""
        return [name for name, _ in self.transforms]

    def __call__(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        out = samples
        for _, transform in self.transforms:
            out = transform(out, sample_rate)
        out = np.asarray(out, dtype=np.float32)
        if not np.isfinite(out).all():
            culprit = (
                "the input clip"
                if not np.isfinite(samples).all()
                else "augmentation (" + ", ".join(self.names) + ")"
            )
            raise ValueError(f"non-finite samples after waveform augmentation, from {culprit}")
        return out

    def __repr__(self) -> str:
        return f"WaveformPipeline({', '.join(self.names)})"


@dataclass(frozen=True)
class _Sources:
    """What the builders take beyond their config section."""

    noise_files: tuple[Path, ...]
    mix_source: ClipSource | None


Builder = Callable[[Any, _Sources], WaveformTransform]

# AugmentConfig section -> the builder of its waveform transform.
WAVEFORM_AUGMENTATIONS: Registry[Builder] = Registry("waveform augmentation")
# AugmentConfig sections that are not waveform transforms (they run in the model / loop).
NOT_WAVEFORM = frozenset({"spec_augment", "mixup"})


@WAVEFORM_AUGMENTATIONS.register("placement")
def _placement(section: PlacementAugment, sources: _Sources) -> WaveformTransform:
    return Placement(section.threshold_db, p=section.p)


@WAVEFORM_AUGMENTATIONS.register("shift")
def _shift(section: ShiftAugment, sources: _Sources) -> WaveformTransform:
    import audiomentations

    fraction = section.max_fraction
    return audiomentations.Shift(
        -fraction, fraction, shift_unit="fraction", rollover=False, p=section.p
    )


@WAVEFORM_AUGMENTATIONS.register("speed")
def _speed(section: SpeedAugment, sources: _Sources) -> WaveformTransform:
    return Speed(section.min_rate, section.max_rate, p=section.p)


@WAVEFORM_AUGMENTATIONS.register("pitch")
def _pitch(section: PitchAugment, sources: _Sources) -> WaveformTransform:
    import audiomentations

    return audiomentations.PitchShift(section.min_semitones, section.max_semitones, p=section.p)


@WAVEFORM_AUGMENTATIONS.register("stretch")
def _stretch(section: StretchAugment, sources: _Sources) -> WaveformTransform:
    import audiomentations

    return audiomentations.TimeStretch(
        section.min_rate, section.max_rate, leave_length_unchanged=True, p=section.p
    )


@WAVEFORM_AUGMENTATIONS.register("eq")
def _eq(section: EqAugment, sources: _Sources) -> WaveformTransform:
    import audiomentations

    return audiomentations.SevenBandParametricEQ(
        section.min_gain_db, section.max_gain_db, p=section.p
    )


@WAVEFORM_AUGMENTATIONS.register("mix")
def _mix(section: MixAugment, sources: _Sources) -> WaveformTransform:
    if sources.mix_source is None:
        raise ValueError(
            "augment.mix.p > 0 but no clip source was given to mix in "
            "(build_waveform_augment(..., mix_source=...)); set augment.mix.p=0"
        )
    return MixClip(
        sources.mix_source,
        section.min_snr_db,
        section.max_snr_db,
        p=section.p,
        min_voices=section.min_voices,
        max_voices=section.max_voices,
    )


@WAVEFORM_AUGMENTATIONS.register("reverb")
def _reverb(section: ReverbAugment, sources: _Sources) -> WaveformTransform:
    return Reverb(section.min_rt60, section.max_rt60, p=section.p)


@WAVEFORM_AUGMENTATIONS.register("noise")
def _noise(section: NoiseAugment, sources: _Sources) -> WaveformTransform:
    if not sources.noise_files:
        raise ValueError(
            "augment.noise.p > 0 but the task has no background-noise files (set augment.noise.p=0)"
        )
    return BackgroundNoise(sources.noise_files, section.min_snr_db, section.max_snr_db, section.p)


@WAVEFORM_AUGMENTATIONS.register("colored_noise")
def _colored_noise(section: ColoredNoiseAugment, sources: _Sources) -> WaveformTransform:
    return ColoredNoise(
        section.min_snr_db,
        section.max_snr_db,
        section.min_exponent,
        section.max_exponent,
        p=section.p,
    )


@WAVEFORM_AUGMENTATIONS.register("band")
def _band(section: BandAugment, sources: _Sources) -> WaveformTransform:
    return Band(
        section.min_low_hz,
        section.max_low_hz,
        section.min_high_hz,
        section.max_high_hz,
        p=section.p,
    )


def _check_ranges(section: BaseModel, where: str) -> None:
    """Every ``min_X``/``max_X`` pair of a config section is ordered."""
    fields = type(section).model_fields
    for key in fields:
        if not key.startswith("min_") or f"max_{key[4:]}" not in fields:
            continue
        upper = f"max_{key[4:]}"
        low, high = getattr(section, key), getattr(section, upper)
        if low > high:
            raise ValueError(f"{where}: {key} {low} > {upper} {high}")


def build_waveform_augment(
    config: AugmentConfig,
    noise_files: Sequence[Path],
    mix_source: ClipSource | None = None,
) -> WaveformTransform | None:
    """The training waveform transforms of ``config`` whose ``p`` > 0, in the order of
    AugmentConfig's fields; None when none applies. ``noise_files`` feed ``augment.noise``
    and ``mix_source()`` (a random training clip) feeds ``augment.mix``.

    Raises ValueError for a range whose minimum exceeds its maximum (any section, on or
    off), a band whose high-pass range reaches its low-pass range, ``noise`` on without
    noise files and ``mix`` on without a source."""
    sources = _Sources(tuple(Path(path) for path in noise_files), mix_source)
    transforms: list[tuple[str, WaveformTransform]] = []
    for name in type(config).model_fields:
        if name in NOT_WAVEFORM:
            continue
        section = getattr(config, name)
        builder = WAVEFORM_AUGMENTATIONS.get(name)  # a new section needs its builder
        _check_ranges(section, f"augment.{name}")
        if section.p > 0:
            transforms.append((name, builder(section, sources)))
    band = config.band
    if band.max_low_hz >= band.min_high_hz:
        raise ValueError(
            f"augment.band: max_low_hz {band.max_low_hz} >= min_high_hz {band.min_high_hz} "
            "(the high-pass cut-off could reach the low-pass one: an empty band)"
        )
    return WaveformPipeline(transforms) if transforms else None


# ---------------------------------------------------------------------------------------
# Shifted validation: test-like conditions the training augmentation never produces

NoiseMaker = Callable[[int, int, np.random.Generator], np.ndarray]
# kind -> maker(samples, sample_rate, rng) -> (samples,) float32 noise (any level; the SNR
# sets it). None of these is a noise file, colored (power-law) noise or another voice.
SHIFTED_NOISES: Registry[NoiseMaker] = Registry("shifted-validation noise")


def _wavetable(harmonic_amplitudes: np.ndarray, size: int = 2048) -> np.ndarray:
    """One period (``size`` points) of a waveform with these harmonic amplitudes (k=1..)."""
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    spectrum[1 : 1 + len(harmonic_amplitudes)] = -1j * harmonic_amplitudes * size / 2
    return scipy.fft.irfft(spectrum, size).astype(np.float32)


def _play(
    table: np.ndarray,
    frequencies: np.ndarray,
    count: int,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(count,)`` float32: the sum of the one-period ``table`` (a power-of-two size)
    played at each frequency (Hz) from a random phase."""
    size = len(table)
    starts = rng.random(len(frequencies)).astype(np.float32)
    steps = (np.asarray(frequencies, dtype=np.float32) * np.float32(size / sample_rate))[:, None]
    phases = np.arange(count, dtype=np.float32) * steps  # (notes, count), in table points
    phases += (starts * size)[:, None]
    indices = phases.astype(np.int32)
    indices &= size - 1
    return table[indices].sum(axis=0)


def _band_noise(
    count: int,
    sample_rate: int,
    rng: np.random.Generator,
    cutoff_hz: float,
    order: int,
    stop_hz: float | None = None,
    min_hz: float = 20.0,
) -> np.ndarray:
    """``(count,)`` float32 noise with a Butterworth-like low-pass magnitude
    (``order``) at ``cutoff_hz``, nothing at or above ``stop_hz`` and nothing below
    ``min_hz``; drawn in the frequency domain, so only the bins below ``stop_hz`` cost
    random numbers."""
    frequencies = scipy.fft.rfftfreq(count, 1 / sample_rate).astype(np.float32)
    top = len(frequencies) if stop_hz is None else int(np.searchsorted(frequencies, stop_hz))
    spectrum = np.zeros(len(frequencies), dtype=np.complex64)
    drawn = spectrum[:top].view(np.float32)  # real and imaginary parts, interleaved
    drawn[:] = rng.random(2 * top, dtype=np.float32)  # uniform parts: cheaper than normal,
    drawn -= 0.5  # and the inverse FFT sums them into Gaussian samples all the same
    ratio = frequencies[:top] / np.float32(cutoff_hz)
    ratio **= 2 * order
    ratio += 1
    gain = 1 / np.sqrt(ratio)
    gain[frequencies[:top] < min_hz] = 0
    spectrum[:top] *= gain
    return scipy.fft.irfft(spectrum, count)


def _slow_envelope(
    count: int, sample_rate: int, rng: np.random.Generator, max_hz: float
) -> np.ndarray:
    """``(count,)`` a smooth random process of zero mean and unit standard deviation with
    no content above ~``max_hz``: drawn at 100 points per second and interpolated; zeros
    for a clip too short to hold any."""
    rate = 100
    points = math.ceil(count / sample_rate * rate) + 2
    rough = _band_noise(points, rate, rng, max_hz, 2, stop_hz=3 * max_hz, min_hz=0.0)
    rough -= rough.mean()
    deviation = float(rough.std())
    if not deviation > 1e-12:
        return np.zeros(count, dtype=np.float32)
    rough /= deviation
    envelope = np.interp(np.arange(count) * (rate / sample_rate), np.arange(points), rough)
    return envelope.astype(np.float32)


@SHIFTED_NOISES.register("chords")
def _chords(count: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Music-like: a chord of 2-4 harmonic notes (MIDI 45-80, one random timbre per clip),
    changing every 0.2-0.6 s, each struck and decaying."""
    harmonics = rng.uniform(0.0, 1.0, 6) / np.arange(1, 7)
    harmonics[0] = 1.0
    table = _wavetable(harmonics)
    out = np.zeros(count, dtype=np.float32)
    start = 0
    while start < count:
        stop = min(count, start + max(1, round(rng.uniform(0.2, 0.6) * sample_rate)))
        notes = rng.integers(45, 81, size=rng.integers(2, 5))
        frequencies = 440.0 * 2.0 ** ((notes - 69) / 12)
        chord = _play(table, frequencies, stop - start, sample_rate, rng)
        time = np.arange(stop - start, dtype=np.float32) / np.float32(sample_rate)
        envelope = np.exp(time * np.float32(-1 / rng.uniform(0.1, 1.0)))
        envelope *= np.minimum(time * np.float32(100), np.float32(1))  # a 10 ms attack
        out[start:stop] = chord * envelope
        start = stop
    return out


@SHIFTED_NOISES.register("clicks")
def _clicks(count: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Impulsive: 3-20 clicks a second (knocks, keyboard, crackle), each a short decaying
    resonance (1-5 kHz, 0.5-3 ms time constant) at a random level over 20 dB."""
    out = np.zeros(count, dtype=np.float32)
    clicks = max(1, rng.poisson(rng.uniform(3, 20) * count / sample_rate))
    nyquist = sample_rate / 2
    for position in rng.integers(0, count, size=clicks):
        tau = rng.uniform(0.0005, 0.003)
        frequency = min(rng.uniform(1000, 5000), 0.8 * nyquist)
        length = min(count - position, max(1, round(5 * tau * sample_rate)))
        time = np.arange(length) / sample_rate
        level = 10 ** (rng.uniform(-20, 0) / 20) * rng.choice((-1.0, 1.0))
        out[position : position + length] += (
            level * np.exp(-time / tau) * np.sin(2 * np.pi * frequency * time)
        )
    return out


@SHIFTED_NOISES.register("rumble")
def _rumble(count: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency rumble (traffic, engines, air handling): noise low-passed at 40-150 Hz,
    slowly amplitude-modulated (0.2-2 Hz, depth 0.3-0.9)."""
    cutoff = rng.uniform(40, 150)
    noise = _band_noise(count, sample_rate, rng, cutoff, 4, stop_hz=4 * cutoff)
    angle = np.arange(count, dtype=np.float32) * np.float32(
        2 * np.pi * rng.uniform(0.2, 2.0) / sample_rate
    )
    angle += np.float32(rng.uniform(0, 2 * np.pi))
    modulation = np.sin(angle)
    modulation *= np.float32(rng.uniform(0.3, 0.9))
    modulation += 1
    return noise * modulation


@SHIFTED_NOISES.register("wind")
def _wind(count: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Wind on a microphone: noise low-passed at 200-800 Hz in gusts, its level swinging by
    tens of dB (a log-normal envelope with content up to 0.5-3 Hz)."""
    noise = _band_noise(count, sample_rate, rng, rng.uniform(200, 800), 1)
    gusts = _slow_envelope(count, sample_rate, rng, rng.uniform(0.5, 3.0))
    gusts *= np.float32(rng.uniform(1.0, 1.6))
    return noise * np.exp(gusts)


@SHIFTED_NOISES.register("hum")
def _hum(count: int, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum and buzz: 50 or 60 Hz (±1%) with up to 20 harmonics of random, mostly odd,
    falling amplitudes."""
    fundamental = rng.choice((50.0, 60.0)) * rng.uniform(0.99, 1.01)
    harmonics = int(min(20, (0.45 * sample_rate) // fundamental))
    order = np.arange(1, harmonics + 1)
    amplitudes = rng.uniform(0.2, 1.0, harmonics) / order ** rng.uniform(0.5, 1.5)
    amplitudes[order % 2 == 0] *= rng.uniform(0.0, 0.5)
    table = _wavetable(amplitudes, size=4096)
    return _play(table, np.array([fundamental]), count, sample_rate, rng).astype(np.float32)


def _clip_seed(seed: int, key: str) -> int:
    """A stable 128-bit seed from the config's seed and a clip's name (not ``hash``, which
    differs between processes)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=16).digest()
    return int.from_bytes(digest, "little")


def shifted_condition(
    waveform: np.ndarray, sample_rate: int, config: ShiftedValidationConfig, key: str
) -> np.ndarray:
    """A test-like corruption of a validation clip ``(samples,)`` -> ``(samples,)`` float32,
    the same for every experiment: drawn from generators seeded by ``config.seed`` and
    ``key`` (the clip's name). In order, each decided with its own generator (so changing
    one probability does not move the others' draws):

    * with probability ``reverb_p``, a room farther and larger than training's
      (``SHIFTED_ROOMS``, RT60 in ``SHIFTED_RT60`` s);
    * with probability ``noise_p``, one of ``SHIFTED_NOISES`` (chords, clicks, rumble, wind,
      hum: kinds training never adds) at an SNR uniform in [``min_snr_db``, ``max_snr_db``]
      dB relative to the clip's RMS (none on a silent clip);
    * with probability ``band_p``, a narrow channel: telephone-like (high-pass at 250-400
      Hz, low-pass at 3-3.6 kHz) or a low-pass at 2-5 kHz.

    ``config.enabled`` is the caller's to check."""
    if config.min_snr_db > config.max_snr_db:
        raise ValueError(
            "predict.shifted_validation: "
            f"min_snr_db {config.min_snr_db} > max_snr_db {config.max_snr_db}"
        )
    out = np.array(waveform, dtype=np.float32)  # a copy: the caller's clip stays as is
    count = len(out)
    if count == 0:
        return out
    streams = np.random.SeedSequence(_clip_seed(config.seed, key)).spawn(3)
    room_rng, noise_rng, band_rng = (np.random.default_rng(stream) for stream in streams)
    if room_rng.random() < config.reverb_p:
        room = draw_room(room_rng.uniform, *SHIFTED_RT60, ranges=SHIFTED_ROOMS)
        out = reverberate(out, room, sample_rate, rng=room_rng)
    if noise_rng.random() < config.noise_p:
        kinds = SHIFTED_NOISES.names()
        kind = kinds[int(noise_rng.integers(len(kinds)))]
        snr_db = noise_rng.uniform(config.min_snr_db, config.max_snr_db)
        noise = np.asarray(SHIFTED_NOISES.get(kind)(count, sample_rate, noise_rng), np.float32)
        out = _add_at_snr(out, noise, snr_db)
    if band_rng.random() < config.band_p:
        if band_rng.random() < 0.5:
            low_hz, high_hz = band_rng.uniform(250, 400), band_rng.uniform(3000, 3600)
        else:
            low_hz, high_hz = None, band_rng.uniform(2000, 5000)
        out = band_limit(out, sample_rate, low_hz, high_hz, 4, 4)
    return out.astype(np.float32, copy=False)
