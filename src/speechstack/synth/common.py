"""What every synthetic demo dataset shares: atomic folders, WAV writing, silence and noise.

A dataset is written into `<out_dir>.partial-<pid>` and renamed into place once complete
(`build_atomically`), so an interrupted run leaves nothing behind. Waveforms are float
arrays in [-1, 1] at a given sample rate (Hz); lengths are in samples.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from speechstack.synth.espeak import SAMPLE_RATE

UNNATURAL_VARIANTS = frozenset({"Demonic", "UniRobot", "anikaRobot", "croak"})
"""espeak-ng variants that sound like robots or monsters rather than people."""

WHISPER_VARIANTS = frozenset({"whisper", "whisperf"})
"""espeak-ng variants without voicing: no pitch, so no intonation to carry emotion."""


# ---------------------------------------------------------------- folders and files


def build_atomically(out_dir: Path, force: bool, write: Callable[[Path], None]) -> Path:
    """Run `write(folder)` on a fresh `<out_dir>.partial-<pid>`, then rename it to `out_dir`.

    Refuses a non-empty existing `out_dir` unless `force`; with `force` the old folder is
    replaced only once the new one is complete. Any exception (Ctrl-C included) removes
    the partial folder and propagates.
    """
    out_dir = Path(out_dir)
    refuse_existing(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.with_name(f"{out_dir.name}.partial-{os.getpid()}")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        write(partial)
        move_into_place(partial, out_dir, force)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir


def refuse_existing(out_dir: Path, force: bool) -> None:
    """Raise FileExistsError for a non-empty `out_dir` (or a file there) unless `force`."""
    if force or not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder")
    if any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; choose another folder or pass "
            "force=True (--force) to replace it once the new dataset is complete"
        )


def move_into_place(partial: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished `partial` folder to `out_dir`, replacing what `force` allows."""
    refuse_existing(out_dir, force)  # someone may have written there meanwhile
    if out_dir.is_dir() and any(out_dir.iterdir()):
        old = out_dir.with_name(f"{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        shutil.rmtree(old)
    else:
        if out_dir.is_dir():
            out_dir.rmdir()
        elif out_dir.exists():
            out_dir.unlink()
        os.replace(partial, out_dir)


def write_text(path: Path, text: str) -> None:
    """UTF-8 text with `\\n` line ends, creating the parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def write_wav(path: Path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono PCM16 WAV at `sample_rate` Hz; `waveform` is float in [-1, 1].

    Encoded in memory first: writing to a path makes libsndfile fsync every file,
    which costs more than synthesising the clip.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.round(np.clip(waveform, -1.0, 32767 / 32768) * 32768).astype(np.int16)
    encoded = io.BytesIO()
    sf.write(encoded, samples, sample_rate, subtype="PCM_16", format="WAV")
    path.write_bytes(encoded.getvalue())


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """CSV text with a header row and `\\n` line ends (fields quoted only where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


# ---------------------------------------------------------------- speech


def trim_silence(
    speech: np.ndarray, threshold: float = 0.005, margin_samples: int = 160
) -> np.ndarray:
    """Cut espeak's leading and trailing silence, keeping `margin_samples` (10 ms at 16 kHz)."""
    if not len(speech):
        return speech
    loud = np.flatnonzero(np.abs(speech) > threshold * np.max(np.abs(speech)))
    if not len(loud):
        return speech[:0]
    return speech[max(0, loud[0] - margin_samples) : loud[-1] + margin_samples + 1]


def fade_out(length: int, fade_samples: int = 320) -> np.ndarray:
    """An envelope of `length` ones whose last `fade_samples` ramp linearly down to 0."""
    envelope = np.ones(length)
    fade = min(fade_samples, length)
    envelope[length - fade :] = np.linspace(1.0, 0.0, fade)
    return envelope


def pad_with_silence(
    speech: np.ndarray, rng: np.random.Generator, seconds: tuple[float, float], sample_rate: int
) -> np.ndarray:
    """`speech` with a random `seconds` (low, high) of digital silence before and after."""
    before, after = (round(rng.uniform(*seconds) * sample_rate) for _ in range(2))
    return np.concatenate([np.zeros(before), speech, np.zeros(after)])


def soft_limit(waveform: np.ndarray, ceiling: float = 0.97) -> np.ndarray:
    """Leave samples below `ceiling / 2` alone and bend louder ones smoothly under `ceiling`."""
    knee = ceiling / 2
    magnitude = np.abs(waveform)
    loud = magnitude > knee
    if not loud.any():
        return waveform
    limited = waveform.copy()
    limited[loud] = np.sign(waveform[loud]) * (
        knee + (ceiling - knee) * np.tanh((magnitude[loud] - knee) / (ceiling - knee))
    )
    return limited


def rms(waveform: np.ndarray) -> float:
    """Root mean square of `waveform`; 0 for an empty one."""
    return float(np.sqrt(np.mean(np.square(waveform)))) if len(waveform) else 0.0


def speech_rms(clip: np.ndarray) -> float:
    """RMS over the samples above -40 dB of the peak: the loudness of the speech itself."""
    active = clip[np.abs(clip) > 0.01 * np.max(np.abs(clip))]
    return rms(active)


# ---------------------------------------------------------------- noise


def colored_noise(
    rng: np.random.Generator,
    length: int,
    exponent: float,
    lowest_hz: float = 20.0,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Unit-RMS noise whose power spectrum falls as 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, d=1.0 / sample_rate)
    spectrum *= np.maximum(frequencies, lowest_hz) ** (-exponent / 2)
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=length)
    return noise / rms(noise)


def room_tone(
    rng: np.random.Generator, exponent: float, sample_rate: int, seconds: float = 10.0
) -> np.ndarray:
    """Unit-RMS coloured noise of one recording room, at least `seconds` long.

    Generated once per speaker (its length a power of two, so the FFT is fast) and cut
    into windows by `add_room_tone`.
    """
    length = 1 << int(np.ceil(np.log2(seconds * sample_rate)))
    return colored_noise(rng, length, exponent, sample_rate=sample_rate)


def add_room_tone(
    clip: np.ndarray, tone: np.ndarray, rng: np.random.Generator, noise_db: float
) -> np.ndarray:
    """`clip` plus a random window of `tone` (see `room_tone`) at an RMS of `noise_db` dBFS."""
    if len(clip) > len(tone):
        tone = np.resize(tone, len(clip))
    start = int(rng.integers(0, len(tone) - len(clip) + 1))
    return clip + tone[start : start + len(clip)] * 10 ** (noise_db / 20)


def random_window(sound: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """A random `length`-sample stretch of `sound` (repeated end to end if it is shorter)."""
    if len(sound) == 0:
        raise ValueError("cannot cut a window from an empty sound")
    if len(sound) < length:
        sound = np.resize(sound, length)
    start = int(rng.integers(0, len(sound) - length + 1))
    return sound[start : start + length]
