"""Small, deterministic stand-ins for the speech-emotion corpora RAVDESS and CREMA-D.

Both are written in the real corpus layout, spoken by espeak-ng actors, so the emotion
readers, speaker-grouped folds and training can run without the downloads:

    generate_ravdess:   <out>/Actor_XX/03-01-EE-II-SS-RR-AA.wav     48 kHz mono PCM16
    generate_crema_d:   <out>/AudioWAV/AAAA_SSS_EEE_LL.wav          16 kHz mono PCM16
                        <out>/VideoDemographics.csv                 ActorID,Age,Sex,Race,Ethnicity

Unseen actors, spoken in the same design, go to `<out>/demo_holdout/` in the same layout,
with `<out>/demo_holdout/answers.csv` (`path,label`, paths relative to demo_holdout/). A
reader that globs `Actor_*` or reads `AudioWAV/` directly under `<out>` never sees them.

An actor is one espeak-ng voice: accent x gendered variant x base pitch x rate x pitch
range, with their own speech level and room noise. Emotion is carried by prosody, as
actors carry it: `EMOTION_PROSODY` moves the actor's espeak pitch, pitch range and rate,
the speech level and the spectral tilt (vocal effort) away from neutral, and the final
punctuation picks espeak's intonation contour (falling, exclamation, question). A
stronger intensity (RAVDESS 02, CREMA-D HI) scales that deviation from neutral up, a
weaker one (CREMA-D LO) down; every take adds a little jitter. Random choices come from
`np.random.default_rng` streams keyed by the seed and libespeak-ng is reloaded before
each actor, so a seed always gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt
from tqdm import tqdm

from speechstack.synth.common import (
    UNNATURAL_VARIANTS,
    WHISPER_VARIANTS,
    add_room_tone,
    build_atomically,
    csv_text,
    pad_with_silence,
    room_tone,
    soft_limit,
    speech_rms,
    trim_silence,
    write_text,
    write_wav,
)
from speechstack.synth.espeak import Espeak, english_voices, variants_by_gender

HOLDOUT_FOLDER = "demo_holdout"
"""Sub-folder of the unseen actors and their `answers.csv`."""

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
"""RAVDESS emotion codes 01..08, in order."""

RAVDESS_STATEMENTS = ("Kids are talking by the door", "Dogs are sitting by the door")
"""RAVDESS statement codes 01 and 02."""

RAVDESS_INTENSITIES = {1: 1.0, 2: 1.7}
"""RAVDESS intensity code (01 normal, 02 strong) -> scale of the deviation from neutral."""

RAVDESS_SAMPLE_RATE = 48_000

CREMA_D_SENTENCES = {
    "IEO": "It's eleven o'clock",
    "TIE": "That is exactly what happened",
    "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about",
    "TAI": "The airplane is almost full",
    "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock",
    "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket",
    "ITS": "I think I've seen this before",
    "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}
"""The 12 CREMA-D sentence codes and texts; IEO is the one spoken at three levels."""

CREMA_D_EMOTIONS = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
"""CREMA-D emotion code -> the emotion's name in `EMOTION_PROSODY`."""

CREMA_D_LEVELS = {"LO": 0.55, "MD": 1.0, "HI": 1.7, "XX": 1.0}
"""CREMA-D level (XX = unspecified) -> scale of the deviation from neutral."""

CREMA_D_SAMPLE_RATE = 16_000
CREMA_D_FIRST_ACTOR = 1001

_LEVELLED_SENTENCE = "IEO"


@dataclass(frozen=True)
class Prosody:
    """How an emotion moves an actor's voice away from their neutral one."""

    pitch: float  # added to the actor's espeak base pitch (0..100 scale)
    pitch_range: float  # multiplies the actor's espeak pitch range
    rate: float  # multiplies the actor's speaking rate (words per minute)
    level_db: float  # added to the actor's speech level, dB
    tilt: float  # spectral tilt: > 0 brighter (more vocal effort), < 0 darker; about -1..1
    ending: str  # the sentence's final punctuation, which picks espeak's intonation

    def at(self, intensity: float) -> Prosody:
        """This deviation from neutral scaled by `intensity` (0 = neutral, 1 = as tabled)."""
        return Prosody(
            pitch=self.pitch * intensity,
            pitch_range=self.pitch_range**intensity,
            rate=self.rate**intensity,
            level_db=self.level_db * intensity,
            tilt=self.tilt * intensity,
            ending=self.ending,
        )


EMOTION_PROSODY = {
    "neutral": Prosody(pitch=0, pitch_range=1.0, rate=1.0, level_db=0, tilt=0.0, ending="."),
    "calm": Prosody(pitch=-3, pitch_range=0.75, rate=0.92, level_db=-2, tilt=-0.2, ending="."),
    "happy": Prosody(pitch=10, pitch_range=1.4, rate=1.08, level_db=3, tilt=0.15, ending="!"),
    "sad": Prosody(pitch=-12, pitch_range=0.55, rate=0.8, level_db=-6, tilt=-0.4, ending="."),
    "angry": Prosody(pitch=5, pitch_range=1.5, rate=1.2, level_db=7, tilt=0.5, ending="!"),
    "fearful": Prosody(pitch=14, pitch_range=0.8, rate=1.15, level_db=-1, tilt=0.1, ending="."),
    "disgust": Prosody(pitch=-6, pitch_range=0.9, rate=0.85, level_db=0, tilt=-0.1, ending="."),
    "surprised": Prosody(pitch=18, pitch_range=1.6, rate=1.0, level_db=3, tilt=0.2, ending="?"),
}
"""Each emotion's prosody at normal intensity (RAVDESS 01, CREMA-D MD and XX)."""


@dataclass(frozen=True)
class Actor:
    """One synthetic actor: an espeak-ng voice and the character of their recordings."""

    number: int  # RAVDESS 1.., CREMA-D 1001..
    sex: str  # "male" or "female", matching the variant's declared gender
    accent: str
    variant: str
    pitch: int  # espeak 0..100, neutral
    rate: int  # words per minute, neutral
    pitch_range: int  # espeak 0..100, neutral
    level_db: float  # RMS of their neutral speech, dBFS
    noise_db: float  # RMS of the room noise in their recordings, dBFS
    noise_exponent: float  # room noise power falls as 1/f**noise_exponent


@dataclass(frozen=True)
class _Studio:
    """How a corpus was recorded."""

    sample_rate: int  # Hz of the files
    padding_seconds: tuple[float, float]  # silence before and after the sentence
    level_db: tuple[float, float]  # range of the actors' neutral speech RMS, dBFS
    noise_below_speech_db: tuple[float, float]  # range of the actors' room noise


@dataclass(frozen=True)
class _Take:
    """One planned file: `text` spoken by an actor with an emotion at an intensity."""

    path: str  # relative to the corpus root
    text: str
    emotion: str  # a key of EMOTION_PROSODY
    intensity: float
    label: str  # the answer written to answers.csv


_RAVDESS_STUDIO = _Studio(RAVDESS_SAMPLE_RATE, (0.3, 0.6), (-31.0, -27.0), (38.0, 50.0))
_CREMA_D_STUDIO = _Studio(CREMA_D_SAMPLE_RATE, (0.1, 0.4), (-32.0, -24.0), (28.0, 42.0))

# Independent random streams, keyed as default_rng([seed, stream, ...]).
_RAVDESS_CAST, _RAVDESS_TAKE = 1, 2
_CREMA_D_CAST, _CREMA_D_TAKE, _CREMA_D_SENTENCE_DRAW, _CREMA_D_DEMOGRAPHICS = 3, 4, 5, 6
_ROOM_TONE = 7

_TILT_CORNER_HZ = 1000.0
_CREMA_D_RACES = (("Caucasian", 0.6), ("African American", 0.25), ("Asian", 0.1), ("Unknown", 0.05))
_CREMA_D_HISPANIC_SHARE = 0.1


# ---------------------------------------------------------------- RAVDESS


def generate_ravdess(
    out_dir: Path,
    *,
    actors: int = 12,
    holdout_actors: int = 4,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic RAVDESS speech corpus to `out_dir` and return `out_dir`.

    actors: Actor_01.. in `out_dir`; odd numbers are male voices, even female. Each
        records the full design, 60 files: neutral (intensity 01 only) and 7 emotions at
        intensities 01 and 02, x 2 statements x 2 repetitions.
    holdout_actors: the next actor numbers, same design, in `out_dir/demo_holdout/` with
        `answers.csv` (`path,label`, label = emotion name); 0 writes no holdout.
    force: replace an existing non-empty `out_dir` (only once the new one is complete).

    Files are 48 kHz mono PCM16 like the real corpus, 1.7-4 s (median 2.6 s): the
    sentence with 0.3-0.6 s of quiet room noise either side. The defaults write 960
    files, about 230 MB.
    """
    _check_sizes(actors, holdout_actors, seed)
    if actors + holdout_actors > 99:
        raise ValueError(
            f"RAVDESS actor numbers have two digits: actors + holdout_actors must be <= 99, "
            f"got {actors} + {holdout_actors}"
        )

    def write(root: Path) -> None:
        cast = ravdess_actors(seed, actors + holdout_actors)
        _record_corpus(
            root,
            [(actor, _ravdess_takes(actor.number)) for actor in cast[:actors]],
            [(actor, _ravdess_takes(actor.number)) for actor in cast[actors:]],
            seed,
            _RAVDESS_TAKE,
            _RAVDESS_STUDIO,
            "RAVDESS demo",
            progress,
        )

    return build_atomically(out_dir, force, write)


def ravdess_actors(seed: int, count: int) -> list[Actor]:
    """Actors 1..count of a seed: odd male, even female, every voice distinct.

    Variants are dealt from a shuffled list per gender, so no two actors share one until
    a gender's list is used up.
    """
    numbers = range(1, count + 1)
    sexes = ["male" if number % 2 else "female" for number in numbers]
    return _cast(np.random.default_rng([seed, _RAVDESS_CAST]), numbers, sexes, _RAVDESS_STUDIO)


def _ravdess_takes(actor: int) -> list[_Take]:
    takes = []
    for emotion_code, emotion in enumerate(RAVDESS_EMOTIONS, start=1):
        for intensity in (1,) if emotion == "neutral" else (1, 2):
            for statement, text in enumerate(RAVDESS_STATEMENTS, start=1):
                for repetition in (1, 2):
                    name = (
                        f"03-01-{emotion_code:02d}-{intensity:02d}-{statement:02d}-"
                        f"{repetition:02d}-{actor:02d}.wav"
                    )
                    takes.append(
                        _Take(
                            f"Actor_{actor:02d}/{name}",
                            text,
                            emotion,
                            RAVDESS_INTENSITIES[intensity],
                            emotion,
                        )
                    )
    return takes


# ---------------------------------------------------------------- CREMA-D


def generate_crema_d(
    out_dir: Path,
    *,
    actors: int = 20,
    holdout_actors: int = 4,
    sentences_per_actor: int = 4,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic CREMA-D corpus to `out_dir` and return `out_dir`.

    actors: actor ids 1001.. in `out_dir/AudioWAV/`, about half of them male voices.
        Each says "It's eleven o'clock" (IEO) neutral (level XX) and in the 5 other
        emotions at levels LO, MD and HI, plus `sentences_per_actor` (0..11) of the other
        sentences, drawn per actor, in all 6 emotions at level XX.
    holdout_actors: the next ids, same design, in `out_dir/demo_holdout/AudioWAV/`, with
        their own `VideoDemographics.csv` and `answers.csv` (`path,label`, label = the
        3-letter emotion code); 0 writes no holdout.
    force: replace an existing non-empty `out_dir` (only once the new one is complete).

    `VideoDemographics.csv` has the real columns `ActorID,Age,Sex,Race,Ethnicity`; Sex
    matches the gender of the actor's voice. Files are 16 kHz mono PCM16, 1-3.6 s (median
    1.9 s); the defaults write 960 files, about 60 MB.
    """
    _check_sizes(actors, holdout_actors, seed)
    others = len(CREMA_D_SENTENCES) - 1
    if not 0 <= sentences_per_actor <= others:
        raise ValueError(f"sentences_per_actor must be in [0, {others}], got {sentences_per_actor}")
    if CREMA_D_FIRST_ACTOR + actors + holdout_actors - 1 > 9999:
        raise ValueError("CREMA-D actor ids have four digits: too many actors")

    def write(root: Path) -> None:
        train, holdout = crema_d_actors(seed, actors, holdout_actors)
        _record_corpus(
            root,
            [(actor, _crema_d_takes(actor.number, seed, sentences_per_actor)) for actor in train],
            [(actor, _crema_d_takes(actor.number, seed, sentences_per_actor)) for actor in holdout],
            seed,
            _CREMA_D_TAKE,
            _CREMA_D_STUDIO,
            "CREMA-D demo",
            progress,
        )
        write_text(root / "VideoDemographics.csv", _demographics_csv(train, seed))
        if holdout:
            write_text(
                root / HOLDOUT_FOLDER / "VideoDemographics.csv", _demographics_csv(holdout, seed)
            )

    return build_atomically(out_dir, force, write)


def crema_d_actors(seed: int, n_train: int, n_holdout: int) -> tuple[list[Actor], list[Actor]]:
    """The train actors (ids 1001..) and holdout actors (the next ids) of a seed.

    Each set is half male, half female (the odd one out drawn), in a shuffled order;
    every voice is distinct.
    """
    rng = np.random.default_rng([seed, _CREMA_D_CAST])
    sexes: list[str] = []
    for count in (n_train, n_holdout):
        balanced = ["male", "female"] * (count // 2)
        if count % 2:
            balanced.append(str(rng.choice(["male", "female"])))
        sexes += [balanced[i] for i in rng.permutation(count)]
    numbers = range(CREMA_D_FIRST_ACTOR, CREMA_D_FIRST_ACTOR + n_train + n_holdout)
    cast = _cast(rng, numbers, sexes, _CREMA_D_STUDIO)
    return cast[:n_train], cast[n_train:]


def _crema_d_takes(actor: int, seed: int, sentences_per_actor: int) -> list[_Take]:
    others = [code for code in CREMA_D_SENTENCES if code != _LEVELLED_SENTENCE]
    rng = np.random.default_rng([seed, _CREMA_D_SENTENCE_DRAW, actor])
    drawn = set(rng.choice(others, size=sentences_per_actor, replace=False).tolist())
    takes = []
    for sentence in [_LEVELLED_SENTENCE, *(code for code in others if code in drawn)]:
        for emotion_code, emotion in CREMA_D_EMOTIONS.items():
            levelled = sentence == _LEVELLED_SENTENCE and emotion != "neutral"
            for level in ("LO", "MD", "HI") if levelled else ("XX",):
                takes.append(
                    _Take(
                        f"AudioWAV/{actor:04d}_{sentence}_{emotion_code}_{level}.wav",
                        CREMA_D_SENTENCES[sentence],
                        emotion,
                        CREMA_D_LEVELS[level],
                        emotion_code,
                    )
                )
    return takes


def _demographics_csv(actors: Sequence[Actor], seed: int) -> str:
    rows = []
    races, shares = zip(*_CREMA_D_RACES, strict=True)
    for actor in actors:
        rng = np.random.default_rng([seed, _CREMA_D_DEMOGRAPHICS, actor.number])
        age = int(rng.integers(20, 75))
        race = str(rng.choice(races, p=shares))
        hispanic = rng.random() < _CREMA_D_HISPANIC_SHARE
        ethnicity = "Hispanic" if hispanic else "Not Hispanic"
        rows.append((actor.number, age, actor.sex.capitalize(), race, ethnicity))
    return csv_text(("ActorID", "Age", "Sex", "Race", "Ethnicity"), rows)


# ---------------------------------------------------------------- the shared engine


def _check_sizes(actors: int, holdout_actors: int, seed: int) -> None:
    if actors < 1 or holdout_actors < 0:
        raise ValueError(
            f"need at least one actor and no negative holdout, got actors={actors}, "
            f"holdout_actors={holdout_actors}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")


def _cast(
    rng: np.random.Generator, numbers: Sequence[int], sexes: Sequence[str], studio: _Studio
) -> list[Actor]:
    """One actor per number with the given sex; every (accent, variant, pitch, rate, range)
    differs, and each sex's shuffled variants are dealt in turn."""
    excluded = UNNATURAL_VARIANTS | WHISPER_VARIANTS
    pools = {
        sex: [variant for variant in variants if variant not in excluded]
        for sex, variants in variants_by_gender().items()
    }
    for sex in set(sexes):
        if not pools.get(sex):
            raise RuntimeError(f"no {sex} espeak-ng variants installed")
    dealt = {sex: [str(v) for v in rng.permutation(pool)] for sex, pool in pools.items()}
    accents = english_voices().accents
    taken: set[tuple[str, str, int, int, int]] = set()
    actors = []
    for position, (number, sex) in enumerate(zip(numbers, sexes, strict=True)):
        variant = dealt[sex][sexes[:position].count(sex) % len(dealt[sex])]
        while True:
            voice = (
                str(accents[rng.integers(len(accents))]),
                variant,
                int(rng.integers(32, 63)),
                int(rng.integers(135, 181)),
                int(rng.integers(30, 61)),
            )
            if voice not in taken:
                break
        taken.add(voice)
        level_db = float(rng.uniform(*studio.level_db))
        noise_db = level_db - float(rng.uniform(*studio.noise_below_speech_db))
        actors.append(Actor(number, sex, *voice, level_db, noise_db, float(rng.uniform(0.0, 2.0))))
    return actors


def _record_corpus(
    root: Path,
    train: list[tuple[Actor, list[_Take]]],
    holdout: list[tuple[Actor, list[_Take]]],
    seed: int,
    stream: int,
    studio: _Studio,
    description: str,
    progress: bool,
) -> None:
    """Record every take of `train` under `root` and of `holdout` under its holdout folder."""
    total = sum(len(takes) for _, takes in (*train, *holdout))
    espeak = Espeak()
    with tqdm(total=total, desc=description, unit="file", disable=not progress) as bar:
        _record(root, train, seed, stream, studio, espeak, bar.update)
        _record(root / HOLDOUT_FOLDER, holdout, seed, stream, studio, espeak, bar.update)
    if holdout:
        answers = [(take.path, take.label) for _, takes in holdout for take in takes]
        write_text(root / HOLDOUT_FOLDER / "answers.csv", csv_text(("path", "label"), answers))


def _record(
    root: Path,
    cast: list[tuple[Actor, list[_Take]]],
    seed: int,
    stream: int,
    studio: _Studio,
    espeak: Espeak,
    advance: Callable[[], object],
) -> None:
    for actor, takes in cast:
        espeak.reset()
        tone_rng = np.random.default_rng([seed, _ROOM_TONE, stream, actor.number])
        tone = room_tone(tone_rng, actor.noise_exponent, studio.sample_rate)
        for index, take in enumerate(takes):
            rng = np.random.default_rng([seed, stream, actor.number, index])
            clip = _perform(espeak, actor, take, tone, rng, studio)
            write_wav(root / take.path, clip, studio.sample_rate)
            advance()


def _perform(
    espeak: Espeak,
    actor: Actor,
    take: _Take,
    tone: np.ndarray,
    rng: np.random.Generator,
    studio: _Studio,
) -> np.ndarray:
    """One take said by `actor`, padded with silence, over the room `tone`.

    Returns float64 samples in [-1, 1] at `studio.sample_rate`.
    """
    prosody = EMOTION_PROSODY[take.emotion].at(take.intensity)
    pitch = int(np.clip(round(actor.pitch + prosody.pitch + rng.integers(-2, 3)), 0, 100))
    pitch_range = int(
        np.clip(round(actor.pitch_range * prosody.pitch_range * rng.uniform(0.92, 1.08)), 0, 100)
    )
    rate = int(np.clip(round(actor.rate * prosody.rate * rng.uniform(0.96, 1.04)), 80, 450))
    speech = espeak.speak(
        take.text + prosody.ending,
        voice=actor.accent,
        variant=actor.variant,
        rate=rate,
        pitch=pitch,
        pitch_range=pitch_range,
        seed=int(rng.integers(0, 2**31)),
        sample_rate=studio.sample_rate,
    )
    speech = trim_silence(speech.astype(np.float64), margin_samples=studio.sample_rate // 100)
    if not len(speech):
        raise RuntimeError(f"espeak-ng produced no sound for {take.text!r} with {actor}")
    speech = _tilt(speech, prosody.tilt, studio.sample_rate)
    level_db = actor.level_db + prosody.level_db + rng.normal(0.0, 0.7)
    speech = speech * (10 ** (level_db / 20) / speech_rms(speech))
    clip = pad_with_silence(speech, rng, studio.padding_seconds, studio.sample_rate)
    noise_db = actor.noise_db + rng.normal(0.0, 1.0)
    clip = add_room_tone(clip, tone, rng, noise_db)
    return soft_limit(clip)


def _tilt(speech: np.ndarray, amount: float, sample_rate: int) -> np.ndarray:
    """Brighten (`amount` > 0, like raised vocal effort) or darken (< 0) above ~1 kHz.

    amount 1 lifts the top of the spectrum by ~9.5 dB; -0.5 lowers it by ~6 dB.
    """
    amount = float(np.clip(amount, -0.9, 1.5))
    if amount == 0.0:
        return speech
    filtered = sosfilt(_tilt_filter("highpass" if amount > 0 else "lowpass", sample_rate), speech)
    if amount > 0:
        return speech + 2 * amount * filtered
    return (1 + amount) * speech - amount * filtered


@cache
def _tilt_filter(kind: str, sample_rate: int) -> np.ndarray:
    """First-order `kind` ("highpass" or "lowpass") at 1 kHz, as second-order sections."""
    return butter(1, _TILT_CORNER_HZ, btype=kind, fs=sample_rate, output="sos")
