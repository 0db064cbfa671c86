"""Transcript normalisation and the CTC character vocabulary (speechstack.text): settings,
token order, exact Bengali and French round trips, greedy CTC decoding, the saved file."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from speechstack.artifacts import ArtifactError
from speechstack.text import TextConfig, Vocabulary, normalise

FRENCH = "L'été à Noël, ça va? Où est-il?"
BENGALI = "আমি বাংলায় গান গাই"
BENGALI_CONJUNCT = "ক্ষুধার্ত"  # ka + virama + ssa, a vowel sign, a reph (ra + virama)
TRAINING = [FRENCH, BENGALI, BENGALI_CONJUNCT, "Peut-être que l'homme viendra.", "hello"]


def test_default_normalisation_keeps_apostrophes_and_hyphens_inside_words() -> None:
    assert normalise(FRENCH) == "l'été à noël ça va où est-il"
    assert normalise("  «Peut-être»   l’homme…  ") == "peut-être l'homme"
    # numbers are left as written: spell them out before normalising (a decimal comma is
    # deleted like any other comma)
    assert normalise("Il a 3 chats, 12,5 kg.") == "il a 3 chats 125 kg"


def test_normalisation_options() -> None:
    keep = TextConfig(lowercase=False, drop="", collapse_spaces=False, replace={})
    assert normalise(" Ça  va? ", keep) == " Ça  va? "
    assert normalise("A-b, c!", TextConfig(drop=",!-")) == "ab c"
    assert normalise("ﬁn ²", TextConfig(unicode_form="NFKC")) == "fin 2"
    assert normalise("é", TextConfig(unicode_form="NFD")) == "e\u0301"
    assert normalise("a\u00a0b\tc\nd") == "a b c d"  # any whitespace, as one space
    with pytest.raises(ValidationError, match="unicode_form"):
        TextConfig(unicode_form="NFX")
    with pytest.raises(ValidationError, match="numbers"):
        TextConfig(numbers="words")  # unknown keys are refused, as in every config section


def test_normalisation_is_idempotent() -> None:
    for text in TRAINING:
        assert normalise(normalise(text)) == normalise(text)


def test_composed_and_decomposed_text_are_one_text() -> None:
    composed, decomposed = "\u00e9t\u00e9", "e\u0301te\u0301"
    assert normalise(composed) == normalise(decomposed) == "été"
    vocabulary = Vocabulary.build([decomposed])  # built from decomposed text: one "é" token
    assert vocabulary.tokens == ("<blank>", "<unk>", "|", "t", "é")
    assert vocabulary.encode(composed) == vocabulary.encode(decomposed) == [4, 3, 4]


def test_vocabulary_order_special_tokens_and_delimiter() -> None:
    vocabulary = Vocabulary.build(["b a", "c|a"])  # a literal "|" is no character of it
    assert vocabulary.tokens == ("<blank>", "<unk>", "|", "a", "b", "c")
    assert (vocabulary.BLANK_ID, vocabulary.UNKNOWN_ID, vocabulary.DELIMITER_ID) == (0, 1, 2)
    assert len(vocabulary) == 6
    assert vocabulary.encode("Ab c") == [3, 4, 2, 5]
    assert Vocabulary.build(["c|a", "b a"]) == vocabulary  # order of transcripts: no matter
    with pytest.raises(ValueError, match="no character"):
        Vocabulary.build(["", " ,. "])


@pytest.mark.parametrize("text", [BENGALI, BENGALI_CONJUNCT, FRENCH, TRAINING[3]])
def test_bengali_and_french_round_trip_exactly(text: str) -> None:
    vocabulary = Vocabulary.build(TRAINING)
    ids = vocabulary.encode(text)
    assert vocabulary.UNKNOWN_ID not in ids
    assert vocabulary.decode(ids) == normalise(text)


def test_bengali_tokens_are_code_points_with_signs_and_virama() -> None:
    vocabulary = Vocabulary.build([BENGALI_CONJUNCT])
    ids = vocabulary.encode(BENGALI_CONJUNCT)
    assert [vocabulary.tokens[i] for i in ids] == list(BENGALI_CONJUNCT)
    assert "\u09cd" in vocabulary.tokens  # the virama is a token
    assert unicodedata.is_normalized("NFC", "".join(vocabulary.tokens[3:]))


def test_unknown_characters_are_unk() -> None:
    vocabulary = Vocabulary.build(["abc"])
    assert vocabulary.encode("a z!") == [3, 2, 1]  # "!" dropped by normalisation
    assert vocabulary.decode([3, 2, 1]) == "a \ufffd"
    with pytest.raises(ValueError, match="-100"):
        vocabulary.decode([3, -100])


def test_ctc_greedy_on_ids() -> None:
    vocabulary = Vocabulary.build(["hello world"])
    h, e, l, o = (vocabulary.tokens.index(c) for c in "helo")  # noqa: E741
    blank, space = vocabulary.BLANK_ID, vocabulary.DELIMITER_ID
    # repeats collapse; a blank between two l's keeps both
    frames = [blank, h, h, e, blank, l, l, blank, l, o, o, blank, space, space]
    assert vocabulary.ctc_greedy(frames) == "hello"  # trailing delimiter tidied away
    assert vocabulary.ctc_greedy([h, e, l, l, o]) == "helo"  # no blank: one l
    assert vocabulary.ctc_greedy([blank, blank]) == ""
    assert vocabulary.ctc_greedy(np.array([o, space, blank, space, o])) == "o o"


def test_ctc_greedy_on_logits() -> None:
    vocabulary = Vocabulary.build(["hello"])
    path = [0, "h", "e", "e", "l", 0, "l", "l", "o", 0]
    ids = [p if p == 0 else vocabulary.tokens.index(p) for p in path]
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(ids), len(vocabulary))).astype(np.float32)
    logits[np.arange(len(ids)), ids] += 10.0  # each frame's best token is the path's
    assert vocabulary.ctc_greedy(logits) == "hello"
    with pytest.raises(ValueError, match="do not match"):
        vocabulary.ctc_greedy(logits[:, :-1])
    with pytest.raises(ValueError, match="one utterance"):
        vocabulary.ctc_greedy(logits[None])


def test_save_load_round_trip_keeps_the_normalisation(tmp_path: Path) -> None:
    config = TextConfig(lowercase=False, drop="?")
    vocabulary = Vocabulary.build(TRAINING, config)
    path = tmp_path / "run" / "vocabulary.json"
    vocabulary.save(path)
    loaded = Vocabulary.load(path)
    assert loaded == vocabulary
    assert loaded.config == config
    assert loaded.encode("Où est-il?") == vocabulary.encode("Où est-il?")
    saved = json.loads(path.read_text())
    assert saved["text"]["lowercase"] is False
    assert {"O", ","} <= set(saved["tokens"])  # case kept, only "?" dropped
    assert [p.name for p in path.parent.iterdir()] == ["vocabulary.json"]  # no temp left


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ('{"format": "speechstack.vocabulary", "tok', "damaged"),
        ('{"model_type": "wav2vec2"}', "not a speechstack vocabulary"),
        (
            '{"format": "speechstack.vocabulary", "version": 1, "text": {},'
            ' "tokens": ["a", "<blank>", "|"]}',
            "not a valid vocabulary",
        ),
        (
            '{"format": "speechstack.vocabulary", "version": 1, "text": {"case": 1},'
            ' "tokens": ["<blank>", "<unk>", "|", "a"]}',
            "not a valid vocabulary",
        ),
        ('{"format": "speechstack.vocabulary", "version": 9, "tokens": []}', "version 9"),
    ],
    ids=["truncated", "foreign", "bad-tokens", "bad-settings", "future-version"],
)
def test_a_damaged_or_foreign_file_is_refused_naming_it(
    tmp_path: Path, content: str, why: str
) -> None:
    path = tmp_path / "vocabulary.json"
    path.write_text(content)
    with pytest.raises(ArtifactError, match=why) as caught:
        Vocabulary.load(path)
    assert str(path) in str(caught.value)
    with pytest.raises(FileNotFoundError, match=r"missing\.json"):
        Vocabulary.load(tmp_path / "missing.json")


def test_the_bengali_danda_is_punctuation() -> None:
    assert normalise("আমি ভাত খাই। তুমি?॥") == "আমি ভাত খাই তুমি"
