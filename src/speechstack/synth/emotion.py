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
weaker one (CREMA-D LO) down; every take adds a little jitter.

The holdout is shifted the way a real unseen-speaker test is (see
`speechstack.synth.shift`), so that a score on it says how a model copes with people,
rooms and noises it never met; the training files are made exactly as without it:

- Holdout actors are made differently: male ones speak with espeak-ng's Klatt formant
  synthesiser (the `klatt*` variants, never a training actor's), female ones with
  gendered variants no training actor uses (Klatt, raised, once those run out). Each
  also gets a voice shift of their own (`shift.random_voice_shift`: vocal-tract warp,
  tilt and EQ, tremor, sometimes breath). The warp moves that actor's pitch and
  formants by one constant factor, like a different person (its change of tempo is
  taken out of their speaking rate); nothing is randomised per clip beyond the usual
  take jitter, so the emotion's pitch, tempo and level cues stay.
- Most holdout clips carry a noise of a kind absent from training (`shift.NOISE_KINDS`:
  a crowd of other voices, music, traffic, keyboard, blue and violet noise, wind) at
  a moderate SNR, about half are heard in a reverberant room and about a third through
  a telephone or low-pass channel (`HOLDOUT_CONDITIONS`). Noise is mixed at an SNR
  relative to the clip's own speech, so a shout stays louder than a whisper.

Random choices come from `np.random.default_rng` streams keyed by the seed (the
holdout's on streams of its own) and libespeak-ng is reloaded before each actor, so a
seed always gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache, partial
from pathlib import Path

import numpy as np
from scipy.signal import butter, firwin, resample_poly, sosfilt
from tqdm import tqdm

from speechstack.synth.common import (
    UNNATURAL_VARIANTS,
    WHISPER_VARIANTS,
    add_room_tone,
    build_atomically,
    csv_text,
    pad_with_silence,
    random_window,
    room_tone,
    soft_limit,
    speech_rms,
    trim_silence,
    write_text,
    write_wav,
)
from speechstack.synth.espeak import (
    ESPEAK_SAMPLE_RATE,
    Espeak,
    english_voices,
    variants_by_gender,
)
from speechstack.synth.shift import (
    NOISE_KINDS,
    Channel,
    Room,
    VoiceShift,
    apply_channel,
    crowd_babble,
    mix_at_snr,
    noise_bank,
    random_channel,
    random_room,
    random_voice_shift,
    reverberate,
    shift_voice,
)

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
    shift: VoiceShift | None = None  # holdout actors only: see `shift.shift_voice`


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
_HOLDOUT_CAST, _HOLDOUT_CONDITIONS, _HOLDOUT_NOISE = 8, 9, 10

_TILT_CORNER_HZ = 1000.0
_CREMA_D_RACES = (("Caucasian", 0.6), ("African American", 0.25), ("Asian", 0.1), ("Unknown", 0.05))
_CREMA_D_HISPANIC_SHARE = 0.1

KLATT_PREFIX = "klatt"
"""espeak-ng variants klatt, klatt2, ...: the Klatt formant synthesiser, holdout only."""

# Holdout voice shifts: a warp factor away from 1 drawn from this range (either way), or,
# for a female actor made from a (male-sounding) Klatt variant, upwards from the second.
_HOLDOUT_WARP = (1.04, 1.18)
_HOLDOUT_RAISED_WARP = (1.25, 1.35)
_HOLDOUT_BANK_SECONDS = 8.0


# ---------------------------------------------------------------- holdout conditions


@dataclass(frozen=True)
class HoldoutConditions:
    """How the holdout's recording of a clip differs from a training one."""

    noisy_share: float  # clips mixed with one noise of `noise_bank`
    snr_db: tuple[float, float]  # their speech-to-noise ratio, dB (uniform)
    reverb_share: float  # clips heard in a `shift.random_room`
    rt60_s: tuple[float, float]  # that room's reverberation time
    direct_to_reverb_db: tuple[float, float]
    channel_share: float  # clips through a `shift.random_channel`


HOLDOUT_CONDITIONS = HoldoutConditions(
    noisy_share=0.8,
    snr_db=(5.0, 25.0),
    reverb_share=0.5,
    rt60_s=(0.2, 0.7),
    direct_to_reverb_db=(0.0, 10.0),
    channel_share=0.35,
)
"""What the emotion and sentiment holdouts use: harder than training, still decidable."""


@dataclass(frozen=True)
class Recording:
    """The conditions drawn for one holdout clip: see `record_holdout_clip`."""

    room: Room | None
    noise_kind: str | None  # a key of the noise bank
    snr_db: float | None  # of that noise, relative to the clip's active speech
    channel: Channel | None


def draw_recording(
    rng: np.random.Generator,
    noise_kinds: Sequence[str],
    conditions: HoldoutConditions = HOLDOUT_CONDITIONS,
) -> Recording:
    """One clip's room, noise and channel, each present with its share in `conditions`."""
    noisy = rng.random() < conditions.noisy_share
    kind = str(noise_kinds[int(rng.integers(len(noise_kinds)))]) if noisy else None
    snr = float(rng.uniform(*conditions.snr_db)) if noisy else None
    room = (
        random_room(rng, conditions.rt60_s, conditions.direct_to_reverb_db)
        if rng.random() < conditions.reverb_share
        else None
    )
    channel = random_channel(rng) if rng.random() < conditions.channel_share else None
    return Recording(room=room, noise_kind=kind, snr_db=snr, channel=channel)


def record_holdout_clip(
    clip: np.ndarray,
    recording: Recording,
    bank: dict[str, np.ndarray],
    rng: np.random.Generator,
    sample_rate: int,
    max_peak: float | None = None,
) -> np.ndarray:
    """`clip` (float, [-1, 1], `sample_rate` Hz) recorded as `recording` says.

    The room first (cut to the clip's length), then a random window of the noise at
    its SNR over the reverberant speech, then the channel. With `max_peak`, a mixture
    louder than that is turned down before the channel, so only a channel's own
    clipping distorts.
    """
    if recording.room is not None:
        clip = reverberate(clip, recording.room, rng, sample_rate)
    if recording.noise_kind is not None and recording.snr_db is not None:
        noise = random_window(bank[recording.noise_kind], len(clip), rng)
        clip = mix_at_snr(clip, noise, recording.snr_db)
    if max_peak is not None:
        peak = float(np.max(np.abs(clip))) if len(clip) else 0.0
        if peak > max_peak:
            clip = clip * (max_peak / peak)
    if recording.channel is not None:
        clip = apply_channel(clip, recording.channel, sample_rate)
    return clip


CROWD_VOCABULARY = (
    "she", "he", "your", "our", "has", "had", "were", "been", "should", "might",
    "hello", "picture", "garage", "market", "holiday", "paper", "river", "orange",
    "lemon", "button", "pencil", "basket", "blanket", "candle", "butter", "pocket",
    "rabbit", "salad", "sugar", "tennis", "violin", "wallet", "yellow", "purple",
    "window", "table", "during", "between", "around", "usually", "probably", "already",
    "enough", "number", "street", "garden", "kitchen", "letter",
)  # fmt: skip
"""Words of the holdouts' crowd noise: none carries emotion or sentiment, none is in a
corpus sentence."""


def holdout_noise_bank(
    seed: int,
    stream: int,
    espeak: Espeak,
    crowd_variants: Sequence[str],
    sample_rate: int,
    seconds: float = _HOLDOUT_BANK_SECONDS,
) -> dict[str, np.ndarray]:
    """Unit-RMS noises of every `shift.NOISE_KINDS`, `seconds` long at `sample_rate` Hz.

    The crowd speaks with `crowd_variants` (holdout-only voices) in English accents;
    the bank's random stream is keyed by `seed` and the corpus's `stream`.
    """
    crowd = partial(
        crowd_babble,
        espeak=espeak,
        accents=english_voices().accents,
        variants=list(crowd_variants),
        vocabulary=CROWD_VOCABULARY,
    )
    return noise_bank(
        np.random.default_rng([seed, _HOLDOUT_NOISE, stream]),
        round(seconds * sample_rate),
        sample_rate,
        NOISE_KINDS,
        crowd=crowd,
    )


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
        `answers.csv` (`path,label`, label = emotion name); 0 writes no holdout. Their
        voices, rooms, noises and channels are shifted from train (see the module notes).
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
        train, holdout = ravdess_actors(seed, actors, holdout_actors)
        _record_corpus(
            root,
            [(actor, _ravdess_takes(actor.number)) for actor in train],
            [(actor, _ravdess_takes(actor.number)) for actor in holdout],
            seed,
            _RAVDESS_TAKE,
            _RAVDESS_STUDIO,
            "RAVDESS demo",
            progress,
        )

    return build_atomically(out_dir, force, write)


def ravdess_actors(seed: int, n_train: int, n_holdout: int) -> tuple[list[Actor], list[Actor]]:
    """The train actors (1..n_train) and holdout actors (the next numbers) of a seed.

    Odd numbers are male, even female, every voice distinct. Train variants are dealt
    from a shuffled list per gender, so no two train actors share one until a gender's
    list is used up; holdout actors are made differently (see `_cast_holdout`). The
    train actors do not depend on `n_holdout`.
    """
    numbers = range(1, n_train + n_holdout + 1)
    sexes = ["male" if number % 2 else "female" for number in numbers]
    train = _cast(
        np.random.default_rng([seed, _RAVDESS_CAST]),
        numbers[:n_train],
        sexes[:n_train],
        _RAVDESS_STUDIO,
    )
    holdout = _cast_holdout(
        np.random.default_rng([seed, _HOLDOUT_CAST, _RAVDESS_CAST]),
        numbers[n_train:],
        sexes[n_train:],
        _RAVDESS_STUDIO,
        train,
    )
    return train, holdout


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
        3-letter emotion code); 0 writes no holdout. Their voices, rooms, noises and
        channels are shifted from train (see the module notes).
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
    every voice is distinct. Holdout actors are made differently (see `_cast_holdout`).
    """
    rng = np.random.default_rng([seed, _CREMA_D_CAST])
    sexes: list[str] = []
    for count in (n_train, n_holdout):
        balanced = ["male", "female"] * (count // 2)
        if count % 2:
            balanced.append(str(rng.choice(["male", "female"])))
        sexes += [balanced[i] for i in rng.permutation(count)]
    numbers = range(CREMA_D_FIRST_ACTOR, CREMA_D_FIRST_ACTOR + n_train + n_holdout)
    train = _cast(rng, numbers[:n_train], sexes[:n_train], _CREMA_D_STUDIO)
    holdout = _cast_holdout(
        np.random.default_rng([seed, _HOLDOUT_CAST, _CREMA_D_CAST]),
        numbers[n_train:],
        sexes[n_train:],
        _CREMA_D_STUDIO,
        train,
    )
    return train, holdout


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


def _gendered_pools() -> dict[str, list[str]]:
    """The natural, voiced variants that declare a gender: {"male": [...], "female": [...]}."""
    excluded = UNNATURAL_VARIANTS | WHISPER_VARIANTS
    return {
        sex: [variant for variant in variants if variant not in excluded]
        for sex, variants in variants_by_gender().items()
    }


def klatt_variants() -> list[str]:
    """The installed Klatt variants (`KLATT_PREFIX`); no training actor speaks with one."""
    variants = [v for v in english_voices().variants if v.startswith(KLATT_PREFIX)]
    if not variants:
        raise RuntimeError("no espeak-ng Klatt variants (klatt, klatt2, ...) installed")
    return variants


def holdout_variants(train: Sequence[Actor]) -> tuple[list[str], list[str]]:
    """(Klatt variants, female variants no `train` actor uses): the holdout's voices."""
    used = {actor.variant for actor in train}
    return klatt_variants(), [v for v in _gendered_pools()["female"] if v not in used]


def _cast_holdout(
    rng: np.random.Generator,
    numbers: Sequence[int],
    sexes: Sequence[str],
    studio: _Studio,
    train: Sequence[Actor],
) -> list[Actor]:
    """Unseen actors made unlike any of `train`, one per number with the given sex.

    Male actors speak with Klatt variants, female ones with the female variants no
    train actor uses (or, once none is left, with a Klatt variant warped up to a
    female register), each list shuffled and dealt in turn. Every actor gets their own
    `VoiceShift`: a constant warp of pitch and formants by 1.04-1.18 either way
    (1.25-1.35 up for a raised Klatt voice), timbre and tremor; no variant is one of
    `train`'s. The warp's change of tempo is taken out of the actor's espeak rate, so
    they speak as fast as train actors do.
    """
    klatt, female = holdout_variants(train)
    dealt = {"klatt": [str(v) for v in rng.permutation(klatt)]}
    dealt["female"] = [str(v) for v in rng.permutation(female)] if female else []
    accents = english_voices().accents
    taken = {(a.accent, a.variant, a.pitch, a.rate, a.pitch_range) for a in train}
    counts = {"klatt": 0, "female": 0}
    actors = []
    for number, sex in zip(numbers, sexes, strict=True):
        pool = "female" if sex == "female" and dealt["female"] else "klatt"
        variant = dealt[pool][counts[pool] % len(dealt[pool])]
        counts[pool] += 1
        raised = sex == "female" and pool == "klatt"
        shift = random_voice_shift(rng, _HOLDOUT_RAISED_WARP if raised else _HOLDOUT_WARP)
        if raised and shift.warp < 1.0:
            shift = replace(shift, warp=1.0 / shift.warp)
        while True:
            voice = (
                str(accents[rng.integers(len(accents))]),
                variant,
                int(rng.integers(32, 63)),
                # The warp speeds speech up by its factor: ask espeak for the rest.
                round(int(rng.integers(135, 181)) / shift.warp),
                int(rng.integers(30, 61)),
            )
            if voice not in taken:
                break
        taken.add(voice)
        level_db = float(rng.uniform(*studio.level_db))
        noise_db = level_db - float(rng.uniform(*studio.noise_below_speech_db))
        noise_exponent = float(rng.uniform(0.0, 2.0))
        actors.append(Actor(number, sex, *voice, level_db, noise_db, noise_exponent, shift))
    return actors


def _cast(
    rng: np.random.Generator, numbers: Sequence[int], sexes: Sequence[str], studio: _Studio
) -> list[Actor]:
    """One actor per number with the given sex; every (accent, variant, pitch, rate, range)
    differs, and each sex's shuffled variants are dealt in turn."""
    pools = _gendered_pools()
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
    """Record every take of `train` under `root`, then every take of `holdout`, shifted
    (see the module notes), under its holdout folder."""
    total = sum(len(takes) for _, takes in (*train, *holdout))
    espeak = Espeak()
    with tqdm(total=total, desc=description, unit="file", disable=not progress) as bar:
        _record(root, train, seed, stream, studio, espeak, bar.update)
        if holdout:
            klatt, female = holdout_variants([actor for actor, _ in train])
            bank = holdout_noise_bank(seed, stream, espeak, klatt + female, studio.sample_rate)
            _record(root / HOLDOUT_FOLDER, holdout, seed, stream, studio, espeak, bar.update, bank)
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
    bank: dict[str, np.ndarray] | None = None,
) -> None:
    """Write every take of `cast`; with a noise `bank`, each recorded as `draw_recording`
    draws from the stream `holdout_recording_rng` gives it."""
    for actor, takes in cast:
        espeak.reset()
        tone_rng = np.random.default_rng([seed, _ROOM_TONE, stream, actor.number])
        tone = room_tone(tone_rng, actor.noise_exponent, studio.sample_rate)
        for index, take in enumerate(takes):
            rng = np.random.default_rng([seed, stream, actor.number, index])
            clip = _perform(espeak, actor, take, tone, rng, studio)
            if bank is not None:
                recording_rng = holdout_recording_rng(seed, stream, actor.number, index)
                recording = draw_recording(recording_rng, sorted(bank))
                clip = record_holdout_clip(clip, recording, bank, recording_rng, studio.sample_rate)
            write_wav(root / take.path, soft_limit(clip), studio.sample_rate)
            advance()


def holdout_recording_rng(seed: int, stream: int, actor: int, take: int) -> np.random.Generator:
    """The stream a holdout take's recording conditions are drawn and applied from."""
    return np.random.default_rng([seed, _HOLDOUT_CONDITIONS, stream, actor, take])


def _perform(
    espeak: Espeak,
    actor: Actor,
    take: _Take,
    tone: np.ndarray,
    rng: np.random.Generator,
    studio: _Studio,
) -> np.ndarray:
    """One take said by `actor` (in their shifted voice, if they have a `shift`), padded
    with silence, over the room `tone`.

    Returns float64 samples at `studio.sample_rate`, not yet limited: `soft_limit` keeps
    them in [-1, 1].
    """
    prosody = EMOTION_PROSODY[take.emotion].at(take.intensity)
    pitch = int(np.clip(round(actor.pitch + prosody.pitch + rng.integers(-2, 3)), 0, 100))
    pitch_range = int(
        np.clip(round(actor.pitch_range * prosody.pitch_range * rng.uniform(0.92, 1.08)), 0, 100)
    )
    rate = int(np.clip(round(actor.rate * prosody.rate * rng.uniform(0.96, 1.04)), 80, 450))
    # A shifted voice is made at espeak's own rate when that is lower (fewer samples to
    # shift) and resampled after.
    voice_rate = studio.sample_rate
    if actor.shift is not None:
        voice_rate = min(voice_rate, ESPEAK_SAMPLE_RATE)
    speech = espeak.speak(
        take.text + prosody.ending,
        voice=actor.accent,
        variant=actor.variant,
        rate=rate,
        pitch=pitch,
        pitch_range=pitch_range,
        seed=int(rng.integers(0, 2**31)),
        sample_rate=voice_rate,
    )
    speech = trim_silence(speech.astype(np.float64), margin_samples=voice_rate // 100)
    if not len(speech):
        raise RuntimeError(f"espeak-ng produced no sound for {take.text!r} with {actor}")
    if actor.shift is not None:
        speech = shift_voice(speech, actor.shift, rng, voice_rate)
        speech = resample(speech, voice_rate, studio.sample_rate)
    speech = _tilt(speech, prosody.tilt, studio.sample_rate)
    level_db = actor.level_db + prosody.level_db + rng.normal(0.0, 0.7)
    speech = speech * (10 ** (level_db / 20) / speech_rms(speech))
    clip = pad_with_silence(speech, rng, studio.padding_seconds, studio.sample_rate)
    noise_db = actor.noise_db + rng.normal(0.0, 1.0)
    return add_room_tone(clip, tone, rng, noise_db)


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


def resample(waveform: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """`waveform` at `from_hz` resampled to `to_hz` (polyphase, Kaiser-windowed FIR)."""
    divisor = np.gcd(from_hz, to_hz)
    up, down = to_hz // divisor, from_hz // divisor
    if up == down:
        return np.asarray(waveform, dtype=np.float64).copy()
    return resample_poly(waveform, up, down, window=_resampling_filter(int(up), int(down)))


@cache
def _resampling_filter(up: int, down: int) -> np.ndarray:
    """The low-pass FIR `resample_poly(x, up, down)` designs by default, designed once."""
    longest = max(up, down)
    return firwin(2 * 10 * longest + 1, 1 / longest, window=("kaiser", 5.0))
