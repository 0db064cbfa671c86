"""A small, deterministic stand-in for the Kaggle "TensorFlow Speech Recognition Challenge".

`generate_speech_commands` writes the competition's folder layout with clips spoken by
espeak-ng, so the whole pipeline (reader, folds, training, stacking, submission) can run
end to end without the 2 GB download:

    <out_dir>/train/audio/<word>/<speaker>_nohash_<n>.wav      30 words
    <out_dir>/train/audio/_background_noise_/*.wav, README.md
    <out_dir>/train/validation_list.txt, testing_list.txt      the dataset's hash rule
    <out_dir>/test/audio/clip_<9 hex>.wav                       unseen speakers, noisier
    <out_dir>/sample_submission.csv                             fname,label (all silence)
    <out_dir>/demo_solution.csv                                 fname,label: the answer key

A speaker is one espeak-ng voice: accent x variant x pitch x rate x pitch range. Every
clip is 1 s of 16 kHz mono PCM16 with the word at a random onset, a random gain and a
little recording noise. Every random choice comes from `np.random.default_rng` streams
keyed by the seed, and libespeak-ng is reloaded before each speaker, so a seed always
gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt
from tqdm import tqdm

from speechstack.synth.common import UNNATURAL_VARIANTS as _UNNATURAL_VARIANTS
from speechstack.synth.common import build_atomically
from speechstack.synth.common import colored_noise as _colored_noise
from speechstack.synth.common import fade_out as _fade_out
from speechstack.synth.common import rms as _rms
from speechstack.synth.common import speech_rms as _speech_rms
from speechstack.synth.common import trim_silence as _trim_silence
from speechstack.synth.common import write_text as _write_text
from speechstack.synth.common import write_wav as _write_wav
from speechstack.synth.espeak import SAMPLE_RATE, Espeak, english_voices

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
AUXILIARY_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "bed",
    "bird",
    "cat",
    "dog",
    "happy",
    "house",
    "marvin",
    "sheila",
    "tree",
    "wow",
)
WORDS = COMMANDS + AUXILIARY_WORDS
"""The 30 word folders of Speech Commands v0.01 / the Kaggle train set."""

ABSENT_WORDS = (
    "backward",
    "forward",
    "follow",
    "learn",
    "visual",  # added in Speech Commands v0.02
    "apple",
    "table",
    "music",
    "window",
    "water",
)
"""Words spoken only in the test set; their true label is `unknown`."""

LABELS = (*COMMANDS, "silence", "unknown")
NOISE_FOLDER = "_background_noise_"
CLIP_SAMPLES = SAMPLE_RATE  # every clip lasts exactly 1 s

# Fillers for the babble noise: no command, auxiliary or absent word among them.
_BABBLE_VOCABULARY = (
    "the",
    "a",
    "we",
    "they",
    "you",
    "I",
    "it",
    "was",
    "is",
    "and",
    "but",
    "so",
    "with",
    "coffee",
    "morning",
    "about",
    "really",
    "think",
    "people",
    "time",
    "would",
    "could",
    "there",
    "over",
    "after",
    "when",
    "because",
    "weekend",
    "meeting",
    "dinner",
    "later",
    "again",
    "never",
    "always",
    "maybe",
    "friend",
    "garden",
    "train",
    "city",
    "little",
    "very",
    "much",
    "what",
    "where",
    "school",
    "office",
    "sister",
    "brother",
    "yesterday",
    "tomorrow",
    "summer",
    "winter",
    "ticket",
    "letter",
    "story",
    "money",
    "kitchen",
)

# Independent random streams, keyed as default_rng([seed, stream, ...]).
_TRAIN_SPEAKERS, _TEST_SPEAKERS, _TRAIN_PLAN, _TRAIN_CLIP = 1, 2, 3, 4
_BACKGROUND, _TEST_PLAN, _TEST_CLIP, _TEST_NOISE_BANK, _TRAIN_PLAN_FILL = 5, 6, 7, 8, 9

_MAX_WORD_SAMPLES = int(0.92 * CLIP_SAMPLES)  # longest spoken word we keep; longer is sped up
_MAX_ESPEAK_RATE = 450
_TEST_BANK_SECONDS = 8.0
_TEST_SILENCE_SHARE, _TEST_UNKNOWN_SHARE = 0.10, 0.15
_WHICH_SET_MAX_CLIPS = 2**27 - 1

# Noise-bank sound -> (file in _background_noise_, RMS level in dBFS).
_BACKGROUND_FILES = {
    "white": ("white_noise.wav", -18.0),
    "pink": ("pink_noise.wav", -18.0),
    "brown": ("brown_noise.wav", -18.0),
    "tap": ("running_tap.wav", -20.0),
    "hum": ("electric_hum.wav", -24.0),
    "babble": ("babble.wav", -22.0),
}

_BACKGROUND_README = """\
This folder holds longer clips of noise to mix into the utterances, so that a model
learns to ignore background sound, and to cut `silence` examples from. Like the real
Speech Commands folder it mixes mathematical simulations with more natural sounds, all
16 kHz mono PCM16 WAV:

- white_noise.wav, pink_noise.wav, brown_noise.wav: noise with a flat, 1/f and 1/f^2
  power spectrum.
- running_tap.wav: band-passed noise with a slow gurgle, like water from a tap.
- electric_hum.wav: mains hum at 50 or 60 Hz with harmonics over a faint noise floor.
- babble.wav: several synthetic voices talking over each other.

These files were generated by speechstack (espeak-ng speech synthesis and numpy),
not recorded.
"""


@dataclass(frozen=True)
class Speaker:
    """One synthetic person: an espeak-ng voice plus the character of their microphone."""

    id: str  # 8 lowercase hex characters, like the real dataset's "0a7c2a8d"
    accent: str
    variant: str
    pitch: int  # espeak 0..100
    rate: int  # words per minute
    pitch_range: int  # espeak 0..100
    noise_exponent: float  # recording noise power falls as 1/f**noise_exponent
    hum_hz: float  # mains hum in the recording noise; 0 = none
    level_db: float  # the speaker's typical loudness offset, dB


@dataclass(frozen=True)
class TestClip:
    """One planned test clip: `word` is None for silence."""

    fname: str
    label: str
    word: str | None
    speaker: int | None  # index into the test speakers


def which_set(
    filename: str, validation_percentage: float = 10.0, testing_percentage: float = 10.0
) -> str:
    """'validation', 'testing' or 'training', by Speech Commands' own speaker-hash rule.

    All clips of a speaker (the file name before `_nohash_`) fall in the same set, and a
    speaker keeps its set when the dataset grows.
    """
    speaker = re.sub(r"_nohash_.*$", "", os.path.basename(filename))
    digest = int(hashlib.sha1(speaker.encode()).hexdigest(), 16)
    percentage = (digest % (_WHICH_SET_MAX_CLIPS + 1)) * (100.0 / _WHICH_SET_MAX_CLIPS)
    if percentage < validation_percentage:
        return "validation"
    if percentage < validation_percentage + testing_percentage:
        return "testing"
    return "training"


def generate_speech_commands(
    out_dir: Path,
    *,
    speakers: int = 60,
    test_speakers: int = 16,
    test_clips: int = 600,
    noise_seconds: float = 40.0,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic Kaggle speech-commands dataset to `out_dir` and return `out_dir`.

    speakers: train speakers; each says every command 1-3 times and each auxiliary
        word with probability 1/2 (about 30 clips per speaker).
    test_speakers, test_clips: the test set's unseen speakers and its size; about 10% of
        test clips are silence, 15% unknown words (half of them never heard in train),
        the rest the ten commands in equal shares.
    noise_seconds: length of each `_background_noise_` file.
    force: replace an existing non-empty `out_dir` (only once the new one is complete).

    The dataset is built in `<out_dir>.partial-<pid>` and renamed into place at the end,
    so an interrupted run never leaves a half-written `out_dir`.
    """
    if speakers < 1 or test_speakers < 1:
        raise ValueError(
            f"need at least one train and one test speaker, got {speakers} and {test_speakers}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if test_clips < 0:
        raise ValueError(f"test_clips must be >= 0, got {test_clips}")
    if noise_seconds < 1.0:
        raise ValueError(f"noise_seconds must be >= 1 (one clip of silence), got {noise_seconds}")
    return build_atomically(
        out_dir,
        force,
        lambda root: _write_dataset(
            root, speakers, test_speakers, test_clips, noise_seconds, seed, progress
        ),
    )


def _write_dataset(
    root: Path,
    n_speakers: int,
    n_test_speakers: int,
    n_test_clips: int,
    noise_seconds: float,
    seed: int,
    progress: bool,
) -> None:
    train_speakers, test_speakers = make_speakers(seed, n_speakers, n_test_speakers)
    train_plan = plan_train_words(seed, n_speakers)
    test_plan = plan_test_clips(seed, n_test_clips, n_test_speakers)
    total = sum(len(words) for words in train_plan) + len(test_plan) + len(_BACKGROUND_FILES)
    espeak = Espeak()
    with tqdm(total=total, desc="speech commands demo", unit="file", disable=not progress) as bar:
        _write_background_noise(
            root / "train" / "audio" / NOISE_FOLDER,
            np.random.default_rng([seed, _BACKGROUND]),
            noise_seconds,
            espeak,
            bar.update,
        )
        train_files = _write_train_clips(
            root / "train" / "audio", train_speakers, train_plan, seed, espeak, bar.update
        )
        test_bank = _make_noise_bank(
            np.random.default_rng([seed, _TEST_NOISE_BANK]),
            round(min(noise_seconds, _TEST_BANK_SECONDS) * SAMPLE_RATE),
            espeak,
            include=list(_BACKGROUND_FILES),
        )
        _write_test_clips(
            root / "test" / "audio", test_speakers, test_plan, test_bank, seed, espeak, bar.update
        )

    splits: dict[str, list[str]] = {"validation": [], "testing": [], "training": []}
    for relative in sorted(train_files):
        splits[which_set(relative)].append(relative)
    for name in ("validation", "testing"):
        _write_text(
            root / "train" / f"{name}_list.txt", "".join(f"{line}\n" for line in splits[name])
        )
    ordered = sorted(test_plan, key=lambda clip: clip.fname)
    _write_text(
        root / "sample_submission.csv",
        "fname,label\n" + "".join(f"{clip.fname},silence\n" for clip in ordered),
    )
    _write_text(
        root / "demo_solution.csv",
        "fname,label\n" + "".join(f"{clip.fname},{clip.label}\n" for clip in ordered),
    )


def _write_train_clips(
    audio: Path,
    speakers: list[Speaker],
    plan: list[list[tuple[str, int]]],
    seed: int,
    espeak: Espeak,
    advance: Callable[[], object],
) -> list[str]:
    """Write `<word>/<speaker>_nohash_<n>.wav` under `audio`; return those relative paths."""
    written = []
    for index, (speaker, words) in enumerate(zip(speakers, plan, strict=True)):
        espeak.reset()
        for clip_index, (word, repetition) in enumerate(words):
            rng = np.random.default_rng([seed, _TRAIN_CLIP, index, clip_index])
            clip = _speak_clip(espeak, speaker, word, rng)
            clip = _add_recording_noise(clip, speaker, rng, snr_db=rng.uniform(20, 40))
            relative = f"{word}/{speaker.id}_nohash_{repetition}.wav"
            _write_wav(audio / relative, clip)
            written.append(relative)
            advance()
    return written


def _write_test_clips(
    audio: Path,
    speakers: list[Speaker],
    plan: list[TestClip],
    bank: dict[str, np.ndarray],
    seed: int,
    espeak: Espeak,
    advance: Callable[[], object],
) -> None:
    """Write the planned test clips: noisier and with a wider range of levels than train."""
    audio.mkdir(parents=True, exist_ok=True)
    for speaker_index, speaker in enumerate(speakers):
        espeak.reset()
        for clip_index, planned in enumerate(plan):
            if planned.word is None or planned.speaker != speaker_index:
                continue
            rng = np.random.default_rng([seed, _TEST_CLIP, clip_index])
            clip = _speak_clip(espeak, speaker, planned.word, rng, peak_db=(-34.0, -1.0))
            clip = _add_recording_noise(clip, speaker, rng, snr_db=rng.uniform(12, 32))
            if rng.random() < 0.6:
                clip = _add_environment(clip, bank, rng, snr_db=rng.uniform(5, 25))
            _write_wav(audio / planned.fname, clip)
            advance()
    for clip_index, planned in enumerate(plan):
        if planned.word is None:
            rng = np.random.default_rng([seed, _TEST_CLIP, clip_index])
            _write_wav(audio / planned.fname, _silence_clip(bank, rng))
            advance()


# ---------------------------------------------------------------- speakers and plans


def make_speakers(seed: int, n_train: int, n_test: int) -> tuple[list[Speaker], list[Speaker]]:
    """The train and test speakers of a seed: no id or voice is shared by two speakers.

    Each set has its own random stream, so changing `n_train` leaves the test speakers
    as they were (unless one of them collides with a new train speaker).
    """
    voices = english_voices()
    variants = [v for v in voices.variants if v not in _UNNATURAL_VARIANTS]
    taken_ids: set[str] = set()
    taken_voices: set[tuple] = set()
    train = _sample_speakers(
        np.random.default_rng([seed, _TRAIN_SPEAKERS]),
        n_train,
        voices.accents,
        variants,
        taken_ids,
        taken_voices,
    )
    test = _sample_speakers(
        np.random.default_rng([seed, _TEST_SPEAKERS]),
        n_test,
        voices.accents,
        variants,
        taken_ids,
        taken_voices,
    )
    return train, test


def _sample_speakers(
    rng: np.random.Generator,
    count: int,
    accents: Sequence[str],
    variants: Sequence[str],
    taken_ids: set[str],
    taken_voices: set[tuple],
) -> list[Speaker]:
    """`count` speakers whose ids and voices differ from each other and from `taken_*`."""
    chosen: list[Speaker] = []
    while len(chosen) < count:
        speaker_id = f"{int(rng.integers(0, 2**32)):08x}"
        voice = (
            str(accents[rng.integers(len(accents))]),
            str(variants[rng.integers(len(variants))]),
            int(rng.integers(25, 76)),
            int(rng.integers(100, 191)),
            int(rng.integers(20, 91)),
        )
        noise_exponent = float(rng.uniform(0.0, 2.0))
        hum_hz = float(rng.choice([50.0, 60.0])) if rng.random() < 0.25 else 0.0
        level_db = float(rng.normal(0.0, 4.0))
        if speaker_id in taken_ids or voice in taken_voices:
            continue
        taken_ids.add(speaker_id)
        taken_voices.add(voice)
        chosen.append(Speaker(speaker_id, *voice, noise_exponent, hum_hz, level_db))
    return chosen


def plan_train_words(seed: int, n_speakers: int) -> list[list[tuple[str, int]]]:
    """Per train speaker, the (word, repetition) pairs they say, in order.

    Commands 1-3 times each, every other word once with probability 1/2; a word nobody
    drew goes to one random speaker, so all 30 word folders exist even for tiny sets.
    """
    said: list[dict[str, int]] = []
    for index in range(n_speakers):
        rng = np.random.default_rng([seed, _TRAIN_PLAN, index])
        said.append(
            {
                word: int(rng.integers(1, 4)) if word in COMMANDS else int(rng.random() < 0.5)
                for word in WORDS
            }
        )
    rng = np.random.default_rng([seed, _TRAIN_PLAN_FILL])
    for word in WORDS:
        if not any(counts[word] for counts in said):
            said[int(rng.integers(n_speakers))][word] = 1
    return [
        [(word, repetition) for word in WORDS for repetition in range(counts[word])]
        for counts in said
    ]


def plan_test_clips(seed: int, count: int, n_speakers: int) -> list[TestClip]:
    """What each test clip holds: ~10% silence, ~15% unknown, commands in equal shares.

    Half of the unknown clips (rounded up) are words absent from train, the rest are the
    train set's auxiliary words. File names are unique `clip_<9 hex>.wav`.
    """
    rng = np.random.default_rng([seed, _TEST_PLAN])
    n_silence = round(count * _TEST_SILENCE_SHARE)
    n_unknown = round(count * _TEST_UNKNOWN_SHARE)
    n_commands = count - n_silence - n_unknown
    n_absent = (n_unknown + 1) // 2
    contents: list[tuple[str, str | None]] = [
        (COMMANDS[i % len(COMMANDS)], COMMANDS[i % len(COMMANDS)]) for i in range(n_commands)
    ]
    contents += [("unknown", ABSENT_WORDS[i % len(ABSENT_WORDS)]) for i in range(n_absent)]
    contents += [("unknown", str(rng.choice(AUXILIARY_WORDS))) for _ in range(n_unknown - n_absent)]
    contents += [("silence", None)] * n_silence
    order = rng.permutation(len(contents))
    names: set[str] = set()
    clips = []
    for position in order:
        label, word = contents[position]
        name = f"clip_{int(rng.integers(0, 16**9)):09x}.wav"
        while name in names:
            name = f"clip_{int(rng.integers(0, 16**9)):09x}.wav"
        names.add(name)
        speaker = None if word is None else int(rng.integers(n_speakers))
        clips.append(TestClip(name, label, word, speaker))
    return clips


# ---------------------------------------------------------------- speech


def _speak_clip(
    espeak: Espeak,
    speaker: Speaker,
    word: str,
    rng: np.random.Generator,
    peak_db: tuple[float, float] = (-26.0, -2.0),
) -> np.ndarray:
    """One second: `word` in the speaker's voice, jittered, at a random onset and gain.

    peak_db: range of the word's peak level in dBFS, before the speaker's own offset.
    """
    rate = int(np.clip(round(speaker.rate * rng.uniform(0.9, 1.1)), 80, _MAX_ESPEAK_RATE))
    pitch = int(np.clip(speaker.pitch + rng.integers(-5, 6), 0, 100))
    pitch_range = int(np.clip(speaker.pitch_range + rng.integers(-8, 9), 0, 100))
    noise_seed = int(rng.integers(0, 2**31))
    for _ in range(4):
        speech = _trim_silence(
            espeak.speak(
                word,
                voice=speaker.accent,
                variant=speaker.variant,
                rate=rate,
                pitch=pitch,
                pitch_range=pitch_range,
                seed=noise_seed,
            )
        )
        if len(speech) <= _MAX_WORD_SAMPLES or rate >= _MAX_ESPEAK_RATE:
            break
        # Too slow to fit in a second: say it faster rather than cut it off.
        rate = min(_MAX_ESPEAK_RATE, int(np.ceil(rate * len(speech) / _MAX_WORD_SAMPLES * 1.05)))
    if len(speech) > _MAX_WORD_SAMPLES:
        speech = speech[:_MAX_WORD_SAMPLES] * _fade_out(_MAX_WORD_SAMPLES)
    peak = float(np.max(np.abs(speech))) if len(speech) else 0.0
    if peak == 0.0:
        raise RuntimeError(f"espeak-ng produced no sound for {word!r} with {speaker}")
    target_db = min(rng.uniform(*peak_db) + speaker.level_db, -1.0)
    speech = speech * (10 ** (target_db / 20) / peak)
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    onset = int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1))
    clip[onset : onset + len(speech)] = speech
    return clip


def _add_recording_noise(
    clip: np.ndarray, speaker: Speaker, rng: np.random.Generator, snr_db: float
) -> np.ndarray:
    """Add the speaker's microphone noise (coloured noise, maybe hum) at `snr_db`."""
    noise = _colored_noise(rng, CLIP_SAMPLES, speaker.noise_exponent)
    if speaker.hum_hz:
        hum = _speaker_hum(speaker)
        start = int(rng.integers(0, len(hum) - CLIP_SAMPLES + 1))
        noise = noise + 0.7 * hum[start : start + CLIP_SAMPLES]
    return clip + noise * (_speech_rms(clip) / 10 ** (snr_db / 20) / _rms(noise))


@lru_cache(maxsize=64)
def _speaker_hum(speaker: Speaker) -> np.ndarray:
    """Two seconds of the hum in this speaker's recordings, to cut 1 s windows from."""
    rng = np.random.default_rng(int(speaker.id, 16))
    return _hum(rng, 2 * CLIP_SAMPLES, speaker.hum_hz)


def _add_environment(
    clip: np.ndarray, bank: dict[str, np.ndarray], rng: np.random.Generator, snr_db: float
) -> np.ndarray:
    """Add a random 1 s window of a random noise-bank sound at `snr_db`."""
    noise = _random_window(bank, rng)
    return clip + noise * (_speech_rms(clip) / 10 ** (snr_db / 20) / max(_rms(noise), 1e-9))


def _silence_clip(bank: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A `silence` test clip: background noise from -70 dB (near digital silence) to -15 dB RMS."""
    noise = _random_window(bank, rng)
    level_db = rng.uniform(-70.0, -15.0)
    return noise * (10 ** (level_db / 20) / max(_rms(noise), 1e-9))


def _random_window(bank: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    names = sorted(bank)
    sound = bank[names[rng.integers(len(names))]]
    start = int(rng.integers(0, len(sound) - CLIP_SAMPLES + 1))
    return sound[start : start + CLIP_SAMPLES]


# ---------------------------------------------------------------- noise


def _running_tap(rng: np.random.Generator, length: int) -> np.ndarray:
    """Unit-RMS band-passed noise (300-6000 Hz) with a slow, irregular gurgle."""
    band = sosfilt(
        butter(4, [300, 6000], btype="bandpass", fs=SAMPLE_RATE, output="sos"),
        rng.standard_normal(length),
    )
    gurgle = sosfilt(butter(2, 8, fs=SAMPLE_RATE, output="sos"), rng.standard_normal(length))
    tap = band * (1.0 + 0.5 * gurgle / max(_rms(gurgle), 1e-9))
    return tap / _rms(tap)


def _hum(rng: np.random.Generator, length: int, fundamental_hz: float) -> np.ndarray:
    """Unit-RMS mains hum: 7 harmonics of `fundamental_hz`, its frequency wobbling by 0.3 Hz."""
    time = np.arange(length) / SAMPLE_RATE
    wobble_hz = 0.3 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * time + rng.uniform(0, 2 * np.pi))
    cycles = fundamental_hz * time + np.cumsum(wobble_hz) / SAMPLE_RATE
    hum = np.zeros(length)
    for harmonic in range(1, 8):
        amplitude = rng.uniform(0.3, 1.0) / harmonic
        hum += amplitude * np.sin(2 * np.pi * harmonic * cycles + rng.uniform(0, 2 * np.pi))
    return hum / _rms(hum)


def _babble(rng: np.random.Generator, length: int, espeak: Espeak, talkers: int = 6) -> np.ndarray:
    """Unit-RMS overlapped chatter of `talkers` synthetic voices saying filler sentences."""
    voices = english_voices()
    variants = [v for v in voices.variants if v not in _UNNATURAL_VARIANTS]
    espeak.reset()
    lead_in = SAMPLE_RATE  # dropped: by then every talker has started
    mixture = np.zeros(length)
    for _ in range(talkers):
        accent = str(voices.accents[rng.integers(len(voices.accents))])
        variant = str(variants[rng.integers(len(variants))])
        pitch, rate = int(rng.integers(20, 80)), int(rng.integers(150, 230))
        stream: list[np.ndarray] = [np.zeros(int(rng.integers(0, SAMPLE_RATE)))]
        filled = len(stream[0])
        while filled < lead_in + length:
            words = rng.choice(_BABBLE_VOCABULARY, size=int(rng.integers(5, 13)))
            sentence = espeak.speak(
                " ".join(words) + ".",
                voice=accent,
                variant=variant,
                rate=rate,
                pitch=pitch,
                pitch_range=int(rng.integers(30, 90)),
            )
            sentence = sentence / max(_rms(sentence), 1e-9) * 10 ** (rng.uniform(-6, 0) / 20)
            pause = np.zeros(int(rng.uniform(0.05, 0.6) * SAMPLE_RATE))
            stream += [sentence, pause]
            filled += len(sentence) + len(pause)
        talk = np.concatenate(stream)[lead_in : lead_in + length]
        mixture += talk * 10 ** (rng.uniform(-8, 0) / 20)
    return mixture / _rms(mixture)


def _noise_makers(espeak: Espeak) -> dict[str, Callable[[np.random.Generator, int], np.ndarray]]:
    return {
        "white": lambda rng, n: _colored_noise(rng, n, 0.0),
        "pink": lambda rng, n: _colored_noise(rng, n, 1.0),
        "brown": lambda rng, n: _colored_noise(rng, n, 2.0),
        "tap": _running_tap,
        "hum": lambda rng, n: (
            _hum(rng, n, float(rng.choice([50.0, 60.0]))) + 0.05 * _colored_noise(rng, n, 1.0)
        ),
        "babble": lambda rng, n: _babble(rng, n, espeak),
    }


def _make_noise_bank(
    rng: np.random.Generator, length: int, espeak: Espeak, include: Sequence[str]
) -> dict[str, np.ndarray]:
    """Unit-RMS sounds of `length` samples, one per name in `include`."""
    makers = _noise_makers(espeak)
    return {name: makers[name](rng, length) for name in include}


def _write_background_noise(
    folder: Path,
    rng: np.random.Generator,
    seconds: float,
    espeak: Espeak,
    advance: Callable[[], object],
) -> None:
    """The `_background_noise_` folder: six noise files of `seconds` each and a README."""
    bank = _make_noise_bank(
        rng, round(seconds * SAMPLE_RATE), espeak, include=list(_BACKGROUND_FILES)
    )
    for name, sound in bank.items():
        filename, rms_db = _BACKGROUND_FILES[name]
        _write_wav(folder / filename, sound * 10 ** (rms_db / 20))
        advance()
    _write_text(folder / "README.md", _BACKGROUND_README)
