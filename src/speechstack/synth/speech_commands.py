"""A small, deterministic stand-in for the Kaggle "TensorFlow Speech Recognition Challenge".

`generate_speech_commands` writes the competition's folder layout with clips spoken by
espeak-ng, so the whole pipeline (reader, folds, training, stacking, submission) can run
end to end without the 2 GB download:

    <out_dir>/train/audio/<word>/<speaker>_nohash_<n>.wav      30 words
    <out_dir>/train/audio/_background_noise_/*.wav, README.md
    <out_dir>/train/validation_list.txt, testing_list.txt      the dataset's hash rule
    <out_dir>/test/audio/clip_<9 hex>.wav                       shifted: see below
    <out_dir>/sample_submission.csv                             fname,label (all silence)
    <out_dir>/demo_solution.csv                                 fname,label: the answer key
    <out_dir>/demo_conditions.csv                               what each test clip holds
    <out_dir>/demo_long/long_<nnn>.wav                          keyword spotting: see below
    <out_dir>/demo_long.csv                                     file,start,end,label,word

A speaker is one espeak-ng voice: accent x variant x pitch x rate x pitch range. Every
clip is 1 s of 16 kHz mono PCM16 with the word at a random onset. Train clips get a
random gain and a little recording noise (coloured noise, sometimes mains hum).

The test set is shifted the way the real competition's was, so that a score on it says
how a model copes with people and places it never met (see `speechstack.synth.shift`):

- Unseen speakers made differently: about half use espeak-ng's Klatt formant
  synthesiser (the `klatt*` variants, never used for train speakers), the rest
  variants held out from train; every test speaker also gets a strong voice shift
  (vocal-tract-length warp, spectral tilt and EQ, tremor, sometimes breath noise).
- Noises of kinds `_background_noise_` does not hold (`shift.NOISE_KINDS`: a crowd of
  other voices, music, traffic, keyboard clicks, blue and violet noise, wind) on most
  word clips at 0-20 dB SNR, reverberant rooms on about half, telephone or low-pass
  channels (some mu-law coded or clipped) on about a third, and word peaks from -45 to
  -1 dBFS. Silence clips are cut from the same new noises.
- More unknown words, most of them never said in train (`ABSENT_WORDS`, many of them
  close to a command: "dawn", "note", "lift", "top").

`demo_long/` holds a few long recordings (45 s by default) for keyword spotting: one
test speaker each (shifted voice) saying commands, auxiliary and absent words one after
another, 0.6-2.5 s apart, over a continuous background built from the test set's noises
at 10-25 dB SNR (`speechstack.synth.long`). `demo_long.csv` says where each word lies:
`file` (in `demo_long/`), `start` and `end` in seconds, `label` (the command, or
`unknown`) and the `word` said.

Every random choice comes from `np.random.default_rng` streams keyed by the seed, and
libespeak-ng is reloaded before each speaker, so a seed always gives byte-identical
files.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt
from tqdm import tqdm

from speechstack.synth.common import UNNATURAL_VARIANTS as _UNNATURAL_VARIANTS
from speechstack.synth.common import build_atomically, csv_text
from speechstack.synth.common import colored_noise as _colored_noise
from speechstack.synth.common import fade_out as _fade_out
from speechstack.synth.common import random_window as _random_window
from speechstack.synth.common import rms as _rms
from speechstack.synth.common import speech_rms as _speech_rms
from speechstack.synth.common import trim_silence as _trim_silence
from speechstack.synth.common import write_text as _write_text
from speechstack.synth.common import write_wav as _write_wav
from speechstack.synth.espeak import SAMPLE_RATE, Espeak, english_voices
from speechstack.synth.long import render_recording
from speechstack.synth.shift import (
    NOISE_KINDS,
    VoiceShift,
    apply_channel,
    crowd_babble,
    noise_bank,
    random_channel,
    random_room,
    random_voice_shift,
    reverberate,
    scale_to_snr,
    shift_voice,
)

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
    "yet",
    "guess",  # like "yes"
    "note",
    "snow",  # like "no"
    "cup",
    "pup",  # like "up"
    "town",
    "dawn",  # like "down"
    "lift",
    "loft",  # like "left"
    "light",
    "ride",  # like "right"
    "in",
    "of",  # like "on" and "off"
    "cough",  # like "off"
    "top",
    "shop",
    "step",  # like "stop"
    "got",
    "goal",  # like "go"
    "apple",
    "table",
    "music",
    "window",
    "water",
)
"""Words spoken only in the test set; their true label is `unknown`.

Many sound close to a command, as real out-of-vocabulary speech often does; homophones
of a command ("know", "write") are left out, since no model could tell them apart.
"""

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

# Fillers for the test set's crowd noise: none of them is a command, a train word, an
# absent word or a word of the train babble.
_CROWD_VOCABULARY = (
    "she",
    "he",
    "my",
    "your",
    "our",
    "has",
    "had",
    "were",
    "been",
    "will",
    "should",
    "might",
    "please",
    "thanks",
    "hello",
    "picture",
    "garage",
    "market",
    "doctor",
    "holiday",
    "paper",
    "river",
    "orange",
    "lemon",
    "button",
    "pencil",
    "basket",
    "blanket",
    "candle",
    "butter",
    "jacket",
    "pocket",
    "rabbit",
    "salad",
    "sugar",
    "tennis",
    "violin",
    "wallet",
    "yellow",
    "purple",
    "quiet",
    "simple",
    "careful",
    "famous",
    "gentle",
    "heavy",
    "honest",
    "lucky",
    "narrow",
    "perfect",
    "special",
    "certain",
    "during",
    "between",
    "around",
    "almost",
    "usually",
    "probably",
    "already",
    "enough",
)

# Independent random streams, keyed as default_rng([seed, stream, ...]).
_TRAIN_SPEAKERS, _TEST_SPEAKERS, _TRAIN_PLAN, _TRAIN_CLIP = 1, 2, 3, 4
_BACKGROUND, _TEST_PLAN, _TEST_CLIP, _TEST_NOISE_BANK, _TRAIN_PLAN_FILL = 5, 6, 7, 8, 9
_VARIANT_SPLIT, _TEST_VOICE_SHIFT, _LONG_RECORDING = 10, 11, 12

_MAX_WORD_SAMPLES = int(0.92 * CLIP_SAMPLES)  # longest spoken word we keep; longer is sped up
_MAX_ESPEAK_RATE = 450
_WHICH_SET_MAX_CLIPS = 2**27 - 1

KLATT_PREFIX = "klatt"  # espeak-ng variants klatt, klatt2, ...: the Klatt formant synthesiser
_HELD_OUT_VARIANT_SHARE = 0.2  # of the other natural variants, kept for test speakers

# The test set (see the module notes).
TEST_NOISE_KINDS = NOISE_KINDS
_TEST_BANK_SECONDS = 8.0
_TEST_SILENCE_SHARE, _TEST_UNKNOWN_SHARE, _TEST_ABSENT_SHARE = 0.10, 0.20, 0.6
_TEST_NOISY_SHARE, _TEST_TWO_NOISES_SHARE = 0.85, 0.25  # word clips mixed with 1 (or 2) noises
_TEST_SNR_DB = (0.0, 20.0)  # those clips' speech-to-noise ratio
_TEST_FLOOR_SNR_DB = (30.0, 45.0)  # the other word clips: a faint floor of a new noise
_TEST_REVERB_SHARE, _SILENCE_REVERB_SHARE = 0.5, 0.3
_TEST_CHANNEL_SHARE = 0.35  # telephone or low-pass channels (see shift.random_channel)
_TEST_PEAK_DB = (-45.0, -1.0)  # the word's peak level, dBFS
_TEST_MAX_PEAK = 0.97  # a clip's mixture is scaled under this before its channel
_TEST_SILENCE_DB = (-75.0, -12.0)  # a silence clip's RMS level, dBFS

# The long recordings (see the module notes).
LONG_FOLDER = "demo_long"
_LONG_COMMAND_SHARE = 0.7  # of the words said; the rest unknown, half of them absent words
_LONG_ABSENT_SHARE = 0.5

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
    """One synthetic person: an espeak-ng voice plus the character of their microphone.

    Test speakers also carry a `shift` of their voice (see `shift.shift_voice`).
    """

    id: str  # 8 lowercase hex characters, like the real dataset's "0a7c2a8d"
    accent: str
    variant: str
    pitch: int  # espeak 0..100
    rate: int  # words per minute
    pitch_range: int  # espeak 0..100
    noise_exponent: float  # recording noise power falls as 1/f**noise_exponent
    hum_hz: float  # mains hum in the recording noise; 0 = none
    level_db: float  # the speaker's typical loudness offset, dB
    shift: VoiceShift | None = None  # test speakers only


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
    test_clips: int = 1000,
    noise_seconds: float = 40.0,
    long_recordings: int = 3,
    long_seconds: float = 45.0,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic Kaggle speech-commands dataset to `out_dir` and return `out_dir`.

    speakers: train speakers; each says every command 1-3 times and each auxiliary
        word with probability 1/2 (about 30 clips per speaker).
    test_speakers, test_clips: the test set's unseen speakers and its size; about 10% of
        test clips are silence, 20% unknown words (60% of them never heard in train),
        the rest the ten commands in equal shares. The test set is shifted from train
        in speakers, noises, rooms, channels and levels (see the module notes).
    noise_seconds: length of each `_background_noise_` file.
    long_recordings, long_seconds: the number and length (s) of the recordings in
        `demo_long/` (see the module notes); 0 recordings: no `demo_long/` at all.
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
    if long_recordings < 0:
        raise ValueError(f"long_recordings must be >= 0, got {long_recordings}")
    if long_seconds < 5.0:
        raise ValueError(f"long_seconds must be >= 5 (room for a word), got {long_seconds}")
    return build_atomically(
        out_dir,
        force,
        lambda root: _write_dataset(
            root,
            speakers,
            test_speakers,
            test_clips,
            noise_seconds,
            seed,
            progress,
            (long_recordings, long_seconds),
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
    long: tuple[int, float],
) -> None:
    """The whole dataset into `root`; `long` is (recordings, seconds) of `demo_long/`."""
    train_speakers, test_speakers = make_speakers(seed, n_speakers, n_test_speakers)
    pools = voice_pools(seed)
    train_plan = plan_train_words(seed, n_speakers)
    test_plan = plan_test_clips(seed, n_test_clips, n_test_speakers)
    total = sum(len(words) for words in train_plan) + len(test_plan) + len(_BACKGROUND_FILES)
    total += long[0]
    espeak = Espeak()
    with tqdm(total=total, desc="speech commands demo", unit="file", disable=not progress) as bar:
        _write_background_noise(
            root / "train" / "audio" / NOISE_FOLDER,
            np.random.default_rng([seed, _BACKGROUND]),
            noise_seconds,
            espeak,
            pools.train,
            bar.update,
        )
        train_files = _write_train_clips(
            root / "train" / "audio", train_speakers, train_plan, seed, espeak, bar.update
        )
        test_bank = make_test_noise_bank(seed, noise_seconds, espeak)
        conditions = _write_test_clips(
            root / "test" / "audio", test_speakers, test_plan, test_bank, seed, espeak, bar.update
        )
        if long[0]:
            _write_long_recordings(root, test_speakers, test_bank, seed, espeak, *long, bar.update)

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
    columns = ["word", "kind", "speaker", "voice", "rt60_s", "peak_dbfs", "snr_db", "channel"]
    _write_text(
        root / "demo_conditions.csv",
        csv_text(
            ["fname", "label", *columns],
            (
                [
                    clip.fname,
                    clip.label,
                    *("" if v is None else v for v in (conditions[clip.fname][c] for c in columns)),
                ]
                for clip in ordered
            ),
        ),
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
) -> dict[str, dict[str, object]]:
    """Write the planned test clips, shifted from train (see the module notes); return
    what was drawn for each (`demo_conditions.csv`)."""
    audio.mkdir(parents=True, exist_ok=True)
    conditions: dict[str, dict[str, object]] = {
        clip.fname: {
            "word": clip.word or "",
            "kind": _word_kind(clip),
            "speaker": "" if clip.speaker is None else speakers[clip.speaker].id,
            "voice": "",
            "rt60_s": None,
            "peak_dbfs": None,
            "snr_db": None,
            "channel": None,
        }
        for clip in plan
    }
    for speaker_index, speaker in enumerate(speakers):
        espeak.reset()
        for clip_index, planned in enumerate(plan):
            if planned.word is None or planned.speaker != speaker_index:
                continue
            rng = np.random.default_rng([seed, _TEST_CLIP, clip_index])
            drawn = conditions[planned.fname]
            clip = _shifted_word_clip(espeak, speaker, planned.word, bank, rng, drawn)
            _write_wav(audio / planned.fname, clip)
            advance()
    for clip_index, planned in enumerate(plan):
        if planned.word is None:
            rng = np.random.default_rng([seed, _TEST_CLIP, clip_index])
            _write_wav(audio / planned.fname, _shifted_silence_clip(bank, rng))
            advance()
    return conditions


def _write_long_recordings(
    root: Path,
    speakers: list[Speaker],
    bank: dict[str, np.ndarray],
    seed: int,
    espeak: Espeak,
    count: int,
    seconds: float,
    advance: Callable[[], object],
) -> None:
    """`demo_long/long_<nnn>.wav` and `demo_long.csv` (see the module notes). Recording i
    has its own random stream (`_LONG_RECORDING`, i), so the rest of the dataset is the
    same with or without them, and a recording the same whatever the count."""
    rows: list[list[object]] = []
    for index in range(count):
        rng = np.random.default_rng([seed, _LONG_RECORDING, index])
        speaker = speakers[int(rng.integers(len(speakers)))]
        espeak.reset()
        waveform, words = render_recording(
            rng,
            seconds,
            speak=partial(_shifted_speech, espeak, speaker),
            pick=_long_word,
            bank=bank,
            sample_rate=SAMPLE_RATE,
        )
        name = f"long_{index:03d}.wav"
        _write_wav(root / LONG_FOLDER / name, waveform)
        rows += [[name, f"{w.start:.3f}", f"{w.end:.3f}", w.label, w.word] for w in words]
        advance()
    _write_text(root / "demo_long.csv", csv_text(["file", "start", "end", "label", "word"], rows))


def _long_word(rng: np.random.Generator) -> tuple[str, str]:
    """(word, label) of the next word of a long recording: a command, or (labelled
    `unknown`) an auxiliary word or a word absent from train."""
    if rng.random() < _LONG_COMMAND_SHARE:
        command = str(COMMANDS[rng.integers(len(COMMANDS))])
        return command, command
    pool = ABSENT_WORDS if rng.random() < _LONG_ABSENT_SHARE else AUXILIARY_WORDS
    return str(pool[rng.integers(len(pool))]), "unknown"


# ---------------------------------------------------------------- speakers and plans


@dataclass(frozen=True)
class VoicePools:
    """Which espeak-ng variants each side of the dataset may speak with (disjoint)."""

    train: tuple[str, ...]  # natural variants for train speakers (and train babble)
    test: tuple[str, ...]  # natural variants held out from train, for test speakers
    klatt: tuple[str, ...]  # the Klatt formant synthesiser's variants: test only


def voice_pools(seed: int) -> VoicePools:
    """Split the installed variants of a seed: Klatt and a random fifth of the rest to test.

    Robot-like variants go to neither side. The split depends on the seed alone, so the
    train and test voices stay disjoint whatever the number of speakers.
    """
    natural = [v for v in english_voices().variants if v not in _UNNATURAL_VARIANTS]
    klatt = tuple(v for v in natural if v.startswith(KLATT_PREFIX))
    others = [v for v in natural if not v.startswith(KLATT_PREFIX)]
    rng = np.random.default_rng([seed, _VARIANT_SPLIT])
    held_out = rng.choice(
        len(others), size=max(1, round(len(others) * _HELD_OUT_VARIANT_SHARE)), replace=False
    )
    test = tuple(sorted(others[i] for i in held_out))
    train = tuple(v for v in others if v not in test)
    return VoicePools(train=train, test=test, klatt=klatt or test)


def make_speakers(seed: int, n_train: int, n_test: int) -> tuple[list[Speaker], list[Speaker]]:
    """The train and test speakers of a seed: no id or voice is shared by two speakers.

    Train speakers use `voice_pools(seed).train`; test speakers alternate between the
    Klatt variants (first) and the held-out variants, so no test speaker sounds like a
    train variant, and each gets a strong `VoiceShift` of their own. Each set has its
    own random stream, so changing `n_train` leaves the test speakers as they were
    (unless one of them collides with a new train speaker).
    """
    accents = english_voices().accents
    pools = voice_pools(seed)
    taken_ids: set[str] = set()
    taken_voices: set[tuple] = set()
    train = _sample_speakers(
        np.random.default_rng([seed, _TRAIN_SPEAKERS]),
        n_train,
        accents,
        [pools.train],
        taken_ids,
        taken_voices,
    )
    test = _sample_speakers(
        np.random.default_rng([seed, _TEST_SPEAKERS]),
        n_test,
        accents,
        [pools.klatt, pools.test],
        taken_ids,
        taken_voices,
    )
    test = [
        replace(
            speaker,
            shift=random_voice_shift(np.random.default_rng([seed, _TEST_VOICE_SHIFT, index])),
        )
        for index, speaker in enumerate(test)
    ]
    return train, test


def _sample_speakers(
    rng: np.random.Generator,
    count: int,
    accents: Sequence[str],
    variant_pools: Sequence[Sequence[str]],
    taken_ids: set[str],
    taken_voices: set[tuple],
) -> list[Speaker]:
    """`count` speakers whose ids and voices differ from each other and from `taken_*`.

    Speaker i draws its variant from `variant_pools[i % len(variant_pools)]`.
    """
    chosen: list[Speaker] = []
    while len(chosen) < count:
        variants = variant_pools[len(chosen) % len(variant_pools)]
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
    """What each test clip holds: ~10% silence, ~20% unknown, commands in equal shares.

    60% of the unknown clips (at least one) are words absent from train, taken in a
    random order that goes through all of `ABSENT_WORDS` before repeating one; the rest
    are the train set's auxiliary words. File names are unique `clip_<9 hex>.wav`.
    """
    rng = np.random.default_rng([seed, _TEST_PLAN])
    n_silence = round(count * _TEST_SILENCE_SHARE)
    n_unknown = round(count * _TEST_UNKNOWN_SHARE)
    n_commands = count - n_silence - n_unknown
    n_absent = min(n_unknown, max(1, round(n_unknown * _TEST_ABSENT_SHARE)))
    absent_order = rng.permutation(len(ABSENT_WORDS))
    contents: list[tuple[str, str | None]] = [
        (COMMANDS[i % len(COMMANDS)], COMMANDS[i % len(COMMANDS)]) for i in range(n_commands)
    ]
    contents += [
        ("unknown", ABSENT_WORDS[absent_order[i % len(ABSENT_WORDS)]]) for i in range(n_absent)
    ]
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
    speech = _say(espeak, speaker, word, rng)
    peak = float(np.max(np.abs(speech)))
    target_db = min(rng.uniform(*peak_db) + speaker.level_db, -1.0)
    return _place(speech * (10 ** (target_db / 20) / peak), rng)


def _say(
    espeak: Espeak,
    speaker: Speaker,
    word: str,
    rng: np.random.Generator,
    max_samples: int = _MAX_WORD_SAMPLES,
) -> np.ndarray:
    """`word` in the speaker's voice with jittered rate and pitch, trimmed, at most
    `max_samples` long (said faster, or cut with a fade, when it would be longer)."""
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
        if len(speech) <= max_samples or rate >= _MAX_ESPEAK_RATE:
            break
        # Too slow to fit in a second: say it faster rather than cut it off.
        rate = min(_MAX_ESPEAK_RATE, int(np.ceil(rate * len(speech) / max_samples * 1.05)))
    speech = _fit(speech, max_samples)
    if not len(speech) or not np.any(speech):
        raise RuntimeError(f"espeak-ng produced no sound for {word!r} with {speaker}")
    return speech


def _fit(speech: np.ndarray, max_samples: int) -> np.ndarray:
    """`speech`, cut to `max_samples` with a short fade-out if it is longer."""
    if len(speech) > max_samples:
        return speech[:max_samples] * _fade_out(max_samples)
    return speech


def _place(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One second of silence with `speech` at a random onset."""
    clip = np.zeros(CLIP_SAMPLES, dtype=np.float64)
    onset = int(rng.integers(0, CLIP_SAMPLES - len(speech) + 1))
    clip[onset : onset + len(speech)] = speech
    return clip


def _word_kind(clip: TestClip) -> str:
    """command, silence, unknown (a train word) or absent (an unknown word never in train)."""
    if clip.word is None:
        return "silence"
    if clip.label != "unknown":
        return "command"
    return "absent" if clip.word in ABSENT_WORDS else "unknown"


def _shifted_word_clip(
    espeak: Espeak,
    speaker: Speaker,
    word: str,
    bank: dict[str, np.ndarray],
    rng: np.random.Generator,
    conditions: dict[str, object],
) -> np.ndarray:
    """A test clip of `word`: the speaker's shifted voice, maybe in a room, at a random
    level, with new noises at a low SNR (or a faint floor of one), maybe through a
    band-limited channel. Where loud noise would push the mixture past full scale the
    whole clip is turned down instead, so only a channel's own clipping distorts. What was
    drawn goes into `conditions` (for `demo_conditions.csv`)."""
    clip = _place(_shifted_speech(espeak, speaker, word, rng), rng)
    conditions["voice"] = "klatt" if speaker.variant.startswith(KLATT_PREFIX) else "held-out"
    conditions["rt60_s"] = None
    if rng.random() < _TEST_REVERB_SHARE:
        room = random_room(rng)
        conditions["rt60_s"] = round(room.rt60_s, 3)
        clip = reverberate(clip, room, rng, SAMPLE_RATE)
    target_db = float(np.clip(rng.uniform(*_TEST_PEAK_DB) + speaker.level_db, *_TEST_PEAK_DB))
    conditions["peak_dbfs"] = round(target_db, 1)
    clip *= 10 ** (target_db / 20) / max(float(np.max(np.abs(clip))), 1e-12)
    if rng.random() < _TEST_NOISY_SHARE:
        snr_db = rng.uniform(*_TEST_SNR_DB)
        clip = clip + _noise_at_snr(clip, bank, rng, snr_db)
    else:
        snr_db = rng.uniform(*_TEST_FLOOR_SNR_DB)
        clip = clip + _noise_at_snr(clip, bank, rng, snr_db, kinds=1)
    conditions["snr_db"] = round(float(snr_db), 1)
    peak = float(np.max(np.abs(clip)))
    if peak > _TEST_MAX_PEAK:  # loud noise on a loud word: turn the recording level down
        clip *= _TEST_MAX_PEAK / peak
    conditions["channel"] = None
    if rng.random() < _TEST_CHANNEL_SHARE:
        channel = random_channel(rng)
        conditions["channel"] = "telephone" if channel.low_hz else "low-pass"
        clip = apply_channel(clip, channel, SAMPLE_RATE)
    return clip


def _shifted_speech(
    espeak: Espeak, speaker: Speaker, word: str, rng: np.random.Generator
) -> np.ndarray:
    """`word` in a test speaker's shifted voice: trimmed, at most `_MAX_WORD_SAMPLES`."""
    if speaker.shift is None:
        raise ValueError(f"test speaker {speaker.id} has no voice shift")
    # A warp below 1 lengthens the word: ask espeak for a correspondingly shorter one.
    max_samples = int(_MAX_WORD_SAMPLES * min(1.0, speaker.shift.warp))
    speech = _say(espeak, speaker, word, rng, max_samples=max_samples)
    return _fit(shift_voice(speech, speaker.shift, rng, SAMPLE_RATE), _MAX_WORD_SAMPLES)


def _noise_at_snr(
    clip: np.ndarray,
    bank: dict[str, np.ndarray],
    rng: np.random.Generator,
    snr_db: float,
    kinds: int | None = None,
) -> np.ndarray:
    """Noise for `clip` at `snr_db` in all: one bank sound, or (sometimes) two sharing the
    noise power between them. `kinds` forces the number of sounds."""
    if kinds is None:
        kinds = 2 if rng.random() < _TEST_TWO_NOISES_SHARE else 1
    names = rng.choice(sorted(bank), size=kinds, replace=False)
    first = 1.0 if kinds == 1 else float(rng.uniform(0.25, 0.75))
    shares = [first, 1.0 - first][:kinds]
    noise = np.zeros(len(clip))
    for name, share in zip(names, shares, strict=True):
        window = _random_window(bank[str(name)], len(clip), rng)
        noise += scale_to_snr(clip, window, snr_db - 10 * np.log10(share))
    return noise


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


def _shifted_silence_clip(bank: dict[str, np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A `silence` test clip: one or two new noises, maybe in a room, from near digital
    silence to loud (its peak kept under full scale), maybe through a band-limited
    channel."""
    names = rng.choice(sorted(bank), size=2 if rng.random() < 0.3 else 1, replace=False)
    noise = np.zeros(CLIP_SAMPLES)
    for name in names:
        window = _random_window(bank[str(name)], CLIP_SAMPLES, rng)
        noise += window * 10 ** (rng.uniform(-10.0, 0.0) / 20) / max(_rms(window), 1e-12)
    if rng.random() < _SILENCE_REVERB_SHARE:
        noise = reverberate(noise, random_room(rng), rng, SAMPLE_RATE)
    noise *= 10 ** (rng.uniform(*_TEST_SILENCE_DB) / 20) / max(_rms(noise), 1e-12)
    noise *= min(1.0, _TEST_MAX_PEAK / max(float(np.max(np.abs(noise))), 1e-12))
    if rng.random() < _TEST_CHANNEL_SHARE:
        noise = apply_channel(noise, random_channel(rng), SAMPLE_RATE)
    return noise


def make_test_noise_bank(seed: int, noise_seconds: float, espeak: Espeak) -> dict[str, np.ndarray]:
    """The test set's unit-RMS noises (`TEST_NOISE_KINDS`), at most 8 s each.

    Its crowd speaks with test-only voices (Klatt and held-out variants) and words that
    are in no train file.
    """
    pools = voice_pools(seed)
    crowd = partial(
        crowd_babble,
        espeak=espeak,
        accents=english_voices().accents,
        variants=pools.klatt + pools.test,
        vocabulary=_CROWD_VOCABULARY,
    )
    return noise_bank(
        np.random.default_rng([seed, _TEST_NOISE_BANK]),
        round(min(noise_seconds, _TEST_BANK_SECONDS) * SAMPLE_RATE),
        SAMPLE_RATE,
        TEST_NOISE_KINDS,
        crowd=crowd,
    )


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


def _babble(
    rng: np.random.Generator,
    length: int,
    espeak: Espeak,
    variants: Sequence[str],
    talkers: int = 6,
) -> np.ndarray:
    """Unit-RMS overlapped chatter of `talkers` synthetic voices saying filler sentences."""
    voices = english_voices()
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


def _noise_makers(
    espeak: Espeak, variants: Sequence[str]
) -> dict[str, Callable[[np.random.Generator, int], np.ndarray]]:
    return {
        "white": lambda rng, n: _colored_noise(rng, n, 0.0),
        "pink": lambda rng, n: _colored_noise(rng, n, 1.0),
        "brown": lambda rng, n: _colored_noise(rng, n, 2.0),
        "tap": _running_tap,
        "hum": lambda rng, n: (
            _hum(rng, n, float(rng.choice([50.0, 60.0]))) + 0.05 * _colored_noise(rng, n, 1.0)
        ),
        "babble": lambda rng, n: _babble(rng, n, espeak, variants),
    }


def _make_noise_bank(
    rng: np.random.Generator,
    length: int,
    espeak: Espeak,
    include: Sequence[str],
    variants: Sequence[str],
) -> dict[str, np.ndarray]:
    """Unit-RMS sounds of `length` samples, one per name in `include`; babble speaks with
    `variants`."""
    makers = _noise_makers(espeak, variants)
    return {name: makers[name](rng, length) for name in include}


def _write_background_noise(
    folder: Path,
    rng: np.random.Generator,
    seconds: float,
    espeak: Espeak,
    variants: Sequence[str],
    advance: Callable[[], object],
) -> None:
    """The `_background_noise_` folder: six noise files of `seconds` each and a README.

    Its babble speaks with the train voices (`variants`) only.
    """
    bank = _make_noise_bank(
        rng,
        round(seconds * SAMPLE_RATE),
        espeak,
        include=list(_BACKGROUND_FILES),
        variants=variants,
    )
    for name, sound in bank.items():
        filename, rms_db = _BACKGROUND_FILES[name]
        _write_wav(folder / filename, sound * 10 ** (rms_db / 20))
        advance()
    _write_text(folder / "README.md", _BACKGROUND_README)
