"""A small, deterministic speech-recognition corpus in English and French, Common Voice style.

Written in the layout of a Common Voice release (the v5-v7 columns), so the ASR readers,
text normalisation, vocabulary, WER/CER and per-gender reports can run without a
download:

    <out>/clips/common_voice_<locale>_<n>.wav   16 kHz mono PCM16, one sentence each
    <out>/train.tsv, dev.tsv, test.tsv           client_id path sentence up_votes down_votes
                                                 age gender accent locale segment

Departures from a real release, on purpose: the clips are WAV, not mp3 (we keep to what
soundfile writes), both languages share one folder (a real release has one folder per
locale; here the `locale` column tells them apart), and there are no `validated.tsv`,
`other.tsv` or `invalidated.tsv`. The TSVs are written as Common Voice writes them:
tab-separated UTF-8 with `\\n` line ends and no quoting at all (no sentence holds a tab,
a line break or a double quote), `path` is the file name inside `clips/`, empty fields
are empty strings, and `client_id` is a 128-hex-digit SHA-512 per speaker.

Speakers alternate English and French (ids en01, fr01, en02, ...) and, in pairs, male
and female; each is one espeak-ng voice: an English accent (`english_voices`) or a
French one (`FRENCH_VOICES`), a gendered variant (`gender` is the variant's declared
gender), base pitch, rate and pitch range, with their own level and room noise. Age is
drawn from Common Voice's buckets (blank for some, as people leave it out). Every
speaker reads `sentences_per_speaker` different sentences of a fixed list of everyday
sentences (`SENTENCES`: 3-8 words, French with its accents, apostrophes and spaced `?`).

Splits follow Common Voice's rules: no speaker in two splits and, unless
`shared_sentences`, no sentence in two splits either (each language's list is cut into
train, dev and test sentences, held-out sentences only using characters the train
sentences also hold, so a vocabulary built on train covers them). `train.tsv` and
`dev.tsv` come from the training speakers (the last few, both languages, are dev);
`test.tsv` holds the holdout speakers, made unlike any training one as the other demos'
holdouts are (see `speechstack.synth.shift`): male holdout speakers speak with
espeak-ng's Klatt synthesiser, female ones with female variants no training speaker uses
(Klatt raised to a female register once those run out), each with a voice shift of
their own (vocal-tract warp, tilt and EQ, tremor, sometimes breath), and most of their
clips are heard in a room, through a channel or over a noise of a kind training never
has, at an SNR that keeps the words recognisable (`HOLDOUT_CONDITIONS`).

Random choices come from `np.random.default_rng` streams keyed by the seed and
libespeak-ng is reloaded before each speaker, so a seed always gives byte-identical
files; training speakers and their files do not depend on the holdout's size.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechstack.synth.common import (
    UNNATURAL_VARIANTS,
    WHISPER_VARIANTS,
    add_room_tone,
    build_atomically,
    room_tone,
    speech_rms,
    trim_silence,
    write_text,
    write_wav,
)
from speechstack.synth.emotion import (
    CROWD_VOCABULARY,
    HoldoutConditions,
    draw_recording,
    klatt_variants,
    record_holdout_clip,
)
from speechstack.synth.espeak import SAMPLE_RATE, Espeak, english_voices, variants_by_gender
from speechstack.synth.shift import (
    NOISE_KINDS,
    VoiceShift,
    crowd_babble,
    noise_bank,
    random_voice_shift,
    shift_voice,
)

LANGUAGES = ("en", "fr")
"""Locales of the corpus, in the order speakers alternate."""

GENDERS = ("male", "female")
"""Common Voice's `gender` values this corpus uses (real releases also have `other`)."""

AGES = ("teens", "twenties", "thirties", "fourties", "fifties", "sixties", "seventies")
"""Common Voice's age buckets (its own spelling, "fourties", included)."""

SPLITS = ("train", "dev", "test")
TSV_COLUMNS = (
    "client_id",
    "path",
    "sentence",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accent",
    "locale",
    "segment",
)
"""The header of every split's TSV, as in Common Voice releases v5-v7."""

CLIPS_FOLDER = "clips"
MAX_CLIP_SECONDS = 6.0

FRENCH_VOICES = ("fr", "fr-be", "fr-ch")
"""espeak-ng's French voices (France, Belgium, Switzerland)."""

ACCENTS = {
    "en": "england",
    "en-gb-x-rp": "england",
    "en-gb-x-gbclan": "england",
    "en-gb-x-gbcwmd": "england",
    "en-gb-scotland": "scotland",
    "en-us": "us",
    "en-us-nyc": "us",
    "fr": "france",
    "fr-be": "belgium",
    "fr-ch": "switzerland",
}
"""Common Voice `accent` of each espeak-ng voice; a voice not listed (e.g. Caribbean
English, `en-029`, which Common Voice has no bucket for) leaves the field blank."""

HOLDOUT_CONDITIONS = HoldoutConditions(
    noisy_share=0.75,
    snr_db=(15.0, 30.0),
    reverb_share=0.4,
    rt60_s=(0.2, 0.5),
    direct_to_reverb_db=(3.0, 12.0),
    channel_share=0.2,
)
"""How test clips are recorded: milder than the classification holdouts, since every
word of a sentence has to stay recognisable, not just its overall class."""

WRITTEN: dict[str, tuple[str, ...]] = {
    "en": (
        "The coffee is still too hot.",
        "Please close the window behind you.",
        "My sister lives near the station.",
        "We walked to the market together.",
        "The train leaves in ten minutes.",
        "Where did you put my keys?",
        "It rained all day yesterday.",
        "Can you help me with this bag?",
        "The children are playing in the garden.",
        "I forgot my umbrella again.",
        "She reads a book every week.",
        "The bakery opens early on Sundays.",
        "Turn left at the next corner.",
        "Our neighbours have a friendly dog.",
        "The soup needs a little more salt.",
        "He missed the last bus home.",
        "Let's meet at the library tomorrow.",
        "The museum is closed on Mondays.",
        "I would like a glass of water.",
        "The meeting starts after lunch.",
        "Do you know the way to the beach?",
        "My phone battery is almost empty.",
        "The river is very calm today.",
        "We painted the kitchen yellow.",
        "They moved to a small village.",
        "Please speak a little more slowly.",
        "The shop sells fresh bread and cheese.",
        "Who left the door open?",
        "The bridge was built long ago.",
        "I usually cycle to work.",
        "Dinner is ready in five minutes.",
        "The cat is sleeping on the sofa.",
        "How much does this jacket cost?",
        "The film was longer than expected.",
        "We need more milk and eggs.",
        "The sky turned orange at sunset.",
        "My brother plays the guitar.",
        "Could you open the door, please?",
        "The garden looks lovely in spring.",
        "I have an appointment this afternoon.",
        "The road was covered in snow.",
        "She always arrives on time.",
        "Let's take a short break.",
        "The tea is on the table.",
        "The doctor will see you now.",
        "We watched the stars last night.",
        "This street is very quiet.",
        "I lost my wallet on the train.",
        "The plane landed safely.",
        "Keep the receipt, just in case.",
        "Our teacher told us a story.",
        "The lake freezes every winter.",
        "Is there a pharmacy nearby?",
        "He fixed the bicycle himself.",
        "The flowers need some water.",
        "I'm looking for the post office.",
        "The concert was wonderful!",
        "Wait for me at the entrance.",
        "The hotel room has a balcony.",
        "We had pancakes for breakfast.",
        "My grandmother makes delicious soup.",
        "The wind blew the leaves away.",
        "Don't forget to lock the car.",
        "What time does the shop close?",
        "The baby is finally asleep.",
        "They sang songs around the fire.",
        "Put the boxes in the hallway.",
        "The waiter brought us the menu.",
        "The mountains are beautiful in autumn.",
        "I'll call you when I arrive.",
        "The printer is out of paper.",
        "Everyone enjoyed the picnic.",
        "The farmer sold us some apples.",
        "Which platform does the train leave from?",
        "It's colder than last week.",
        "My shoes are soaking wet.",
        "The children laughed at the clown.",
        "Bring a warm coat tonight.",
        "The new bridge opens next month.",
        "You can't park here, sir.",
        "We're going to the zoo on Friday.",
        "The queen visited our town.",
        "That was a very good joke!",
        "Quick, the bus is coming!",
    ),
    "fr": (
        "L'été est chaud cette année.",
        "Où est la gare, s'il vous plaît ?",
        "Le café est encore trop chaud.",
        "Ferme la fenêtre, s'il te plaît.",
        "Ma sœur habite près de la mer.",
        "Nous avons marché jusqu'au marché.",
        "Il a plu toute la journée.",
        "Peux-tu m'aider avec ce sac ?",
        "Les enfants jouent dans le jardin.",
        "J'ai oublié mon parapluie.",
        "Elle lit un livre chaque semaine.",
        "La boulangerie ouvre très tôt.",
        "Tournez à gauche au prochain carrefour.",
        "Nos voisins ont un chien gentil.",
        "La soupe manque un peu de sel.",
        "Il a raté le dernier bus.",
        "On se retrouve à la bibliothèque demain.",
        "Le musée est fermé le lundi.",
        "Je voudrais un verre d'eau.",
        "La réunion commence après le déjeuner.",
        "Connaissez-vous le chemin de la plage ?",
        "Mon téléphone est presque déchargé.",
        "La rivière est très calme aujourd'hui.",
        "Nous avons peint la cuisine en jaune.",
        "Ils ont déménagé dans un petit village.",
        "Parlez plus lentement, s'il vous plaît.",
        "Ce magasin vend du pain frais.",
        "Qui a laissé la porte ouverte ?",
        "Ce pont a été construit autrefois.",
        "Je vais au travail à vélo.",
        "Le dîner sera prêt dans cinq minutes.",
        "Le chat dort sur le canapé.",
        "Combien coûte cette veste ?",
        "Le film était plus long que prévu.",
        "Il nous faut du lait et des œufs.",
        "Le ciel est orange ce soir.",
        "Mon frère joue de la guitare.",
        "Pouvez-vous ouvrir la porte ?",
        "Le jardin est magnifique au printemps.",
        "J'ai un rendez-vous cet après-midi.",
        "La route était couverte de neige.",
        "Elle arrive toujours à l'heure.",
        "Faisons une petite pause.",
        "Le thé est sur la table.",
        "Le médecin va vous recevoir.",
        "Nous avons regardé les étoiles hier soir.",
        "Cette rue est très calme.",
        "J'ai perdu mon portefeuille dans le train.",
        "L'avion a atterri sans problème.",
        "Gardez le reçu, au cas où.",
        "Notre maître nous a raconté une histoire.",
        "Le lac gèle chaque hiver.",
        "Y a-t-il une pharmacie près d'ici ?",
        "Il a réparé le vélo lui-même.",
        "Les fleurs ont besoin d'eau.",
        "Je cherche le bureau de poste.",
        "Le concert était formidable !",
        "Attends-moi à l'entrée.",
        "La chambre d'hôtel a un balcon.",
        "Nous avons mangé des crêpes ce matin.",
        "Ma grand-mère fait une soupe délicieuse.",
        "Le vent a emporté les feuilles.",
        "N'oublie pas de fermer la voiture.",
        "À quelle heure ferme le magasin ?",
        "Le bébé dort enfin.",
        "Ils ont chanté autour du feu.",
        "Posez les cartons dans le couloir.",
        "Le serveur nous a apporté la carte.",
        "Les montagnes sont belles en automne.",
        "Je t'appelle dès que j'arrive.",
        "L'imprimante n'a plus de papier.",
        "Tout le monde a aimé le pique-nique.",
        "Le fermier nous a vendu des pommes.",
        "De quel quai part le train ?",
        "Il fait plus froid que la semaine dernière.",
        "Mes chaussures sont trempées.",
        "Les enfants ont ri au spectacle.",
        "Prends un manteau chaud ce soir.",
        "Le nouveau pont ouvre le mois prochain.",
        "Ça fait plaisir de te voir !",
        "Noël approche à grands pas.",
        "Le garçon a mangé une pêche mûre.",
        "L'hôpital se trouve derrière l'église.",
        "Le maïs pousse bien cette année.",
        "Nous partons en vacances en août.",
        "L'île est très petite.",
        "Ton ami est un peu naïf.",
        "Ça coûte trop cher pour moi.",
        "Il gèle à pierre fendre.",
        "Où as-tu garé la voiture ?",
    ),
}
"""Hand-written everyday sentences, 3-8 words, no digits."""

# Sentence patterns and the words that fill them: many distinct sentences that share their
# words, as a real corpus's sentences do, so a sentence never heard in training is mostly
# made of words that were (French adjectives are the ones spelled alike in both genders).
TEMPLATES: dict[str, tuple[tuple[str, tuple[tuple[str, ...], ...]], ...]] = {
    "en": (
        ("The {} is {}.", (
            ("garden", "kitchen", "station", "market", "bridge", "letter", "jacket", "river",
             "window", "teacher", "bottle", "village"),
            ("quiet", "empty", "yellow", "broken", "open", "cold", "clean", "small", "heavy",
             "ready"),
        )),
        ("I {} the {} {}.", (
            ("found", "painted", "carried", "opened", "cleaned", "sold", "washed", "moved"),
            ("table", "basket", "ladder", "mirror", "blanket", "bicycle", "lamp", "suitcase"),
            ("this morning", "last night", "on Monday", "after lunch", "yesterday"),
        )),
        ("{} walked to the {} {}.", (
            ("Anna", "David", "Maria", "Peter", "Sarah", "Thomas", "Emma", "Robert"),
            ("beach", "library", "office", "museum", "harbour", "school", "bakery", "church"),
            ("this morning", "last night", "on Monday", "after lunch", "yesterday"),
        )),
    ),
    "fr": (
        ("Le {} est {}.", (
            ("jardin", "marché", "village", "bateau", "chemin", "couloir", "salon", "train",
             "musée", "pont"),
            ("calme", "vide", "jaune", "propre", "rapide", "moderne", "énorme", "tranquille",
             "rouge", "sombre"),
        )),
        ("Je {} {} {}.", (
            ("regarde", "prépare", "cherche", "nettoie", "répare", "achète", "porte", "range"),
            ("le vélo", "la voiture", "le gâteau", "la lettre", "le livre", "la table",
             "le manteau", "la lampe", "la valise", "le panier"),
            ("ce matin", "hier soir", "lundi dernier", "après déjeuner", "à midi"),
        )),
        ("{} est allé à {} {}.", (
            ("Paul", "Marc", "Louis", "Hugo", "Jules", "Léo", "Théo", "Lucas"),
            ("la gare", "la plage", "l'école", "la poste", "la mairie", "l'hôpital",
             "la piscine", "la boulangerie"),
            ("ce matin", "hier soir", "lundi dernier", "après déjeuner", "à midi"),
        )),
    ),
}  # fmt: skip
_PER_TEMPLATE = 80  # sentences drawn from each pattern


def _templated(language: str) -> tuple[str, ...]:
    """``_PER_TEMPLATE`` fillings of each of ``language``'s patterns, spread evenly over
    every combination of its words (a fixed choice: the same list on every run)."""
    made: list[str] = []
    for pattern, slots in TEMPLATES[language]:
        combinations = list(itertools.product(*slots))
        step = len(combinations) / _PER_TEMPLATE
        for index in range(_PER_TEMPLATE):
            words = combinations[int(index * step)]
            made.append(pattern.format(*words))
    return tuple(made)


SENTENCES: dict[str, tuple[str, ...]] = {
    language: WRITTEN[language]
    + tuple(s for s in _templated(language) if s not in WRITTEN[language])
    for language in LANGUAGES
}
"""The sentences each language's speakers read: the hand-written ones and the patterns'."""

_HELD_SENTENCE_SHARE = 0.2  # of each language's sentences, for dev and again for test
_DEV_SPEAKER_SHARE = 1 / 6  # of the training speakers, in whole pairs of languages
_AGE_WEIGHTS = (0.06, 0.34, 0.25, 0.15, 0.1, 0.06, 0.04)
_BLANK_AGE_SHARE = 0.2
_UP_VOTES = (2, 3, 4)  # a validated clip has at least two votes for and more for than against
_HOLDOUT_WARP = (1.04, 1.15)
_HOLDOUT_RAISED_WARP = (1.25, 1.32)
_HOLDOUT_MAX_PEAK = 0.97
_BANK_SECONDS = 8.0
_RESPEAK_TRIES = 4

# Independent random streams, keyed as default_rng([seed, stream, ...]).
_SPEAKERS, _HOLDOUT_SPEAKERS, _SENTENCE_SPLIT, _DEALING, _CLIP, _ROOM_TONE = 1, 2, 3, 4, 5, 6
_HOLDOUT_RECORDING, _HOLDOUT_NOISE, _VOTES, _FILE_NUMBERS, _ROW_ORDER = 7, 8, 9, 10, 11


@dataclass(frozen=True)
class Speaker:
    """One synthetic contributor: a language, an espeak-ng voice, a profile, a microphone."""

    id: str  # locale + two or more digits, e.g. "en01", "fr07"
    language: str  # "en" or "fr"
    gender: str  # "male" or "female": what the `gender` column says
    age: str  # one of AGES, or "" (not given)
    voice: str  # espeak-ng voice name: an English accent or one of FRENCH_VOICES
    variant: str
    pitch: int  # espeak 0..100
    rate: int  # words per minute asked of espeak (holdout: before the warp speeds it up)
    pitch_range: int  # espeak 0..100
    level_db: float  # loudness offset of their recordings, dB
    noise_exponent: float  # their room noise power falls as 1/f**noise_exponent
    shift: VoiceShift | None = None  # holdout speakers only: see `shift.shift_voice`


@dataclass(frozen=True)
class _Clip:
    file_name: str  # inside clips/: common_voice_<locale>_<n>.wav
    sentence: str
    up_votes: int
    down_votes: int


def generate_asr(
    out_dir: Path,
    *,
    speakers: int = 60,
    holdout_speakers: int = 6,
    sentences_per_speaker: int = 12,
    shared_sentences: bool = False,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Write a synthetic English/French speech-recognition corpus to `out_dir`; return it.

    speakers: training speakers, alternating English and French (an odd count has one
        more English speaker); about a sixth of them, in English-French pairs, go to
        `dev.tsv` (none below four speakers) and the rest to `train.tsv`.
    holdout_speakers: further speakers, alternating the same way, in `test.tsv`, with
        shifted voices and recording conditions (see the module notes); 0 leaves
        `test.tsv` with its header only.
    sentences_per_speaker: different sentences each speaker reads; at most the size of
        the smallest sentence pool a split draws from (`max_sentences_per_speaker`).
    shared_sentences: let every split draw from all of a language's sentences, so test
        sentences were heard in training (Common Voice keeps them apart; the default).
    force: replace an existing non-empty `out_dir` (only once the new one is complete).

    Clips are 16 kHz mono PCM16 WAV of at most `MAX_CLIP_SECONDS`: the sentence with a
    little room noise either side. The defaults write 360 clips.
    """
    if speakers < 1 or holdout_speakers < 0:
        raise ValueError(
            f"need at least one speaker and no negative holdout, got speakers={speakers}, "
            f"holdout_speakers={holdout_speakers}"
        )
    most = max_sentences_per_speaker(shared_sentences)
    if not 1 <= sentences_per_speaker <= most:
        raise ValueError(
            f"sentences_per_speaker must be in [1, {most}] (each speaker reads different "
            f"sentences of its split's pool; pass shared_sentences=True for more), got "
            f"{sentences_per_speaker}"
        )
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")

    def write(root: Path) -> None:
        _write_corpus(
            root,
            speakers,
            holdout_speakers,
            sentences_per_speaker,
            shared_sentences,
            seed,
            progress,
        )

    return build_atomically(out_dir, force, write)


def max_sentences_per_speaker(shared_sentences: bool = False) -> int:
    """The most sentences a speaker can read without repeating one: the smallest pool."""
    if shared_sentences:
        return min(len(sentences) for sentences in SENTENCES.values())
    return min(round(len(sentences) * _HELD_SENTENCE_SHARE) for sentences in SENTENCES.values())


def dev_speaker_count(speakers: int) -> int:
    """How many of `speakers` training speakers go to dev: about a sixth, in whole
    English-French pairs, and none below four speakers (train keeps both languages)."""
    if speakers < 4:
        return 0
    return 2 * max(1, round(speakers * _DEV_SPEAKER_SHARE / 2))


def split_sentences(seed: int, shared: bool = False) -> dict[str, dict[str, tuple[str, ...]]]:
    """{language: {split: sentences}}: each language's `SENTENCES` cut into train, dev
    and test pools (a fifth each for dev and test) that share no sentence.

    A sentence goes to dev or test only if every character it holds stays in at least
    one train sentence, so a character vocabulary built on train covers every split.
    With `shared`, every split gets the whole list.
    """
    pools: dict[str, dict[str, tuple[str, ...]]] = {}
    for index, language in enumerate(LANGUAGES):
        sentences = SENTENCES[language]
        if shared:
            pools[language] = dict.fromkeys(SPLITS, sentences)
            continue
        rng = np.random.default_rng([seed, _SENTENCE_SPLIT, index])
        held_count = round(len(sentences) * _HELD_SENTENCE_SHARE)
        holding = Counter(char for sentence in sentences for char in set(sentence))
        held: list[str] = []
        for position in rng.permutation(len(sentences)):
            sentence = sentences[position]
            if len(held) == 2 * held_count:
                break
            if all(holding[char] >= 2 for char in set(sentence)):
                held.append(sentence)
                holding.subtract(set(sentence))
        if len(held) < 2 * held_count:
            raise RuntimeError(f"cannot hold out {2 * held_count} {language} sentences")
        chosen = set(held)
        pools[language] = {
            "train": tuple(sentence for sentence in sentences if sentence not in chosen),
            "dev": tuple(held[held_count:]),
            "test": tuple(held[:held_count]),
        }
    return pools


def client_id(seed: int, speaker: Speaker) -> str:
    """The speaker's `client_id`: a SHA-512 hex digest (128 characters, as in Common
    Voice), the same for the same seed and speaker id."""
    return hashlib.sha512(f"speechstack-asr-demo/{seed}/{speaker.id}".encode()).hexdigest()


def make_speakers(seed: int, n_train: int, n_holdout: int) -> tuple[list[Speaker], list[Speaker]]:
    """The training and holdout speakers of a seed.

    Position i of either list speaks `LANGUAGES[i % 2]`, its gender is
    `GENDERS[(i // 2) % 2]` (English and French pairs, male then female); ids count on
    across both lists; no two speakers share a voice (voice, variant, pitch, rate, range).
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
    taken: set[tuple[str, str, int, int, int]] = set()
    numbered: dict[str, int] = {}
    train = []
    for position in range(n_train):
        language, gender = _language_and_gender(position)
        variant = dealt[gender][_nth_of_gender(position) % len(dealt[gender])]
        train.append(_speaker(rng, language, gender, variant, numbered, taken))

    used = {speaker.variant for speaker in train}
    holdout_rng = np.random.default_rng([seed, _HOLDOUT_SPEAKERS])
    klatt = [str(v) for v in holdout_rng.permutation(klatt_variants())]
    female = [str(v) for v in holdout_rng.permutation(pools["female"]) if v not in used]
    holdout = []
    for position in range(n_holdout):
        language, gender = _language_and_gender(position)
        nth = _nth_of_gender(position)
        raised = gender == "female" and nth >= len(female)
        variant = female[nth] if gender == "female" and not raised else klatt[nth % len(klatt)]
        shift = random_voice_shift(holdout_rng, _HOLDOUT_RAISED_WARP if raised else _HOLDOUT_WARP)
        if raised and shift.warp < 1.0:
            shift = replace(shift, warp=1.0 / shift.warp)
        holdout.append(
            _speaker(holdout_rng, language, gender, variant, numbered, taken, shift=shift)
        )
    return train, holdout


def _gendered_variants() -> dict[str, list[str]]:
    """The natural, voiced variants that declare a gender: {"male": [...], "female": [...]}."""
    excluded = UNNATURAL_VARIANTS | WHISPER_VARIANTS
    declared = variants_by_gender()
    return {
        gender: [v for v in declared.get(gender, ()) if v not in excluded] for gender in GENDERS
    }


def _language_and_gender(position: int) -> tuple[str, str]:
    return LANGUAGES[position % 2], GENDERS[(position // 2) % 2]


def _nth_of_gender(position: int) -> int:
    """How many speakers of the same gender come before `position` (0-based)."""
    return (position // 4) * 2 + position % 2


def _voices(language: str) -> tuple[str, ...]:
    return english_voices().accents if language == "en" else FRENCH_VOICES


def _speaker(
    rng: np.random.Generator,
    language: str,
    gender: str,
    variant: str,
    numbered: dict[str, int],
    taken: set[tuple[str, str, int, int, int]],
    shift: VoiceShift | None = None,
) -> Speaker:
    """A new speaker numbered on from `numbered[language]`, with a voice not in `taken`.

    A shifted speaker asks espeak for its rate divided by the warp, since the warp's
    resampling speeds speech up by that factor.
    """
    voices = _voices(language)
    while True:
        voice = (
            str(voices[rng.integers(len(voices))]),
            variant,
            int(rng.integers(32, 63)),
            int(rng.integers(135, 176)),
            int(rng.integers(30, 71)),
        )
        if voice not in taken:
            break
    taken.add(voice)
    numbered[language] = numbered.get(language, 0) + 1
    age = "" if rng.random() < _BLANK_AGE_SHARE else str(rng.choice(AGES, p=_AGE_WEIGHTS))
    voice_name, _, pitch, rate, pitch_range = voice
    if shift is not None:
        rate = round(rate / shift.warp)
    return Speaker(
        id=f"{language}{numbered[language]:02d}",
        language=language,
        gender=gender,
        age=age,
        voice=voice_name,
        variant=variant,
        pitch=pitch,
        rate=rate,
        pitch_range=pitch_range,
        level_db=float(rng.normal(0.0, 3.0)),
        noise_exponent=float(rng.uniform(0.0, 2.0)),
        shift=shift,
    )


def _speaker_key(speaker: Speaker) -> tuple[int, int]:
    """(language index, number) of a speaker: what their random streams are keyed by."""
    return LANGUAGES.index(speaker.language), int(speaker.id[len(speaker.language) :])


def _deal_sentences(
    seed: int,
    split: str,
    cast: Sequence[Speaker],
    pools: dict[str, dict[str, tuple[str, ...]]],
    count: int,
) -> list[list[str]]:
    """The sentences each of `cast` reads in `split`: each language's pool shuffled and
    dealt round, `count` consecutive ones per speaker, so every sentence is read about
    equally often and none twice by one speaker."""
    said: dict[str, list[str]] = {}
    for index, language in enumerate(LANGUAGES):
        pool = pools[language][split]
        rng = np.random.default_rng([seed, _DEALING, SPLITS.index(split), index])
        order = rng.permutation(len(pool))
        readers = [speaker for speaker in cast if speaker.language == language]
        for number, speaker in enumerate(readers):
            start = number * count
            said[speaker.id] = [pool[order[(start + k) % len(pool)]] for k in range(count)]
    return [said[speaker.id] for speaker in cast]


def _write_corpus(
    root: Path,
    n_train: int,
    n_holdout: int,
    sentences_per_speaker: int,
    shared_sentences: bool,
    seed: int,
    progress: bool,
) -> None:
    train, holdout = make_speakers(seed, n_train, n_holdout)
    n_dev = dev_speaker_count(n_train)
    casts = {
        "train": train[: n_train - n_dev],
        "dev": train[n_train - n_dev :],
        "test": holdout,
    }
    pools = split_sentences(seed, shared_sentences)
    numbers = np.random.default_rng([seed, _FILE_NUMBERS])
    drawn: set[int] = set()
    plans: dict[str, list[tuple[Speaker, list[_Clip]]]] = {}
    for split in SPLITS:
        sentences = _deal_sentences(seed, split, casts[split], pools, sentences_per_speaker)
        plans[split] = [
            (speaker, _plan_clips(seed, speaker, said, numbers, drawn))
            for speaker, said in zip(casts[split], sentences, strict=True)
        ]
    espeak = Espeak()
    total = (n_train + n_holdout) * sentences_per_speaker
    with tqdm(total=total, desc="asr demo", unit="file", disable=not progress) as bar:
        for split in ("train", "dev"):
            for speaker, clips in plans[split]:
                _record(root / CLIPS_FOLDER, speaker, clips, seed, espeak, bar.update)
        if holdout:
            bank = _holdout_noise_bank(seed, espeak, [speaker.variant for speaker in holdout])
            for speaker, clips in plans["test"]:
                _record(root / CLIPS_FOLDER, speaker, clips, seed, espeak, bar.update, bank)
    (root / CLIPS_FOLDER).mkdir(parents=True, exist_ok=True)
    for index, split in enumerate(SPLITS):
        rows = [_row(seed, speaker, clip) for speaker, clips in plans[split] for clip in clips]
        order = np.random.default_rng([seed, _ROW_ORDER, index]).permutation(len(rows))
        write_text(root / f"{split}.tsv", tsv_text([rows[i] for i in order]))


def _plan_clips(
    seed: int,
    speaker: Speaker,
    sentences: Sequence[str],
    numbers: np.random.Generator,
    drawn: set[int],
) -> list[_Clip]:
    """The speaker's clips: a file number no other clip has (eight digits, like Common
    Voice's) and the validation votes of each."""
    votes = np.random.default_rng([seed, _VOTES, *_speaker_key(speaker)])
    clips = []
    for sentence in sentences:
        while True:
            number = int(numbers.integers(10_000_000, 40_000_000))
            if number not in drawn:
                break
        drawn.add(number)
        up = int(votes.choice(_UP_VOTES, p=(0.7, 0.2, 0.1)))
        down = int(votes.random() < 0.15)
        file_name = f"common_voice_{speaker.language}_{number}.wav"
        clips.append(_Clip(file_name, sentence, up, down))
    return clips


def _row(seed: int, speaker: Speaker, clip: _Clip) -> tuple[str, ...]:
    return (
        client_id(seed, speaker),
        clip.file_name,
        clip.sentence,
        str(clip.up_votes),
        str(clip.down_votes),
        speaker.age,
        speaker.gender,
        ACCENTS.get(speaker.voice, ""),
        speaker.language,
        "",
    )


def tsv_text(rows: Sequence[Sequence[str]]) -> str:
    """A Common Voice TSV: the `TSV_COLUMNS` header, then tab-joined rows, no quoting.

    Common Voice never quotes a field, so a field must not hold a tab, a line break or
    a double quote (which a default CSV reader would take for a quote).
    """
    lines = ["\t".join(TSV_COLUMNS)]
    for row in rows:
        if len(row) != len(TSV_COLUMNS):
            raise ValueError(f"a TSV row needs {len(TSV_COLUMNS)} fields, got {row!r}")
        for field in row:
            if any(char in field for char in '\t\n\r"'):
                raise ValueError(f"TSV field {field!r} holds a tab, line break or double quote")
        lines.append("\t".join(row))
    return "\n".join(lines) + "\n"


def _holdout_noise_bank(
    seed: int, espeak: Espeak, holdout_variants: Sequence[str]
) -> dict[str, np.ndarray]:
    """Unit-RMS noises of every `shift.NOISE_KINDS`, `_BANK_SECONDS` long.

    The crowd talks in holdout voices and only says words no corpus sentence holds, so a
    background talker never says part of the transcript.
    """
    spoken = {
        word.strip(".,!?'").lower() for sentence in SENTENCES["en"] for word in sentence.split()
    }
    vocabulary = [word for word in CROWD_VOCABULARY if word not in spoken]
    crowd = partial(
        crowd_babble,
        espeak=espeak,
        accents=english_voices().accents,
        variants=sorted(set(holdout_variants)),
        vocabulary=vocabulary,
    )
    return noise_bank(
        np.random.default_rng([seed, _HOLDOUT_NOISE]),
        round(_BANK_SECONDS * SAMPLE_RATE),
        SAMPLE_RATE,
        NOISE_KINDS,
        crowd=crowd,
    )


def _record(
    folder: Path,
    speaker: Speaker,
    clips: Sequence[_Clip],
    seed: int,
    espeak: Espeak,
    advance: Callable[[], object],
    bank: dict[str, np.ndarray] | None = None,
) -> None:
    """Write `speaker`'s clips into `folder`; with a noise `bank` (holdout speakers), each
    is then recorded under conditions `draw_recording` draws from `HOLDOUT_CONDITIONS`."""
    espeak.reset()
    key = _speaker_key(speaker)
    tone = room_tone(
        np.random.default_rng([seed, _ROOM_TONE, *key]), speaker.noise_exponent, SAMPLE_RATE
    )
    for number, clip in enumerate(clips):
        rng = np.random.default_rng([seed, _CLIP, *key, number])
        audio = _speak_sentence(espeak, speaker, clip.sentence, tone, rng)
        if bank is not None:
            recording_rng = np.random.default_rng([seed, _HOLDOUT_RECORDING, *key, number])
            recording = draw_recording(recording_rng, sorted(bank), HOLDOUT_CONDITIONS)
            audio = record_holdout_clip(
                audio, recording, bank, recording_rng, SAMPLE_RATE, max_peak=_HOLDOUT_MAX_PEAK
            )
        write_wav(folder / clip.file_name, audio)
        advance()


def _speak_sentence(
    espeak: Espeak, speaker: Speaker, sentence: str, tone: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """`sentence` in the speaker's voice (shifted, if they have a `shift`), padded with
    0.1-0.4 s of silence either side, over their room `tone` 25-40 dB below the speech.

    Pitch, rate and range jitter a little per clip; a clip that would run past
    `MAX_CLIP_SECONDS` is said again faster.
    """
    pitch = int(np.clip(speaker.pitch + rng.integers(-5, 6), 0, 100))
    rate = int(np.clip(round(speaker.rate * rng.uniform(0.93, 1.07)), 80, 450))
    pitch_range = int(np.clip(round(speaker.pitch_range * rng.uniform(0.85, 1.15)), 0, 100))
    before, after = float(rng.uniform(0.1, 0.4)), float(rng.uniform(0.1, 0.4))
    budget = round((MAX_CLIP_SECONDS - before - after) * SAMPLE_RATE) - 2
    synth_seed = int(rng.integers(0, 2**31))
    for _ in range(_RESPEAK_TRIES):
        speech = trim_silence(
            espeak.speak(
                sentence,
                voice=speaker.voice,
                variant=speaker.variant,
                rate=rate,
                pitch=pitch,
                pitch_range=pitch_range,
                seed=synth_seed,
            ).astype(np.float64)
        )
        if speaker.shift is not None and len(speech):
            speech = shift_voice(speech, speaker.shift, rng, SAMPLE_RATE)
        if len(speech) <= budget or rate == 450:
            break
        rate = min(450, math.ceil(rate * len(speech) / budget * 1.05))
    if len(speech) > budget:
        raise RuntimeError(f"{sentence!r} does not fit in {MAX_CLIP_SECONDS} s with {speaker}")
    peak = float(np.max(np.abs(speech))) if len(speech) else 0.0
    if peak == 0.0:
        raise RuntimeError(f"espeak-ng produced no sound for {sentence!r} with {speaker}")
    target_db = min(rng.uniform(-20.0, -3.0) + speaker.level_db, -1.0)
    speech = speech * (10 ** (target_db / 20) / peak)
    padded = np.concatenate(
        [np.zeros(round(before * SAMPLE_RATE)), speech, np.zeros(round(after * SAMPLE_RATE))]
    )
    noise_db = 20 * np.log10(speech_rms(speech)) - rng.uniform(25.0, 40.0)
    return add_room_tone(padded, tone, rng, noise_db)
