"""Long recordings for keyword spotting: one speaker saying words one after another, with
pauses between them, over a background noise that never stops.

`render_recording` is independent of any dataset: the caller supplies how a word is
said (`speak`, one speaker's voice) and which word comes next (`pick`), and a bank of
unit-RMS noises (such as a demo's test noise bank) to build the background from. It
returns the waveform and where each word lies, in seconds, as `SpokenWord`s. Every random
choice comes from the generator it is given, so a seeded generator gives the same
recording (with a speech synthesiser reset before the first word).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from speechstack.synth.common import random_window, rms, speech_rms

GAP_SECONDS = (0.6, 2.5)  # pause before each word (and the least left after the last)
SNR_DB = (10.0, 25.0)  # speech to background, per recording
PEAK_DB = (-18.0, -6.0)  # each word's peak, dBFS: a normal recording level
MAX_PEAK = 0.97  # the mixture is turned down as a whole if it would peak above this
_SEGMENT_SECONDS, _FADE_SECONDS = 4.0, 0.25  # background: bank windows, cross-faded


@dataclass(frozen=True)
class SpokenWord:
    """Where one word lies in a recording (seconds) and what it is: ``label`` is the
    class a model should give it (the word itself, or ``unknown``)."""

    start: float
    end: float
    label: str
    word: str


def continuous_noise(
    sound: np.ndarray,
    length: int,
    rng: np.random.Generator,
    sample_rate: int,
) -> np.ndarray:
    """``length`` samples of unit-RMS background from a shorter ``sound``: random windows
    of it (a few seconds each) joined by equal-power cross-fades, so it never stops and
    does not repeat on a fixed cycle."""
    segment = min(len(sound), round(_SEGMENT_SECONDS * sample_rate))
    if length <= segment:
        window = random_window(sound, length, rng)
        return window / max(rms(window), 1e-12)
    fade = max(1, min(round(_FADE_SECONDS * sample_rate), segment // 4))
    ramp = np.sin(0.5 * np.pi * np.linspace(0.0, 1.0, fade))
    envelope = np.ones(segment)
    envelope[:fade] = ramp
    envelope[-fade:] = ramp[::-1]
    hop = segment - fade
    buffer = np.zeros(length + fade + segment)
    for position in range(0, length + fade, hop):
        buffer[position : position + segment] += random_window(sound, segment, rng) * envelope
    noise = buffer[fade : fade + length]  # the first fade-in lies before the recording
    return noise / max(rms(noise), 1e-12)


def render_recording(
    rng: np.random.Generator,
    seconds: float,
    speak: Callable[[str, np.random.Generator], np.ndarray],
    pick: Callable[[np.random.Generator], tuple[str, str]],
    bank: Mapping[str, np.ndarray],
    sample_rate: int,
) -> tuple[np.ndarray, list[SpokenWord]]:
    """``seconds`` of words and pauses over one or two of the ``bank``'s noises.

    pick: the next ``(word, label)``; speak: that word as a waveform (trimmed speech,
    any level). Each word follows a pause drawn from ``GAP_SECONDS`` and peaks at a level
    drawn from ``PEAK_DB``; words are added until the next one would not end a minimum
    pause before the end. The background sits ``SNR_DB`` (drawn once) below the words'
    speech level. Returns the float64 waveform in [-1, 1] and the words in time order.
    """
    total = round(seconds * sample_rate)
    speech_track = np.zeros(total)
    words: list[SpokenWord] = []
    levels: list[float] = []
    cursor = 0
    tail = round(GAP_SECONDS[0] * sample_rate)
    while True:
        gap = round(rng.uniform(*GAP_SECONDS) * sample_rate)
        word, label = pick(rng)
        speech = np.asarray(speak(word, rng), dtype=np.float64)
        onset = cursor + gap
        if onset + len(speech) + tail > total:
            break
        speech = speech * 10 ** (rng.uniform(*PEAK_DB) / 20) / max(np.max(np.abs(speech)), 1e-12)
        speech_track[onset : onset + len(speech)] += speech
        levels.append(speech_rms(speech))
        words.append(
            SpokenWord(onset / sample_rate, (onset + len(speech)) / sample_rate, label, word)
        )
        cursor = onset + len(speech)

    names = sorted(bank)
    kinds = rng.choice(names, size=1 if len(names) < 2 or rng.random() < 0.5 else 2, replace=False)
    first = 1.0 if len(kinds) == 1 else float(rng.uniform(0.25, 0.75))
    snr_db = float(rng.uniform(*SNR_DB))
    # the words' speech level (RMS of their active samples); a wordless recording gets
    # the level of a quiet word
    level = float(np.sqrt(np.mean(np.square(levels)))) if levels else 10 ** (-26 / 20)
    background = np.zeros(total)
    for name, share in zip(kinds, [first, 1.0 - first], strict=False):
        noise = continuous_noise(bank[str(name)], total, rng, sample_rate)  # unit RMS
        background += noise * level * np.sqrt(share) / 10 ** (snr_db / 20)
    mixture = speech_track + background
    peak = float(np.max(np.abs(mixture))) if total else 0.0
    if peak > MAX_PEAK:
        mixture *= MAX_PEAK / peak
    return mixture, words
