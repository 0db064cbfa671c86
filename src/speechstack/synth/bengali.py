"""A small, deterministic Bengali speech-recognition corpus in the Bengali.AI layout.

Written in the layout of Kaggle's "Bengali.AI Speech Recognition" (2023), so the
`bengali_ai` task, the Bengali text normalisation and vocabulary, the transcriber
families and the submission writer can run on CPU without the download:

    <out>/train.csv               id, sentence, split (train | valid), sorted by id
    <out>/train_mp3s/<id>.mp3     16 kHz mono MP3, one sentence each
    <out>/test_mp3s/<id>.mp3
    <out>/sample_submission.csv   id, sentence: the test ids (sorted), each with the
                                  same placeholder sentence (`PLACEHOLDER`)
    <out>/demo_solution.csv       id, sentence: the true test sentences, in the same order

`demo_solution.csv` is our own addition (the competition keeps its answers), so a
submission made on the demo can be scored. Ids are 12 lower-case hex digits, as the
competition's are, drawn from the seed. The corpus names no speakers, as the real one
does not; `make_speakers` says who read what.

Text is Unicode NFC, as the competition's text is meant to be compared: the nukta letters
য়, ড়, ঢ় are in their decomposed form (letter + U+09BC), which is what NFC makes of them.
espeak-ng's Bengali rules only know the precomposed code points, and read a decomposed
nukta letter without the vowel sign that follows it, so the synthesiser is given
`spoken_form(sentence)`, the same text with those letters precomposed.

Every speaker is espeak-ng's Bengali voice (`bn`) with a gendered variant, base pitch,
rate and pitch range of their own (no two speakers alike), their own level and room noise;
speakers alternate male and female. `speakers` are the training speakers: about a sixth of
them (at least one) read the `valid` rows, the rest the `train` rows. The holdout speakers
read the test clips and are made unlike any training speaker as the other demos' holdouts
are (see `speechstack.synth.shift` and `speechstack.synth.asr`): male ones speak with
espeak-ng's Klatt synthesiser, female ones with female variants no training speaker uses
(Klatt raised to a female register once those run out), each with a voice shift of their
own, and most of their clips are heard in a room, through a channel or over a noise of a
kind training never has, at an SNR that keeps the words recognisable
(`asr.HOLDOUT_CONDITIONS`).

Sentences (`SENTENCES`, 3-8 words) are hand-written everyday ones and fillings of a few
patterns whose words recur across sentences, so that the valid and test sentences,
which no train clip says (`split_sentences`, as in a real corpus), are still mostly made
of words heard in training, and every character they hold occurs in a train row's
sentence, so a character vocabulary built on the train rows covers them
(`reading_orders`; a corpus too small for that is refused).

Random choices come from `np.random.default_rng` streams keyed by the seed and
libespeak-ng is reloaded before each speaker, so a seed always gives byte-identical files;
training speakers, their ids and their files do not depend on the holdout's size.
"""

from __future__ import annotations

import io
import os
import unicodedata
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from speechstack.synth.asr import HOLDOUT_CONDITIONS, Speaker
from speechstack.synth.asr import _speak_sentence as speak_sentence
from speechstack.synth.common import (
    UNNATURAL_VARIANTS,
    WHISPER_VARIANTS,
    build_atomically,
    csv_text,
    room_tone,
    write_text,
)
from speechstack.synth.emotion import (
    KLATT_PREFIX,
    draw_recording,
    holdout_noise_bank,
    klatt_variants,
    record_holdout_clip,
)
from speechstack.synth.espeak import SAMPLE_RATE, Espeak, variants_by_gender
from speechstack.synth.shift import VoiceShift, random_voice_shift

VOICE = "bn"
"""espeak-ng's Bengali voice (reads Bengali script)."""

GENDERS = ("male", "female")
SPLITS = ("train", "valid", "test")
"""`train` and `valid` are values of train.csv's `split` column; `test` is test_mp3s/."""

TRAIN_COLUMNS = ("id", "sentence", "split")
SUBMISSION_COLUMNS = ("id", "sentence")
TRAIN_FOLDER, TEST_FOLDER = "train_mp3s", "test_mp3s"
SOLUTION_FILE = "demo_solution.csv"

PLACEHOLDER = "এটি একটি নমুনা বাক্য।"
"""The `sentence` of every sample_submission.csv row ("this is a sample sentence"): no
corpus sentence, so submitting the sample as it is scores badly."""

WRITTEN = (
    "আমি প্রতিদিন সকালে চা খাই।",
    "আজ আকাশ খুব পরিষ্কার।",
    "বাইরে জোরে বৃষ্টি পড়ছে।",
    "তুমি এখন কোথায় যাচ্ছ?",
    "আমার বড় ভাই ঢাকায় থাকে।",
    "দয়া করে দরজাটা বন্ধ করুন।",
    "ট্রেন দশ মিনিট পরে ছাড়বে।",
    "শিশুরা মাঠে ফুটবল খেলছে।",
    "আমি আবার ছাতা ভুলে গেছি।",
    "মা রান্নাঘরে ভাত রাঁধছেন।",
    "নদীর পানি আজ খুব ঠান্ডা।",
    "আমরা কাল সিনেমা দেখতে যাব।",
    "তোমার নাম কী?",
    "স্কুল সকাল নয়টায় শুরু হয়।",
    "বাবা এইমাত্র অফিস থেকে ফিরলেন।",
    "গাছে অনেক পাখি বসে আছে।",
    "আমাকে এক গ্লাস পানি দিন।",
    "দোকানটা শুক্রবার বন্ধ থাকে।",
    "আমার ফোনের চার্জ প্রায় শেষ।",
    "সে প্রতি সপ্তাহে একটি বই পড়ে।",
    "ডাক্তার এখন আপনাকে দেখবেন।",
    "রাতের আকাশে অনেক তারা দেখা যাচ্ছে।",
    "বাসটা কখন আসবে?",
    "আমার দাদি খুব সুন্দর গল্প বলেন।",
    "শীতকালে এখানে ঘন কুয়াশা পড়ে।",
    "এই আমটা খুব মিষ্টি।",
    "ছেলেটি সাইকেল চালানো শিখছে।",
    "তুমি কি আমাকে একটু সাহায্য করবে?",
    "খাবার পাঁচ মিনিটের মধ্যে তৈরি হবে।",
    "বিড়ালটা খাটের উপর ঘুমাচ্ছে।",
    "ঝড়ের পর বিদ্যুৎ চলে গেল।",
    "আমার বোন বিশ্ববিদ্যালয়ে পড়ে।",
    "কৃষকেরা মাঠে ধান কাটছেন।",
    "শিক্ষক আমাদের একটি মজার গল্প শোনালেন।",
    "পুকুরে অনেক মাছ আছে।",
    "চাঁদের আলোয় উঠোন ভরে গেছে।",
    "এই জামাটার দাম কত?",
    "সন্ধ্যায় আমরা ছাদে বসে গান গাই।",
    "নৌকাটা ধীরে ধীরে ঘাটে ভিড়ল।",
    "ঔষধটা দিনে তিনবার খেতে হবে।",
)
"""Hand-written everyday sentences, 3-8 words, no digits."""

# Sentence patterns and the words that fill them: many distinct sentences that share their
# words, as a real corpus's sentences do. Each pattern's word lists have coprime lengths,
# so filling k takes word k % length of every list: all fillings differ and every word
# recurs about equally often.
TEMPLATES: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = (
    ("{} {} {} গেল।", (
        ("রহিম", "সুমন", "রানা", "তানিয়া", "নাসরিন", "মিতা", "রফিক", "শিউলি"),
        ("আজ সকালে", "গতকাল বিকেলে", "সোমবার দুপুরে", "রবিবার রাতে", "গত শনিবার"),
        ("বাজারে", "স্কুলে", "হাসপাতালে", "নদীর ধারে", "লাইব্রেরিতে", "রেলস্টেশনে", "ডাকঘরে"),
    )),
    ("{} {} {} কিনল।", (
        ("রহিম", "সুমন", "রানা", "তানিয়া", "নাসরিন", "মিতা", "রফিক", "শিউলি"),
        ("গতকাল বিকেলে", "সোমবার দুপুরে", "রবিবার রাতে", "গত শনিবার", "আজ সকালে"),
        ("একটা নতুন ছাতা", "দুই কেজি চাল", "একটি গল্পের বই", "এক জোড়া জুতা",
         "কিছু তাজা ফল", "একটা লাল কলম", "এক হালি ডিম"),
    )),
    ("{} খুব {}।", (
        ("এই ঘরটা", "আমাদের পাড়া", "নতুন রাস্তাটা", "স্টেশনটা", "গ্রামের বাজার",
         "শহরের পার্ক", "হাসপাতালের বারান্দা"),
        ("সুন্দর", "শান্ত", "পরিষ্কার", "বড়", "ছোট", "ঠান্ডা", "ব্যস্ত", "নোংরা", "অন্ধকার"),
    )),
)  # fmt: skip
_PER_TEMPLATE = 20  # sentences filled from each pattern


def _templated() -> tuple[str, ...]:
    """`_PER_TEMPLATE` fillings of each pattern (a fixed list: the same on every run)."""
    return tuple(
        pattern.format(*(words[k % len(words)] for words in slots))
        for pattern, slots in TEMPLATES
        for k in range(_PER_TEMPLATE)
    )


SENTENCES: tuple[str, ...] = tuple(
    dict.fromkeys(unicodedata.normalize("NFC", s) for s in (*WRITTEN, *_templated()))
)
"""Every sentence of the corpus, in Unicode NFC: the hand-written ones and the patterns'."""

_HELD_SENTENCE_SHARE = 0.2  # of the sentences, for valid and again for test
_VALID_SPEAKER_SHARE = 1 / 6  # of the training speakers
_HOLDOUT_WARP = (1.04, 1.15)
_HOLDOUT_RAISED_WARP = (1.25, 1.32)
_HOLDOUT_MAX_PEAK = 0.97
_NOISE_STREAM = 0xB0  # the holdout noise bank's stream in `emotion.holdout_noise_bank`
_ENCODERS = max(1, min(4, os.cpu_count() or 1))  # threads encoding MP3 while espeak speaks

# Independent random streams, keyed as default_rng([seed, stream, ...]).
_SPEAKERS, _HOLDOUT_SPEAKERS, _SENTENCE_SPLIT, _DEALING, _CLIP, _ROOM_TONE = 1, 2, 3, 4, 5, 6
_HOLDOUT_RECORDING, _IDS = 7, 8

_PRECOMPOSED = {
    unicodedata.normalize("NFD", letter): letter for letter in ("\u09dc", "\u09dd", "\u09df")
}  # ড় ঢ় য়: decomposed (as NFC leaves them) -> the single code point espeak-ng reads


def generate_bengali_ai(
    out_dir: Path,
    *,
    speakers: int = 40,
    holdout_speakers: int = 6,
    sentences_per_speaker: int = 12,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic Bengali speech-recognition corpus in the Bengali.AI layout to
    `out_dir`; return it.

    speakers: training speakers, alternating male and female; about a sixth of them (at
        least one) read the `valid` rows of train.csv, the rest the `train` rows.
    holdout_speakers: further speakers who read the test clips, with shifted voices and
        recording conditions (see the module notes); at least one.
    sentences_per_speaker: different sentences each speaker reads; at most the size of the
        smallest sentence pool a split draws from (`max_sentences_per_speaker`).
    force: replace an existing non-empty `out_dir` (only once the new one is complete).

    Raises ValueError for sizes it cannot write, including train rows too few to hold
    every character of the valid and test sentences (only a handful of train clips).
    Clips are 16 kHz mono MP3 of at most `asr.MAX_CLIP_SECONDS`: the sentence with a
    little room noise either side. The defaults write 552 clips.
    """
    if speakers < 2 or holdout_speakers < 1:
        raise ValueError(
            f"need at least two training speakers (train and valid) and one holdout speaker "
            f"(test), got speakers={speakers}, holdout_speakers={holdout_speakers}"
        )
    most = max_sentences_per_speaker()
    if not 1 <= sentences_per_speaker <= most:
        raise ValueError(
            f"sentences_per_speaker must be in [1, {most}] (each speaker reads different "
            f"sentences of its split's pool), got {sentences_per_speaker}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")

    def write(root: Path) -> None:
        _write_corpus(root, speakers, holdout_speakers, sentences_per_speaker, seed, progress)

    return build_atomically(out_dir, force, write)


def max_sentences_per_speaker() -> int:
    """The most sentences a speaker can read without repeating one: the smallest pool."""
    return round(len(SENTENCES) * _HELD_SENTENCE_SHARE)


def valid_speaker_count(speakers: int) -> int:
    """How many of `speakers` training speakers read the valid rows: about a sixth, at
    least one (and none of a single speaker, who must read train)."""
    if speakers < 2:
        return 0
    return max(1, round(speakers * _VALID_SPEAKER_SHARE))


def split_sentences(seed: int) -> dict[str, tuple[str, ...]]:
    """{split: sentences}: `SENTENCES` cut into train, valid and test pools (a fifth each
    for valid and test) that share no sentence.

    A sentence goes to valid or test only if every character it holds stays in at least
    one train sentence, so a character vocabulary built on train covers every split, and
    at least half of its words do, so held-out sentences are new but mostly made of words
    heard in training (as in a real corpus, where most words of a new sentence are common).
    """
    rng = np.random.default_rng([seed, _SENTENCE_SPLIT])
    held_count = max_sentences_per_speaker()
    holding = Counter(char for sentence in SENTENCES for char in set(sentence))
    saying = Counter(word for sentence in SENTENCES for word in _words(sentence))
    held: list[str] = []
    for position in rng.permutation(len(SENTENCES)):
        if len(held) == 2 * held_count:
            break
        sentence = SENTENCES[position]
        words = _words(sentence)
        heard = sum(saying[word] >= 2 for word in words)
        if all(holding[char] >= 2 for char in set(sentence)) and 2 * heard >= len(words):
            held.append(sentence)
            holding.subtract(set(sentence))
            saying.subtract(words)
    if len(held) < 2 * held_count:
        raise RuntimeError(f"cannot hold out {2 * held_count} Bengali sentences")
    chosen = set(held)
    return {
        "train": tuple(sentence for sentence in SENTENCES if sentence not in chosen),
        "valid": tuple(held[held_count:]),
        "test": tuple(held[:held_count]),
    }


def _words(sentence: str) -> set[str]:
    """The words of `sentence`, without the punctuation that ends it."""
    return {word.strip("।?") for word in sentence.split()}


def spoken_form(sentence: str) -> str:
    """`sentence` as espeak-ng should read it: ড়, ঢ় and য় precomposed (see the module
    notes); every other character as it is."""
    for decomposed, letter in _PRECOMPOSED.items():
        sentence = sentence.replace(decomposed, letter)
    return sentence


def make_speakers(seed: int, n_train: int, n_holdout: int) -> tuple[list[Speaker], list[Speaker]]:
    """The training speakers (valid ones last, see `valid_speaker_count`) and the holdout
    speakers of a seed.

    Position i of either list is `GENDERS[i % 2]`; ids ("bn01", "bn02", ...) count on
    across both lists; no two speakers share a voice (variant, pitch, rate, range).
    Training speakers deal each gender's shuffled natural variants in turn. Holdout
    speakers never use a training speaker's variant: male ones speak with Klatt variants,
    female ones with unused female variants (Klatt, warped up, once those run out), and
    each carries a `VoiceShift`. The training speakers do not depend on `n_holdout`.
    """
    pools = _gendered_variants()
    for gender in GENDERS:
        if not pools[gender]:
            raise RuntimeError(f"no {gender} espeak-ng variants installed")
    rng = np.random.default_rng([seed, _SPEAKERS])
    dealt = {gender: [str(v) for v in rng.permutation(pools[gender])] for gender in GENDERS}
    taken: set[tuple[str, int, int, int]] = set()
    train = []
    for position in range(n_train):
        gender = GENDERS[position % 2]
        variant = dealt[gender][(position // 2) % len(dealt[gender])]
        train.append(_speaker(rng, len(train) + 1, gender, variant, taken))

    used = {speaker.variant for speaker in train}
    holdout_rng = np.random.default_rng([seed, _HOLDOUT_SPEAKERS])
    klatt = [str(v) for v in holdout_rng.permutation(klatt_variants())]
    female = [str(v) for v in holdout_rng.permutation(pools["female"]) if v not in used]
    holdout = []
    for position in range(n_holdout):
        gender, nth = GENDERS[position % 2], position // 2
        raised = gender == "female" and nth >= len(female)
        variant = female[nth] if gender == "female" and not raised else klatt[nth % len(klatt)]
        shift = random_voice_shift(holdout_rng, _HOLDOUT_RAISED_WARP if raised else _HOLDOUT_WARP)
        if raised and shift.warp < 1.0:
            shift = replace(shift, warp=1.0 / shift.warp)
        number = n_train + position + 1
        holdout.append(_speaker(holdout_rng, number, gender, variant, taken, shift))
    return train, holdout


def _gendered_variants() -> dict[str, list[str]]:
    """The natural, voiced, non-Klatt variants that declare a gender."""
    excluded = UNNATURAL_VARIANTS | WHISPER_VARIANTS
    declared = variants_by_gender()
    return {
        gender: [v for v in declared.get(gender, ()) if v not in excluded and KLATT_PREFIX not in v]
        for gender in GENDERS
    }


def _speaker(
    rng: np.random.Generator,
    number: int,
    gender: str,
    variant: str,
    taken: set[tuple[str, int, int, int]],
    shift: VoiceShift | None = None,
) -> Speaker:
    """Speaker `number` with a voice not in `taken`. A shifted speaker asks espeak for its
    rate divided by the warp, since the warp's resampling speeds speech up by that factor."""
    while True:
        voice = (
            variant,
            int(rng.integers(32, 63)),
            int(rng.integers(135, 176)),
            int(rng.integers(30, 71)),
        )
        if voice not in taken:
            break
    taken.add(voice)
    _, pitch, rate, pitch_range = voice
    if shift is not None:
        rate = round(rate / shift.warp)
    return Speaker(
        id=f"{VOICE}{number:02d}",
        language=VOICE,
        gender=gender,
        age="",
        voice=VOICE,
        variant=variant,
        pitch=pitch,
        rate=rate,
        pitch_range=pitch_range,
        level_db=float(rng.normal(0.0, 3.0)),
        noise_exponent=float(rng.uniform(0.0, 2.0)),
        shift=shift,
    )


def _number(speaker: Speaker) -> int:
    return int(speaker.id[len(VOICE) :])


def reading_orders(
    seed: int, pools: dict[str, tuple[str, ...]], train_clips: int
) -> dict[str, list[str]]:
    """{split: its pool in the order `_deal_sentences` deals it}, each pool shuffled.

    The train order starts with a few sentences that hold every character of the valid
    and test pools (picked greedily), so that even a small corpus's train clips hold them;
    the valid and test orders put first the sentences whose characters the first
    `train_clips` train sentences (those read) all hold.
    """
    orders = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, _DEALING, index])
        orders[split] = [pools[split][i] for i in rng.permutation(len(pools[split]))]
    wanted = set("".join(pools["valid"] + pools["test"]))
    rest, first, held = orders["train"], [], set()
    while not wanted <= held:
        best = max(rest, key=lambda sentence: len(wanted & set(sentence) - held))
        rest.remove(best)
        first.append(best)
        held |= set(best)
    orders["train"] = first + rest
    read = set("".join(orders["train"][:train_clips]))
    for split in ("valid", "test"):
        orders[split].sort(key=lambda sentence: not set(sentence) <= read)
    return orders


def _deal_sentences(order: Sequence[str], readers: int, count: int) -> list[list[str]]:
    """The sentences each of `readers` reads: `order` dealt round, `count` consecutive
    ones per reader, so every sentence is read about equally often and none twice by one
    reader."""
    return [
        [order[(number * count + k) % len(order)] for k in range(count)]
        for number in range(readers)
    ]


def _clip_ids(rng: np.random.Generator, count: int, drawn: set[str]) -> list[str]:
    """`count` new ids of 12 lower-case hex digits, none in `drawn` (which they join)."""
    ids = []
    while len(ids) < count:
        clip_id = f"{int(rng.integers(0, 1 << 48)):012x}"
        if clip_id not in drawn:
            drawn.add(clip_id)
            ids.append(clip_id)
    return ids


def write_mp3(path: Path, waveform: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Mono MP3 at `sample_rate` Hz; `waveform` is float in [-1, 1] (clipped to it).

    Encoded in memory first, as `common.write_wav` does, so libsndfile does not sync
    every file to disk.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = io.BytesIO()
    sf.write(encoded, np.clip(waveform, -1.0, 1.0).astype(np.float32), sample_rate, format="MP3")
    path.write_bytes(encoded.getvalue())


class _Encoder:
    """`write_mp3` on worker threads (libsndfile releases the GIL), so MP3 encoding, the
    slowest step, runs beside synthesis; at most a few clips wait, and an encoding error
    surfaces at the next `submit` or at `finish`. Each file's bytes depend only on its
    own samples, so the threads do not change what is written."""

    def __init__(self, workers: int = _ENCODERS) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mp3")
        self.pending: deque[Future[None]] = deque()
        self.limit = 2 * workers

    def submit(self, path: Path, waveform: np.ndarray) -> None:
        self.pending.append(self.pool.submit(write_mp3, path, waveform.astype(np.float32)))
        while len(self.pending) > self.limit:
            self.pending.popleft().result()

    def finish(self) -> None:
        """Wait for every file; raise the first encoding error."""
        while self.pending:
            self.pending.popleft().result()

    def close(self) -> None:
        """Drop what has not started and wait for what has (before the folder is removed)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _write_corpus(
    root: Path,
    n_train: int,
    n_holdout: int,
    sentences_per_speaker: int,
    seed: int,
    progress: bool,
) -> None:
    train, holdout = make_speakers(seed, n_train, n_holdout)
    n_valid = valid_speaker_count(n_train)
    casts = {"train": train[: n_train - n_valid], "valid": train[n_train - n_valid :]}
    casts["test"] = holdout
    train_clips = len(casts["train"]) * sentences_per_speaker
    orders = reading_orders(seed, split_sentences(seed), train_clips)
    ids = np.random.default_rng([seed, _IDS])
    drawn: set[str] = set()
    plans: dict[str, list[tuple[Speaker, list[tuple[str, str]]]]] = {}
    said = {
        split: _deal_sentences(orders[split], len(casts[split]), sentences_per_speaker)
        for split in SPLITS
    }
    read = {char for sentences in said["train"] for sentence in sentences for char in sentence}
    for split in ("valid", "test"):
        unheard = {c for sentences in said[split] for sentence in sentences for c in sentence}
        if unheard - read:
            raise ValueError(
                f"the {train_clips} train clips do not hold the characters "
                f"{''.join(sorted(unheard - read))} of the {split} sentences; ask for more "
                "speakers or sentences_per_speaker"
            )
    for split in SPLITS:  # train ids first: they do not depend on the holdout
        plans[split] = [
            (speaker, list(zip(_clip_ids(ids, len(sentences), drawn), sentences, strict=True)))
            for speaker, sentences in zip(casts[split], said[split], strict=True)
        ]
    espeak, encoder = Espeak(), _Encoder()
    total = (n_train + n_holdout) * sentences_per_speaker
    bar = tqdm(total=total, desc="bengali_ai demo", unit="file", disable=not progress)
    try:
        for split in ("train", "valid"):
            for speaker, clips in plans[split]:
                _record(root / TRAIN_FOLDER, speaker, clips, seed, espeak, encoder, bar.update)
        crowd = sorted({speaker.variant for speaker in holdout})
        bank = holdout_noise_bank(seed, _NOISE_STREAM, espeak, crowd, SAMPLE_RATE)
        for speaker, clips in plans["test"]:
            _record(root / TEST_FOLDER, speaker, clips, seed, espeak, encoder, bar.update, bank)
        encoder.finish()
    finally:
        encoder.close()
        bar.close()

    rows = sorted(
        (clip_id, sentence, split)
        for split in ("train", "valid")
        for _, clips in plans[split]
        for clip_id, sentence in clips
    )
    write_text(root / "train.csv", csv_text(TRAIN_COLUMNS, rows))
    answers = sorted(clip for _, clips in plans["test"] for clip in clips)
    sample = [(clip_id, PLACEHOLDER) for clip_id, _ in answers]
    write_text(root / "sample_submission.csv", csv_text(SUBMISSION_COLUMNS, sample))
    write_text(root / SOLUTION_FILE, csv_text(SUBMISSION_COLUMNS, answers))


def _record(
    folder: Path,
    speaker: Speaker,
    clips: Sequence[tuple[str, str]],
    seed: int,
    espeak: Espeak,
    encoder: _Encoder,
    advance: Callable[[], object],
    bank: dict[str, np.ndarray] | None = None,
) -> None:
    """Write `speaker`'s clips (id, sentence) into `folder` as `<id>.mp3`; with a noise
    `bank` (holdout speakers), each is then recorded under conditions `draw_recording`
    draws from `asr.HOLDOUT_CONDITIONS`."""
    espeak.reset()
    number = _number(speaker)
    tone = room_tone(
        np.random.default_rng([seed, _ROOM_TONE, number]), speaker.noise_exponent, SAMPLE_RATE
    )
    for index, (clip_id, sentence) in enumerate(clips):
        rng = np.random.default_rng([seed, _CLIP, number, index])
        audio = speak_sentence(espeak, speaker, spoken_form(sentence), tone, rng)
        if bank is not None:
            recording_rng = np.random.default_rng([seed, _HOLDOUT_RECORDING, number, index])
            recording = draw_recording(recording_rng, sorted(bank), HOLDOUT_CONDITIONS)
            audio = record_holdout_clip(
                audio, recording, bank, recording_rng, SAMPLE_RATE, max_peak=_HOLDOUT_MAX_PEAK
            )
        encoder.submit(folder / f"{clip_id}.mp3", audio)
        advance()
