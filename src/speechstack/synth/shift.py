"""Speaker, room, channel and noise shifts that make a demo test set unlike its train set.

A model is judged on people, rooms, microphones and noises it never met in training; a
test set recorded like the train set flatters it. These transformations turn clean
synthetic speech into such shifted recordings. They are written for any demo generator
(speech commands, emotion, sentiment): every function takes a float waveform in
[-1, 1], a `np.random.Generator` where it draws anything, and the sample rate in Hz, and
returns a new array. Nothing here touches a file, so a seeded generator always gives the
same samples.

- Speakers (`VoiceShift`): a vocal-tract-length warp (resampling moves formants and
  pitch together, like a child or a large adult), a spectral tilt and a few broad EQ
  bumps (timbre, vocal effort), breath noise that follows the speech envelope, and a
  pitch/rate tremor with random jitter.
- Rooms (`Room`): a synthetic impulse response, a direct-path peak then, after a
  pre-delay, a few early reflections and an exponentially decaying noise tail whose
  energy falls 60 dB in RT60 seconds.
- Channels (`Channel`): a telephone band-pass or a low-pass, then maybe mu-law
  companded quantisation and soft clipping.
- Noises (`NOISE_KINDS`): kinds a Speech Commands `_background_noise_` folder does not
  hold: a crowd of other synthetic voices, tonal music, traffic rumble, keyboard clicks,
  blue and violet noise, and wind. Each maker returns unit-RMS noise; banks of a few
  seconds are made once and cut into windows.
- Mixing: `mix_at_snr` adds noise at a signal-to-noise ratio measured on the active
  speech, the way the demo generators define SNR.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache

import numpy as np
from scipy.fft import irfft, next_fast_len, rfft, rfftfreq
from scipy.signal import butter, fftconvolve, firwin, resample_poly, sosfilt

from speechstack.synth.common import colored_noise, random_window, rms, speech_rms
from speechstack.synth.espeak import Espeak

NoiseMaker = Callable[[np.random.Generator, int, int], np.ndarray]
"""`maker(rng, length, sample_rate)` -> unit-RMS noise of `length` samples."""

# ---------------------------------------------------------------- mixing


def scale_to_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`noise` scaled so that the active RMS of `signal` over its RMS is `snr_db` dB.

    The signal's loudness is `speech_rms` (samples within 40 dB of its peak), so silence
    around a short word does not inflate the noise. Silent noise comes back unchanged.
    """
    if len(noise) != len(signal):
        raise ValueError(f"signal and noise lengths differ: {len(signal)} and {len(noise)}")
    noise_rms = rms(noise)
    if noise_rms == 0.0:
        return noise.astype(np.float64, copy=True)
    return noise * (speech_rms(signal) / 10 ** (snr_db / 20) / noise_rms)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`signal` plus `noise` at `snr_db` dB (see `scale_to_snr`)."""
    return signal + scale_to_snr(signal, noise, snr_db)


def snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """The SNR `scale_to_snr` aims at: active RMS of `signal` over RMS of `noise`, in dB."""
    return float(20 * np.log10(speech_rms(signal) / max(rms(noise), 1e-20)))


# ---------------------------------------------------------------- speakers


@dataclass(frozen=True)
class VoiceShift:
    """How one unseen speaker's voice differs from the synthesiser's: see `shift_voice`."""

    warp: float  # vocal-tract-length factor: > 1 raises formants and pitch (a smaller person)
    tilt_db_per_octave: float  # spectral slope around 1 kHz: < 0 darker, > 0 brighter
    eq: tuple[tuple[float, float, float], ...]  # (centre Hz, gain dB, width in octaves)
    breath_db: float | None  # breath noise relative to the speech RMS; None = none
    tremor_depth: float  # relative pitch/rate wobble, e.g. 0.01 = +-1%
    tremor_hz: float  # rate of that wobble


def random_voice_shift(
    rng: np.random.Generator,
    warp_range: tuple[float, float] = (1.06, 1.25),
    tilt_range: tuple[float, float] = (-4.0, 3.0),
) -> VoiceShift:
    """A strong random `VoiceShift`: the warp is `warp_range` up or down (never near 1).

    warp_range: (smallest, largest) factor away from 1; a warp is drawn log-uniformly
        from it and inverted with probability 1/2, so 1.25 gives factors in 0.8-1.25.
    """
    low, high = warp_range
    warp = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    if rng.random() < 0.5:
        warp = 1.0 / warp
    tilt = float(rng.uniform(*tilt_range))
    eq = tuple(
        (
            float(np.exp(rng.uniform(np.log(150.0), np.log(6000.0)))),
            float(rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 10.0)),
            float(rng.uniform(0.3, 1.0)),
        )
        for _ in range(int(rng.integers(2, 4)))
    )
    breath = float(rng.uniform(-24.0, -10.0)) if rng.random() < 0.5 else None
    return VoiceShift(
        warp=warp,
        tilt_db_per_octave=tilt,
        eq=eq,
        breath_db=breath,
        tremor_depth=float(rng.uniform(0.003, 0.02)),
        tremor_hz=float(rng.uniform(3.0, 8.0)),
    )


def shift_voice(
    speech: np.ndarray, shift: VoiceShift, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """`speech` as said by the shifted speaker: warp, timbre, tremor, then breath.

    The warp changes the length by `1 / shift.warp`; callers that need a fixed length
    (or a fixed level) fit the result afterwards.
    """
    out = warp_vocal_tract(speech, shift.warp)
    out = shape_spectrum(out, sample_rate, shift.tilt_db_per_octave, shift.eq)
    out = add_tremor(out, rng, sample_rate, shift.tremor_depth, shift.tremor_hz)
    if shift.breath_db is not None:
        out = add_breath(out, rng, sample_rate, shift.breath_db)
    return out


@cache
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR `resample_poly(x, up, down)` designs by default, designed once."""
    longest = max(up, down)
    return firwin(2 * 10 * longest + 1, 1 / longest, window=("kaiser", 5.0))


def warp_vocal_tract(speech: np.ndarray, factor: float) -> np.ndarray:
    """Resample `speech` so every frequency (formants and pitch) is multiplied by `factor`.

    A shorter vocal tract has higher formants; resampling also speeds the word up by
    `factor`, as a smaller talker's faster articulation would. The factor is rounded to a
    fraction with a denominator of at most 40 (well under 1% away).
    """
    if factor <= 0:
        raise ValueError(f"warp factor must be positive, got {factor}")
    ratio = Fraction(1.0 / factor).limit_denominator(40)  # output length / input length
    up, down = ratio.numerator, ratio.denominator
    if up == down:
        return np.asarray(speech, dtype=np.float64).copy()
    return resample_poly(
        np.asarray(speech, dtype=np.float64), up, down, window=_resampling_filter(up, down)
    )


def spectral_gain_db(
    frequencies: np.ndarray,
    tilt_db_per_octave: float,
    eq: Sequence[tuple[float, float, float]] = (),
    pivot_hz: float = 1000.0,
) -> np.ndarray:
    """The gain curve `shape_spectrum` applies, in dB at each of `frequencies` (Hz).

    A straight line of `tilt_db_per_octave` through 0 dB at `pivot_hz` (flat below
    50 Hz), plus a Gaussian bump on the log-frequency axis per (centre, gain, width)
    band; the total is held within -30..+18 dB.
    """
    octaves = np.log2(np.maximum(frequencies, 50.0) / pivot_hz)
    gain = tilt_db_per_octave * octaves
    for centre_hz, band_gain_db, width_octaves in eq:
        distance = np.log2(np.maximum(frequencies, 1.0) / centre_hz) / width_octaves
        gain = gain + band_gain_db * np.exp(-0.5 * distance**2)
    return np.clip(gain, -30.0, 18.0)


def shape_spectrum(
    waveform: np.ndarray,
    sample_rate: int,
    tilt_db_per_octave: float,
    eq: Sequence[tuple[float, float, float]] = (),
) -> np.ndarray:
    """`waveform` through the zero-phase filter `spectral_gain_db` describes (one FFT)."""
    length = len(waveform)
    if length == 0:
        return np.asarray(waveform, dtype=np.float64).copy()
    size = next_fast_len(length + 1024)  # the padding keeps the filter from wrapping round
    spectrum = rfft(waveform, size)
    gain_db = spectral_gain_db(rfftfreq(size, 1.0 / sample_rate), tilt_db_per_octave, eq)
    return irfft(spectrum * 10 ** (gain_db / 20), size)[:length]


def _slow_random(
    rng: np.random.Generator, length: int, sample_rate: int, step_s: float
) -> np.ndarray:
    """Zero-mean, unit-RMS random curve that changes smoothly every `step_s` seconds."""
    step = max(1, round(step_s * sample_rate))
    points = rng.standard_normal(length // step + 2)
    curve = np.interp(np.arange(length) / step, np.arange(len(points)), points)
    curve -= curve.mean()
    return curve / max(rms(curve), 1e-12)


def add_tremor(
    waveform: np.ndarray,
    rng: np.random.Generator,
    sample_rate: int,
    depth: float,
    rate_hz: float,
) -> np.ndarray:
    """Wobble the playback rate by about +-`depth` at `rate_hz` plus random jitter.

    Pitch and formants move with the rate, like vocal tremor and jitter; the length is
    kept. A sinusoid of `depth` and a smooth random curve of half that depth (changing
    every 20 ms) are added to the instantaneous rate.
    """
    length = len(waveform)
    if length < 2 or depth == 0:
        return np.asarray(waveform, dtype=np.float64).copy()
    time = np.arange(length) / sample_rate
    rate = depth * np.sin(2 * np.pi * rate_hz * time + rng.uniform(0, 2 * np.pi))
    rate += 0.5 * depth * _slow_random(rng, length, sample_rate, 0.02)
    position = np.arange(length) + np.cumsum(rate)
    position -= position[0]
    return np.interp(position, np.arange(length), waveform, right=0.0)


def add_breath(
    speech: np.ndarray, rng: np.random.Generator, sample_rate: int, level_db: float
) -> np.ndarray:
    """`speech` plus breathy noise (above ~1.5 kHz) that follows its loudness envelope.

    level_db: the breath noise's RMS relative to the speech's own active RMS.
    """
    length = len(speech)
    if length == 0 or not np.any(speech):
        return np.asarray(speech, dtype=np.float64).copy()
    envelope = sosfilt(_butter(2, 30.0, "lowpass", sample_rate), np.abs(speech))
    envelope = np.maximum(envelope, 0.0)
    hiss = sosfilt(
        _butter(2, min(1500.0, 0.4 * sample_rate), "highpass", sample_rate),
        rng.standard_normal(length),
    )
    breath = hiss * envelope
    return speech + breath * (speech_rms(speech) * 10 ** (level_db / 20) / max(rms(breath), 1e-12))


# ---------------------------------------------------------------- rooms


@dataclass(frozen=True)
class Room:
    """A reverberant room: see `room_impulse_response`."""

    rt60_s: float  # seconds for the tail's energy to fall by 60 dB
    predelay_s: float  # gap between the direct sound and the diffuse tail
    direct_to_reverb_db: float  # energy of the direct path over that of everything after it
    tail_lowpass_hz: float  # wall absorption: the tail's colour


def random_room(
    rng: np.random.Generator,
    rt60_range: tuple[float, float] = (0.2, 0.9),
    direct_to_reverb_range: tuple[float, float] = (-3.0, 8.0),
) -> Room:
    """A random `Room`: RT60 and direct-to-reverberant ratio uniform in their ranges."""
    return Room(
        rt60_s=float(rng.uniform(*rt60_range)),
        predelay_s=float(rng.uniform(0.003, 0.03)),
        direct_to_reverb_db=float(rng.uniform(*direct_to_reverb_range)),
        tail_lowpass_hz=float(rng.uniform(3000.0, 7000.0)),
    )


def room_impulse_response(room: Room, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A synthetic impulse response of `room`, of unit energy, `predelay + rt60` long.

    Sample 0 is the direct path; after the pre-delay come four to eight early
    reflections and a tail of low-passed Gaussian noise under an exponential envelope
    whose energy falls 60 dB in `room.rt60_s` (amplitude exp(-3 ln(10) t / rt60)).
    """
    if room.rt60_s <= 0:
        raise ValueError(f"rt60_s must be positive, got {room.rt60_s}")
    predelay = max(1, round(room.predelay_s * sample_rate))
    tail_length = max(2, round(room.rt60_s * sample_rate))
    time = np.arange(tail_length) / sample_rate
    envelope = np.exp(-3 * np.log(10) * time / room.rt60_s)
    cutoff = min(room.tail_lowpass_hz, 0.45 * sample_rate)
    tail = sosfilt(_butter(2, cutoff, "lowpass", sample_rate), rng.standard_normal(tail_length))
    tail *= envelope
    for _ in range(int(rng.integers(4, 9))):
        at = int(rng.integers(0, min(tail_length, round(0.05 * sample_rate))))
        tail[at] += rng.choice([-1.0, 1.0]) * rng.uniform(2.0, 6.0) * envelope[at] * rms(tail)
    tail *= np.sqrt(10 ** (-room.direct_to_reverb_db / 10) / np.sum(tail**2))
    response = np.zeros(predelay + tail_length)
    response[0] = 1.0
    response[predelay:] = tail
    return response / np.sqrt(np.sum(response**2))


def reverberate(
    waveform: np.ndarray, room: Room, rng: np.random.Generator, sample_rate: int
) -> np.ndarray:
    """`waveform` heard in `room`, cut to its own length (the tail past the end is lost)."""
    response = room_impulse_response(room, rng, sample_rate)
    return fftconvolve(waveform, response)[: len(waveform)]


def estimate_rt60(response: np.ndarray, sample_rate: int) -> float:
    """RT60 of an impulse response by Schroeder backward integration (T20 x 3).

    Fits a line to the energy decay curve between -5 and -25 dB and extrapolates it to
    -60 dB; the direct path and pre-delay sit above -5 dB and drop out of the fit.
    """
    energy = np.cumsum(np.square(response)[::-1])[::-1]
    decay_db = 10 * np.log10(np.maximum(energy / energy[0], 1e-30))
    fit = (decay_db <= -5.0) & (decay_db >= -25.0)
    if fit.sum() < 2:
        raise ValueError("the response does not decay from -5 to -25 dB")
    slope, _ = np.polyfit(np.flatnonzero(fit) / sample_rate, decay_db[fit], 1)
    return float(-60.0 / slope)


# ---------------------------------------------------------------- channels


@dataclass(frozen=True)
class Channel:
    """A microphone, line or codec: see `apply_channel`."""

    low_hz: float | None  # high-pass corner; None = none
    high_hz: float | None  # low-pass corner; None = none
    mu_law_bits: int | None  # companded quantisation to this many bits; None = none
    drive: float | None  # soft-clipping drive; None = none


def random_channel(rng: np.random.Generator) -> Channel:
    """Half telephone lines (300-3400 Hz, often 8-bit mu-law), half 2-5 kHz low-passes.

    About a third of either kind also soft-clips.
    """
    if rng.random() < 0.5:
        low, high = 300.0, 3400.0
        bits = 8 if rng.random() < 0.6 else None
    else:
        low, high = None, float(rng.uniform(2000.0, 5000.0))
        bits = None
    drive = float(rng.uniform(2.0, 6.0)) if rng.random() < 0.35 else None
    return Channel(low_hz=low, high_hz=high, mu_law_bits=bits, drive=drive)


def apply_channel(waveform: np.ndarray, channel: Channel, sample_rate: int) -> np.ndarray:
    """`waveform` through `channel`: band limits, then soft clipping, then mu-law."""
    out = band_limit(waveform, sample_rate, channel.low_hz, channel.high_hz)
    if channel.drive is not None:
        out = soft_clip(out, channel.drive)
    if channel.mu_law_bits is not None:
        out = mu_law_quantise(out, channel.mu_law_bits)
    return out


@lru_cache(maxsize=256)
def _butter(order: int, corner: float | tuple[float, float], kind: str, sample_rate: int):
    return butter(order, corner, btype=kind, fs=sample_rate, output="sos")


def band_limit(
    waveform: np.ndarray,
    sample_rate: int,
    low_hz: float | None,
    high_hz: float | None,
    order: int = 6,
) -> np.ndarray:
    """`waveform` through a Butterworth band-pass (or high- or low-pass) of `order`.

    A corner that is None, or a high corner at or above Nyquist, is left out.
    """
    nyquist = sample_rate / 2
    if high_hz is not None and high_hz >= 0.98 * nyquist:
        high_hz = None
    if low_hz is not None and high_hz is not None:
        sos = _butter(order // 2, (low_hz, high_hz), "bandpass", sample_rate)
    elif low_hz is not None:
        sos = _butter(order, low_hz, "highpass", sample_rate)
    elif high_hz is not None:
        sos = _butter(order, high_hz, "lowpass", sample_rate)
    else:
        return np.asarray(waveform, dtype=np.float64).copy()
    return sosfilt(sos, waveform)


def soft_clip(waveform: np.ndarray, drive: float) -> np.ndarray:
    """tanh(drive * x) / drive: unchanged when quiet, rounded off near 1 / drive."""
    return np.tanh(drive * waveform) / drive


def mu_law_quantise(waveform: np.ndarray, bits: int = 8, mu: float = 255.0) -> np.ndarray:
    """Mu-law compand, quantise to `bits` bits and expand back, like a G.711 phone line."""
    x = np.clip(waveform, -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    steps = 2 ** (bits - 1)
    quantised = np.round(compressed * steps) / steps
    return np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu


# ---------------------------------------------------------------- noises


def _unit(noise: np.ndarray) -> np.ndarray:
    return noise / max(rms(noise), 1e-12)


def tonal_music(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS music-like tones: a new chord of 2-4 harmonic notes every 0.2-0.6 s.

    Each note has up to 8 harmonics below 0.45 x the sample rate, a 5-30 ms attack and
    an exponential decay, and rings 0.15 s into the next chord.
    """
    out = np.zeros(length)
    chords = ((0, 4, 7, 12), (0, 3, 7, 10), (0, 5, 7, 12), (0, 4, 7, 11), (0, 3, 6, 9))
    start = 0
    while start < length:
        duration = round(rng.uniform(0.2, 0.6) * sample_rate)
        ring = min(length - start, duration + round(0.15 * sample_rate))
        time = np.arange(ring) / sample_rate
        root = int(rng.integers(45, 72))  # MIDI note
        shape = chords[int(rng.integers(len(chords)))]
        for interval in rng.choice(shape, size=int(rng.integers(2, 5)), replace=False):
            f0 = 440.0 * 2 ** ((root + int(interval) - 69) / 12)
            harmonics = np.arange(1, 9)
            harmonics = harmonics[harmonics * f0 < 0.45 * sample_rate]
            amplitudes = rng.uniform(0.3, 1.0, len(harmonics)) / harmonics ** rng.uniform(0.8, 2.0)
            phases = rng.uniform(0, 2 * np.pi, len(harmonics))
            tone = amplitudes @ np.sin(2 * np.pi * f0 * np.outer(harmonics, time) + phases[:, None])
            attack = rng.uniform(0.005, 0.03)
            envelope = np.minimum(time / attack, 1.0) * np.exp(-time / rng.uniform(0.1, 0.8))
            out[start : start + ring] += rng.uniform(0.4, 1.0) * tone * envelope
        start += duration
    return _unit(out)


def traffic_rumble(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS low rumble below 250 Hz: road noise plus an engine, slowly swelling.

    Noise low-passed at 80-250 Hz, an engine's harmonics (fundamental 25-60 Hz, drifting)
    kept under 250 Hz, all under a slow envelope of passing vehicles.
    """
    cutoff = rng.uniform(80.0, 250.0)
    road = _unit(sosfilt(_butter(4, cutoff, "lowpass", sample_rate), rng.standard_normal(length)))
    time = np.arange(length) / sample_rate
    fundamental = rng.uniform(25.0, 60.0) * (1 + 0.1 * _slow_random(rng, length, sample_rate, 0.7))
    cycles = np.cumsum(fundamental) / sample_rate
    engine = np.zeros(length)
    for harmonic in range(1, 10):
        if harmonic * fundamental.max() >= 250.0:
            break
        engine += (
            rng.uniform(0.2, 1.0)
            / harmonic
            * np.sin(2 * np.pi * harmonic * cycles + rng.uniform(0, 2 * np.pi))
        )
    swell = np.exp(0.6 * _slow_random(rng, length, sample_rate, rng.uniform(0.8, 3.0)))
    swell *= 1 + 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * time)
    return _unit((road + rng.uniform(0.3, 1.0) * _unit(engine)) * swell)


def keyboard_clicks(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS tapping: 4-12 short decaying clicks a second over a faint noise floor.

    Each click is a damped resonance at 1-5 kHz plus a noise burst, decaying in 1-5 ms,
    with a random loudness spread over 20 dB.
    """
    out = 0.003 * rng.standard_normal(length)
    count = int(rng.poisson(rng.uniform(4.0, 12.0) * length / sample_rate))
    click_length = round(0.025 * sample_rate)
    time = np.arange(click_length) / sample_rate
    for _ in range(count):
        at = int(rng.integers(0, length))
        tau = rng.uniform(0.001, 0.005)
        resonance = min(rng.uniform(1000.0, 5000.0), 0.45 * sample_rate)
        click = np.sin(2 * np.pi * resonance * time) * np.exp(-time / tau)
        click += rng.standard_normal(click_length) * np.exp(-time / (0.5 * tau))
        end = min(length, at + click_length)
        out[at:end] += 10 ** (rng.uniform(-20.0, 0.0) / 20) * click[: end - at]
    return _unit(out)


def wind(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS wind: noise low-passed at 200-600 Hz under strong, slow gusts."""
    cutoff = min(rng.uniform(200.0, 600.0), 0.45 * sample_rate)
    rush = sosfilt(_butter(2, cutoff, "lowpass", sample_rate), rng.standard_normal(length))
    gusts = np.exp(1.2 * _slow_random(rng, length, sample_rate, rng.uniform(0.15, 0.6)))
    return _unit(rush * gusts)


def blue_noise(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise whose power rises as f (3 dB per octave)."""
    return colored_noise(rng, length, -1.0, sample_rate=sample_rate)


def violet_noise(rng: np.random.Generator, length: int, sample_rate: int) -> np.ndarray:
    """Unit-RMS noise whose power rises as f^2 (6 dB per octave)."""
    return colored_noise(rng, length, -2.0, sample_rate=sample_rate)


PROCEDURAL_NOISES: dict[str, NoiseMaker] = {
    "music": tonal_music,
    "traffic": traffic_rumble,
    "keyboard": keyboard_clicks,
    "blue": blue_noise,
    "violet": violet_noise,
    "wind": wind,
}
"""The noise kinds made from an rng alone."""

CROWD = "crowd"
NOISE_KINDS = (CROWD, *PROCEDURAL_NOISES)
"""Every kind `noise_bank` can make; `crowd` needs an `Espeak`."""


def crowd_babble(
    rng: np.random.Generator,
    length: int,
    sample_rate: int,
    espeak: Espeak,
    *,
    accents: Sequence[str],
    variants: Sequence[str],
    vocabulary: Sequence[str],
    talkers: tuple[int, int] = (8, 13),
) -> np.ndarray:
    """Unit-RMS chatter of 8-12 synthetic voices (from `variants`) talking over each other.

    Each talker says random sentences of `vocabulary` words at its own pitch, rate and
    level, with short pauses. libespeak-ng is reloaded first, so a seeded `rng` always
    gives the same crowd.
    """
    espeak.reset()
    lead_in = sample_rate  # dropped: by then every talker has started
    mixture = np.zeros(length)
    for _ in range(int(rng.integers(*talkers))):
        accent = str(accents[rng.integers(len(accents))])
        variant = str(variants[rng.integers(len(variants))])
        pitch, rate = int(rng.integers(10, 91)), int(rng.integers(140, 260))
        stream: list[np.ndarray] = [np.zeros(int(rng.integers(0, lead_in)))]
        filled = len(stream[0])
        while filled < lead_in + length:
            words = rng.choice(list(vocabulary), size=int(rng.integers(4, 11)))
            sentence = espeak.speak(
                " ".join(words) + ".",
                voice=accent,
                variant=variant,
                rate=rate,
                pitch=pitch,
                pitch_range=int(rng.integers(20, 100)),
                seed=int(rng.integers(0, 2**31)),
                sample_rate=sample_rate,
            ).astype(np.float64)
            sentence = sentence / max(rms(sentence), 1e-9) * 10 ** (rng.uniform(-6, 0) / 20)
            pause = np.zeros(int(rng.uniform(0.02, 0.3) * sample_rate))
            stream += [sentence, pause]
            filled += len(sentence) + len(pause)
        talk = np.concatenate(stream)[lead_in : lead_in + length]
        mixture += talk * 10 ** (rng.uniform(-10, 0) / 20)
    return _unit(mixture)


def noise_bank(
    rng: np.random.Generator,
    length: int,
    sample_rate: int,
    kinds: Sequence[str] = NOISE_KINDS,
    *,
    crowd: Callable[[np.random.Generator, int, int], np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Unit-RMS sounds of `length` samples, one per name in `kinds` (see `NOISE_KINDS`).

    Each kind draws from its own child of `rng` (by its position in `NOISE_KINDS`), so
    asking for fewer kinds leaves the others' samples as they were. `crowd` makes the
    `crowd` kind, e.g. a `functools.partial` of `crowd_babble` with its voices.
    """
    unknown = set(kinds) - set(NOISE_KINDS)
    if unknown:
        raise ValueError(f"unknown noise kinds {sorted(unknown)}; known: {NOISE_KINDS}")
    children = dict(zip(NOISE_KINDS, rng.spawn(len(NOISE_KINDS)), strict=True))
    bank = {}
    for kind in kinds:
        if kind == CROWD:
            if crowd is None:
                raise ValueError("the crowd noise needs a `crowd` maker (see crowd_babble)")
            bank[kind] = crowd(children[kind], length, sample_rate)
        else:
            bank[kind] = PROCEDURAL_NOISES[kind](children[kind], length, sample_rate)
    return bank


def noise_window(
    bank: dict[str, np.ndarray],
    rng: np.random.Generator,
    length: int,
    kinds: Sequence[str] | None = None,
) -> tuple[str, np.ndarray]:
    """(kind, a random `length`-sample window of it) for a random kind of `bank`."""
    names = sorted(bank) if kinds is None else list(kinds)
    kind = names[int(rng.integers(len(names)))]
    return kind, random_window(bank[kind], length, rng)
