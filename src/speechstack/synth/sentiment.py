"""A small, deterministic speech-sentiment corpus in English and Bengali, as a manifest.

Shaped like the Bengali speech-sentiment study's data: clips in per-speaker folders and
a CSV manifest, paths relative to the manifest's folder:

    <out>/clips/<speaker>/<nnn>.wav     16 kHz mono PCM16, one sentence each
    <out>/manifest.csv                  path,label,speaker,transcript,language
    <out>/demo_holdout/clips/<speaker>/<nnn>.wav, answers.csv (path,label)

Speakers alternate between English voices (ids en01, en02, ...; English accents) and
Bengali ones (bn01, ...; espeak-ng's `bn` voice reading Bengali script), each with its
own variant, pitch, rate, level and room noise. Every sentence is built from small
per-language templates and word lists ("the food was wonderful", "I really hated this
movie", "খাবারটা চমৎকার ছিল"), so its label, `positive` or `negative`, is decidable
from the words; labels are balanced within each speaker. Positive sentences are said a
little higher and faster, negative ones a little lower and slower, but by less than the
per-clip jitter: the words are the cue. Holdout speakers continue the numbering.

The holdout is shifted the way a real unseen-speaker test is (see
`speechstack.synth.shift`), so that a score on it says how a model copes with voices,
rooms and noises it never met; the training files are made exactly as without it.
Holdout speakers speak with variants no training speaker uses, every other one with
espeak-ng's Klatt synthesiser where train left one free, and each gets a strong voice
shift of their own (`shift.random_voice_shift`: vocal-tract warp, tilt and EQ, tremor,
sometimes breath). Most holdout clips carry a noise of a kind absent from training
(`shift.NOISE_KINDS`) at a moderate SNR, about half a reverberant room and about a
third a telephone or low-pass channel, as for the emotion holdouts
(`emotion.HOLDOUT_CONDITIONS`); the words stay intelligible.

Random choices come from `np.random.default_rng` streams keyed by the seed (the
holdout's on streams of its own) and libespeak-ng is reloaded before each speaker, so a
seed always gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechstack.synth.common import (
    UNNATURAL_VARIANTS,
    add_room_tone,
    build_atomically,
    csv_text,
    pad_with_silence,
    room_tone,
    speech_rms,
    trim_silence,
    write_text,
    write_wav,
)
from speechstack.synth.emotion import (
    KLATT_PREFIX,
    draw_recording,
    holdout_noise_bank,
    record_holdout_clip,
)
from speechstack.synth.espeak import SAMPLE_RATE, Espeak, english_voices
from speechstack.synth.shift import VoiceShift, random_voice_shift, shift_voice

HOLDOUT_FOLDER = "demo_holdout"
LABELS = ("negative", "positive")
LANGUAGES = ("en", "bn")
"""ISO 639-1 codes of the two languages, in the order speakers alternate."""

MANIFEST_COLUMNS = ("path", "label", "speaker", "transcript", "language")


@dataclass(frozen=True)
class _Lexicon:
    """Sentence templates shared by both labels, and the words their {slots} take per label.

    Only the slot words carry sentiment, so a sentence's words decide its label.
    """

    nouns: tuple[str, ...]
    templates: tuple[str, ...]
    words: dict[str, dict[str, tuple[str, ...]]]  # label -> slot -> choices


_LEXICONS = {
    "en": _Lexicon(
        nouns=(
            "food",
            "movie",
            "hotel",
            "book",
            "service",
            "concert",
            "phone",
            "trip",
            "class",
            "game",
            "coffee",
            "song",
        ),
        templates=(
            "the {noun} was {adjective}",
            "I found the {noun} {adjective}",
            "I really {verb} this {noun}",
            "this {noun} made me so {feeling}",
            "I would {recommendation} recommend this {noun}",
        ),
        words={
            "positive": {
                "adjective": (
                    "wonderful",
                    "excellent",
                    "amazing",
                    "fantastic",
                    "lovely",
                    "brilliant",
                    "delightful",
                    "great",
                ),
                "verb": ("loved", "enjoyed", "liked", "adored"),
                "feeling": ("happy", "glad", "cheerful", "excited"),
                "recommendation": ("definitely", "happily", "gladly"),
            },
            "negative": {
                "adjective": (
                    "terrible",
                    "awful",
                    "horrible",
                    "boring",
                    "disappointing",
                    "dreadful",
                    "useless",
                    "disgusting",
                ),
                "verb": ("hated", "disliked", "regretted", "despised"),
                "feeling": ("angry", "upset", "miserable", "annoyed"),
                "recommendation": ("never", "not"),
            },
        },
    ),
    "bn": _Lexicon(
        nouns=(
            "খাবার",  # food
            "সিনেমা",  # movie
            "হোটেল",  # hotel
            "বই",  # book
            "সেবা",  # service
            "গান",  # song
            "ফোন",  # phone
            "ভ্রমণ",  # trip
            "ক্লাস",  # class
            "খেলা",  # game
            "রেস্টুরেন্ট",  # restaurant
            "নাটক",  # play, drama
        ),
        templates=(
            "{noun}টা {adjective} ছিল",  # the X was ADJ
            "কী {adjective} {noun}",  # what a ADJ X
            "আমার এই {noun}টা {liking}",  # I (did not) like this X
            "{noun}টা নিয়ে আমি খুব {feeling}",  # I am very FEELING about the X
            "আমি এই {noun}টা {recommendation}",  # I will (not) recommend this X ...
        ),
        words={
            "positive": {
                # wonderful, extraordinary, great, beautiful, good, fun
                "adjective": ("চমৎকার", "অসাধারণ", "দারুণ", "সুন্দর", "ভালো", "মজার"),
                # I liked it a lot / I liked it very much
                "liking": ("খুব ভালো লেগেছে", "দারুণ লেগেছে"),
                # happy, delighted, satisfied
                "feeling": ("খুশি", "আনন্দিত", "সন্তুষ্ট"),
                # to everyone / definitely ... will recommend
                "recommendation": ("সবাইকে সুপারিশ করব", "অবশ্যই সুপারিশ করব"),
            },
            "negative": {
                # bad, disgusting, rubbish, annoying, terrible, disappointing
                "adjective": ("খারাপ", "জঘন্য", "বাজে", "বিরক্তিকর", "ভয়ানক", "হতাশাজনক"),
                # I did not like it at all / not even a little
                "liking": ("একদম ভালো লাগেনি", "একটুও ভালো লাগেনি"),
                # disappointed, annoyed, dissatisfied
                "feeling": ("হতাশ", "বিরক্ত", "অসন্তুষ্ট"),
                # to no one / never ... will not recommend
                "recommendation": ("কাউকে সুপারিশ করব না", "কখনো সুপারিশ করব না"),
            },
        },
    ),
}

# label -> (espeak pitch offset, rate multiplier, pitch-range multiplier): a mild tendency,
# smaller than the per-clip jitter in `_speak_sentence`.
_LABEL_PROSODY = {"positive": (4, 1.05, 1.1), "negative": (-4, 0.95, 0.9)}

# Independent random streams, keyed as default_rng([seed, stream, ...]).
_SPEAKERS, _HOLDOUT_SPEAKERS, _PLAN, _CLIP, _ROOM_TONE = 1, 2, 3, 4, 5
_HOLDOUT_VOICE, _HOLDOUT_RECORDING, _HOLDOUT_NOISE = 6, 7, 8
_HOLDOUT_MAX_PEAK = 0.97  # a holdout mixture is turned down under this before its channel
_MAX_CLIPS_PER_SPEAKER = 1000  # file names have three digits


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a language, an espeak-ng voice and their microphone."""

    id: str  # language code + two or more digits, e.g. "en01", "bn07"
    language: str  # "en" or "bn"
    voice: str  # espeak-ng voice name: an English accent, or "bn"
    variant: str
    pitch: int  # espeak 0..100
    rate: int  # words per minute
    pitch_range: int  # espeak 0..100
    level_db: float  # loudness offset of their recordings, dB
    noise_exponent: float  # recording noise power falls as 1/f**noise_exponent
    shift: VoiceShift | None = None  # holdout speakers only: see `shift.shift_voice`


@dataclass(frozen=True)
class _Clip:
    path: str  # relative to the corpus root: clips/<speaker>/<nnn>.wav
    label: str
    transcript: str


def generate_sentiment(
    out_dir: Path,
    *,
    speakers: int = 24,
    holdout_speakers: int = 4,
    clips_per_speaker: int = 24,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic English/Bengali speech-sentiment corpus to `out_dir`; return it.

    speakers: speakers in `out_dir/clips/` and `manifest.csv`, alternating English and
        Bengali (an odd count has one more English speaker).
    holdout_speakers: further speakers, alternating the same way, in
        `out_dir/demo_holdout/clips/` with `answers.csv` (`path,label`, paths relative to
        demo_holdout/); 0 writes no holdout. Their voices, rooms, noises and channels
        are shifted from train (see the module notes).
    clips_per_speaker: sentences per speaker (>= 2), half positive and half negative (an
        odd count gives every other speaker the extra positive one).
    force: replace an existing non-empty `out_dir` (only once the new one is complete).

    Clips are 16 kHz mono PCM16, 1.2-4.7 s (median 2.5 s): the sentence with 0.15-0.5 s
    of room noise either side. The defaults write 672 clips, about 55 MB.
    """
    if speakers < 1 or holdout_speakers < 0:
        raise ValueError(
            f"need at least one speaker and no negative holdout, got speakers={speakers}, "
            f"holdout_speakers={holdout_speakers}"
        )
    if not 2 <= clips_per_speaker <= _MAX_CLIPS_PER_SPEAKER:
        raise ValueError(
            f"clips_per_speaker must be in [2, {_MAX_CLIPS_PER_SPEAKER}] (both labels per "
            f"speaker), got {clips_per_speaker}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")

    def write(root: Path) -> None:
        _write_corpus(root, speakers, holdout_speakers, clips_per_speaker, seed, progress)

    return build_atomically(out_dir, force, write)


def make_speakers(seed: int, n_train: int, n_holdout: int) -> tuple[list[Speaker], list[Speaker]]:
    """The train and holdout speakers of a seed: languages alternate (en first) within each
    set, ids count on across both sets, and no two speakers share a voice.

    Holdout speakers use only variants no train speaker uses (`holdout_variants`),
    alternating between free Klatt variants and the other free ones, and each carries a
    strong `VoiceShift`. The train speakers do not depend on `n_holdout`.
    """
    languages = [LANGUAGES[i % 2] for i in range(n_train)]
    holdout_languages = [LANGUAGES[i % 2] for i in range(n_holdout)]
    taken: set[tuple[str, str, int, int, int]] = set()
    train = _sample_speakers(
        np.random.default_rng([seed, _SPEAKERS]), languages, {}, taken, [_natural_variants()]
    )
    counts = {language: languages.count(language) for language in LANGUAGES}
    holdout = _sample_speakers(
        np.random.default_rng([seed, _HOLDOUT_SPEAKERS]),
        holdout_languages,
        counts,
        taken,
        [pool for pool in holdout_variants(train) if pool] or [_natural_variants()],
    )
    holdout = [
        replace(
            speaker,
            shift=random_voice_shift(
                np.random.default_rng([seed, _HOLDOUT_VOICE, *_speaker_key(speaker)])
            ),
        )
        for speaker in holdout
    ]
    return train, holdout


def _natural_variants() -> list[str]:
    return [v for v in english_voices().variants if v not in UNNATURAL_VARIANTS]


def holdout_variants(train: Sequence[Speaker]) -> tuple[list[str], list[str]]:
    """(Klatt variants, other natural variants) that no `train` speaker uses.

    Either may be empty for a large train set; when both are, holdout speakers fall back
    to every natural variant (then only their voice shift sets them apart).
    """
    used = {speaker.variant for speaker in train}
    free = [v for v in _natural_variants() if v not in used]
    return [v for v in free if v.startswith(KLATT_PREFIX)], [
        v for v in free if not v.startswith(KLATT_PREFIX)
    ]


def _sample_speakers(
    rng: np.random.Generator,
    languages: Sequence[str],
    numbered: dict[str, int],
    taken: set[tuple[str, str, int, int, int]],
    variant_pools: Sequence[Sequence[str]],
) -> list[Speaker]:
    """One speaker per entry of `languages`, numbered on from `numbered[language]`.

    Speaker i draws its variant from `variant_pools[i % len(variant_pools)]`.
    """
    accents = english_voices().accents
    numbered = dict(numbered)
    chosen = []
    for language in languages:
        numbered[language] = numbered.get(language, 0) + 1
        variants = variant_pools[len(chosen) % len(variant_pools)]
        while True:
            voice = (
                str(accents[rng.integers(len(accents))]) if language == "en" else "bn",
                str(variants[rng.integers(len(variants))]),
                int(rng.integers(30, 71)),
                int(rng.integers(130, 186)),
                int(rng.integers(25, 86)),
            )
            if voice not in taken:
                break
        taken.add(voice)
        level_db = float(rng.normal(0.0, 3.0))
        noise_exponent = float(rng.uniform(0.0, 2.0))
        speaker_id = f"{language}{numbered[language]:02d}"
        chosen.append(Speaker(speaker_id, language, *voice, level_db, noise_exponent))
    return chosen


def _plan_clips(seed: int, speaker: Speaker, index: int, count: int) -> list[_Clip]:
    """The `count` sentences `speaker` (the `index`-th of the corpus) says, in order.

    Labels are balanced (the odd one out positive for even `index`), in a shuffled
    order; no sentence repeats within a speaker while fresh ones are easy to find.
    """
    rng = np.random.default_rng([seed, _PLAN, *_speaker_key(speaker)])
    labels = ["positive", "negative"] * (count // 2)
    if count % 2:
        labels.append("positive" if index % 2 == 0 else "negative")
    said: set[str] = set()
    clips = []
    for number, position in enumerate(rng.permutation(count)):
        label = labels[position]
        for _ in range(20):
            sentence = _compose(rng, _LEXICONS[speaker.language], label)
            if sentence not in said:
                break
        said.add(sentence)
        clips.append(_Clip(f"clips/{speaker.id}/{number:03d}.wav", label, sentence))
    return clips


def _speaker_key(speaker: Speaker) -> tuple[int, int]:
    """(language index, number) of a speaker: what their random streams are keyed by."""
    return LANGUAGES.index(speaker.language), int(speaker.id[len(speaker.language) :])


def _compose(rng: np.random.Generator, lexicon: _Lexicon, label: str) -> str:
    template = lexicon.templates[rng.integers(len(lexicon.templates))]
    words = lexicon.words[label]
    fill = {slot: choices[rng.integers(len(choices))] for slot, choices in sorted(words.items())}
    fill["noun"] = lexicon.nouns[rng.integers(len(lexicon.nouns))]
    return template.format(**fill)


def _write_corpus(
    root: Path, n_train: int, n_holdout: int, clips_per_speaker: int, seed: int, progress: bool
) -> None:
    train, holdout = make_speakers(seed, n_train, n_holdout)
    plans = [
        (speaker, _plan_clips(seed, speaker, index, clips_per_speaker))
        for index, speaker in enumerate([*train, *holdout])
    ]
    espeak = Espeak()
    with tqdm(
        total=len(plans) * clips_per_speaker,
        desc="sentiment demo",
        unit="file",
        disable=not progress,
    ) as bar:
        for speaker, clips in plans[:n_train]:
            _record(root, speaker, clips, seed, espeak, bar.update)
        if n_holdout:
            klatt, others = holdout_variants(train)
            bank = holdout_noise_bank(
                seed, _HOLDOUT_NOISE, espeak, klatt + others or _natural_variants(), SAMPLE_RATE
            )
            for speaker, clips in plans[n_train:]:
                _record(root / HOLDOUT_FOLDER, speaker, clips, seed, espeak, bar.update, bank)
    rows = [
        (clip.path, clip.label, speaker.id, clip.transcript, speaker.language)
        for speaker, clips in plans[:n_train]
        for clip in clips
    ]
    write_text(root / "manifest.csv", csv_text(MANIFEST_COLUMNS, rows))
    if n_holdout:
        answers = [(clip.path, clip.label) for _, clips in plans[n_train:] for clip in clips]
        write_text(root / HOLDOUT_FOLDER / "answers.csv", csv_text(("path", "label"), answers))


def _record(
    root: Path,
    speaker: Speaker,
    clips: list[_Clip],
    seed: int,
    espeak: Espeak,
    advance: Callable[[], object],
    bank: dict[str, np.ndarray] | None = None,
) -> None:
    """Write `speaker`'s clips; with a noise `bank`, each recorded as
    `emotion.draw_recording` draws from the stream `holdout_recording_rng` gives it."""
    espeak.reset()
    tone_rng = np.random.default_rng([seed, _ROOM_TONE, *_speaker_key(speaker)])
    tone = room_tone(tone_rng, speaker.noise_exponent, SAMPLE_RATE)
    for number, clip in enumerate(clips):
        rng = np.random.default_rng([seed, _CLIP, *_speaker_key(speaker), number])
        audio = _speak_sentence(espeak, speaker, clip, tone, rng)
        if bank is not None:
            recording_rng = holdout_recording_rng(seed, speaker, number)
            recording = draw_recording(recording_rng, sorted(bank))
            audio = record_holdout_clip(
                audio, recording, bank, recording_rng, SAMPLE_RATE, max_peak=_HOLDOUT_MAX_PEAK
            )
        write_wav(root / clip.path, audio)
        advance()


def holdout_recording_rng(seed: int, speaker: Speaker, number: int) -> np.random.Generator:
    """The stream a holdout clip's recording conditions are drawn and applied from."""
    return np.random.default_rng([seed, _HOLDOUT_RECORDING, *_speaker_key(speaker), number])


def _speak_sentence(
    espeak: Espeak, speaker: Speaker, clip: _Clip, tone: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """The sentence in the speaker's voice (shifted, if they have a `shift`) with the
    label's mild prosody, padded with silence, over their room `tone` (`room_tone`)
    `rng`-chosen 20-40 dB below the speech."""
    pitch_offset, rate_factor, range_factor = _LABEL_PROSODY[clip.label]
    pitch = int(np.clip(speaker.pitch + pitch_offset + rng.integers(-6, 7), 0, 100))
    rate = int(np.clip(round(speaker.rate * rate_factor * rng.uniform(0.92, 1.08)), 80, 450))
    pitch_range = int(
        np.clip(round(speaker.pitch_range * range_factor * rng.uniform(0.85, 1.15)), 0, 100)
    )
    speech = trim_silence(
        espeak.speak(
            clip.transcript,
            voice=speaker.voice,
            variant=speaker.variant,
            rate=rate,
            pitch=pitch,
            pitch_range=pitch_range,
            seed=int(rng.integers(0, 2**31)),
        ).astype(np.float64)
    )
    if speaker.shift is not None and len(speech):
        speech = shift_voice(speech, speaker.shift, rng, SAMPLE_RATE)
    peak = float(np.max(np.abs(speech))) if len(speech) else 0.0
    if peak == 0.0:
        raise RuntimeError(f"espeak-ng produced no sound for {clip.transcript!r} with {speaker}")
    target_db = min(rng.uniform(-24.0, -3.0) + speaker.level_db, -1.0)
    speech = speech * (10 ** (target_db / 20) / peak)
    padded = pad_with_silence(speech, rng, (0.15, 0.5), SAMPLE_RATE)
    speech_db = 20 * np.log10(speech_rms(speech))
    noise_db = speech_db - rng.uniform(20.0, 40.0)
    return add_room_tone(padded, tone, rng, noise_db)
