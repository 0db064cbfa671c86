"""Word and character error rates (speechstack.transcripts) on pairs counted by hand: corpus
rates, per utterance, per group, the worst utterances and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import jiwer
import polars as pl
import pytest

from speechstack.transcripts import (
    ErrorRates,
    error_rates,
    group_rates,
    utterance_rates,
    worst_utterances,
    write_report,
)


@pytest.fixture
def transcripts() -> pl.DataFrame:
    """Four utterances whose edits are counted by hand in the tests."""
    return pl.DataFrame(
        {
            "speaker": ["s1", "s1", "s2", "s3"],
            "gender": ["female", "female", "male", "female"],
            "reference": ["a b c d", "e f", "g h i", "j"],
            "hypothesis": ["a b c d", "e x", "g", "j k"],
        }
    )
    # word edits: none | 1 substitution | 2 deletions | 1 insertion  (10 words, 4 errors)
    # characters: 7, 3, 5, 1 = 16; edits 0, 1, 4 (" h i"), 2 (" k") = 7


def test_substitution_and_insertion_counted_by_hand() -> None:
    rates = error_rates(["the cat sat"], ["the cat sit on"])
    assert rates == ErrorRates(
        wer=2 / 3, cer=4 / 11, words=3, characters=11, substitutions=1, deletions=0, insertions=1
    )  # CER: a -> i, then " on" inserted: 4 edits over 11 characters (spaces count)


def test_deletions_and_whitespace() -> None:
    rates = error_rates(["one two three"], ["one  three "])
    assert (rates.wer, rates.deletions, rates.substitutions, rates.insertions) == (1 / 3, 1, 0, 0)
    assert error_rates([" the\tcat "], ["the cat"]).wer == 0.0  # whitespace runs are one space
    assert error_rates(["a b"], [None]).wer == 1.0  # a null hypothesis is an empty one


def test_corpus_rate_is_not_a_mean_of_utterance_rates() -> None:
    references = ["a", "a b c d e f g h i"]
    hypotheses = ["b", "a b c d e f g h i"]
    assert error_rates(references, hypotheses).wer == pytest.approx(1 / 10)
    frame = utterance_rates(pl.DataFrame({"reference": references, "hypothesis": hypotheses}))
    assert frame["wer"].to_list() == [1.0, 0.0]
    assert frame["wer"].mean() == pytest.approx(0.5)


def test_agrees_with_jiwer_on_a_corpus() -> None:
    references = ["le chat dort", "il pleut sur la ville", "oui", "peut-être demain"]
    hypotheses = ["le chien dort bien", "il pleut la ville", "non", "peut être demain"]
    rates = error_rates(references, hypotheses)
    assert rates.wer == pytest.approx(jiwer.wer(references, hypotheses))
    assert rates.cer == pytest.approx(jiwer.cer(references, hypotheses))


def test_empty_references_count_insertions() -> None:
    rates = error_rates(["", "a b"], ["x y", "a b"])
    assert (rates.wer, rates.insertions, rates.words) == (1.0, 2, 2)  # 2 inserted / 2 words
    frame = utterance_rates(
        pl.DataFrame({"reference": ["", "", None], "hypothesis": ["x y", "", ""]})
    )
    assert frame["wer"].to_list() == [2.0, 0.0, 0.0]  # errors over max(words, 1)
    assert frame["cer"].to_list() == [3.0, 0.0, 0.0]
    assert error_rates([""], [""]).wer == 0.0
    assert error_rates([""], ["x"]).wer == 1.0


def test_mismatched_or_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no utterances"):
        error_rates([], [])
    with pytest.raises(ValueError, match="no column"):
        utterance_rates(pl.DataFrame({"reference": ["a"], "text": ["a"]}))
    with pytest.raises(ValueError, match="not text"):
        utterance_rates(pl.DataFrame({"reference": [1], "hypothesis": ["a"]}))


def test_utterance_rates_by_hand(transcripts: pl.DataFrame) -> None:
    frame = utterance_rates(transcripts)
    assert frame.columns[:4] == transcripts.columns  # the input's columns first, its order
    assert frame["words"].to_list() == [4, 2, 3, 1]
    assert frame["word_errors"].to_list() == [0, 1, 2, 1]
    assert frame["wer"].to_list() == pytest.approx([0.0, 0.5, 2 / 3, 1.0])
    assert frame["cer"].to_list() == pytest.approx([0.0, 1 / 3, 4 / 5, 2.0])
    assert error_rates(transcripts["reference"], transcripts["hypothesis"]).wer == 0.4


def test_group_rates_by_hand(transcripts: pl.DataFrame) -> None:
    by_gender = group_rates(transcripts, "gender")
    assert by_gender.to_dicts() == [  # worst first
        {"gender": "male", "utterances": 1, "words": 3, "wer": 2 / 3, "cer": 4 / 5},
        {"gender": "female", "utterances": 3, "words": 7, "wer": 2 / 7, "cer": 3 / 11},
    ]
    by_speaker = group_rates(transcripts, ["speaker"])
    assert by_speaker["speaker"].to_list() == ["s3", "s2", "s1"]
    assert by_speaker["wer"].to_list() == pytest.approx([1.0, 2 / 3, 1 / 6])
    both = group_rates(transcripts, ["gender", "speaker"])
    assert both.height == 3 and both.columns[:2] == ["gender", "speaker"]
    with pytest.raises(ValueError, match="accent"):
        group_rates(transcripts, "accent")


def test_a_missing_group_value_is_a_group(transcripts: pl.DataFrame) -> None:
    frame = transcripts.with_columns(pl.Series("gender", ["female", None, None, "female"]))
    rows = {row["gender"]: row for row in group_rates(frame, "gender").to_dicts()}
    assert rows[None]["utterances"] == 2
    assert rows[None]["wer"] == pytest.approx(3 / 5)


def test_worst_utterances_order() -> None:
    frame = pl.DataFrame(
        {
            "id": ["fine", "tie-low-cer", "tie-high-cer", "half", "tie-low-cer-2"],
            "reference": ["a b", "abcd", "a", "x y", "abcd"],
            "hypothesis": ["a b", "abce", "b", "x z", "abce"],
        }
    )
    worst = worst_utterances(frame, 4)
    assert worst["id"].to_list() == ["tie-high-cer", "tie-low-cer", "tie-low-cer-2", "half"]
    assert worst["wer"].to_list() == [1.0, 1.0, 1.0, 0.5]
    assert worst["hypothesis"].to_list() == ["b", "abce", "abce", "x z"]
    assert worst_utterances(frame, 10).height == 5


def test_write_report(tmp_path: Path, transcripts: pl.DataFrame) -> None:
    frame = transcripts.with_columns(
        pl.Series("hypothesis", ["a b c d", "e x", "g", "j | k"])  # a "|" in a table cell
    )
    summary = write_report(frame, tmp_path / "report", ["gender", "speaker"], "Demo ASR", worst=2)
    folder = tmp_path / "report"
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "report.md"]
    saved = json.loads((folder / "report.json").read_text())
    assert saved == summary
    assert saved["overall"]["wer"] == pytest.approx(5 / 10)  # "j | k": 2 insertions
    assert saved["utterances"] == 4
    assert [row["gender"] for row in saved["groups"]["gender"]] == ["male", "female"]
    assert [row["reference"] for row in saved["worst"]] == ["j", "g h i"]
    assert saved["worst"][0]["speaker"] == "s3"
    markdown = (folder / "report.md").read_text()
    assert markdown.startswith("# Demo ASR\n")
    assert "WER **0.5000**" in markdown
    assert "| male | 1 | 3 | 0.6667 | 0.8000 |" in markdown
    assert "## By speaker" in markdown
    assert "| 2.0000 | 4.0000 | j | j \\| k |" in markdown
