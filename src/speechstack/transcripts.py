"""Scoring transcripts: word and character error rates, per utterance, per group and over a
corpus, and the recognition report.

The edit-distance alignment is jiwer's (a maintained, widely used implementation of the
Levenshtein alignment behind WER), so the numbers match other tools that use it. Rates over
several utterances are corpus rates — all errors over all reference words (or characters) —
never a mean of per-utterance rates, in which a one-word utterance would weigh as much as a
long one.

Texts are compared as given, except whitespace: any run of it is one space and the ends are
stripped. Nothing else is normalised here: pass references and hypotheses through
``speechstack.text.normalise`` first, with the settings of the vocabulary. Characters
include the spaces between words.

An empty reference (silence, or a clip with nothing to transcribe) has no word to divide
by: its errors are the inserted words, counted over the corpus's reference words in corpus
rates. Its own rate is its error count over one (a rate of 0 when the hypothesis is empty
too, 2.0 for two hallucinated words) — every rate here is errors / max(reference units, 1),
which equals jiwer's own convention.

A frame of transcripts has one row per utterance, a ``reference`` and a ``hypothesis``
column (a null is an empty text: a CSV's empty field reads as null) and any group columns
(speaker, gender, accent, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jiwer
import polars as pl

from speechstack.artifacts import atomic_write_json, atomic_write_text

REFERENCE = "reference"
HYPOTHESIS = "hypothesis"
Texts = Sequence[str | None] | pl.Series  # one text per utterance; None is an empty text


@dataclass(frozen=True)
class ErrorRates:
    """Corpus error rates and the word-level edit counts behind the WER."""

    wer: float  # (substitutions + deletions + insertions) / words
    cer: float  # character edits / characters
    words: int  # in the references
    characters: int  # in the references, spaces between words included
    substitutions: int  # words
    deletions: int  # words
    insertions: int  # words


def _tidy(texts: Sequence[str | None]) -> list[str]:
    return [" ".join(text.split()) if text else "" for text in texts]


def _rate(errors: int, units: int) -> float:
    return errors / max(units, 1)


def _errors(output: jiwer.WordOutput | jiwer.CharacterOutput) -> list[int]:
    """Edits (substitutions + deletions + insertions) of each utterance of a jiwer
    alignment: an inserted span counts its hypothesis units, any other its reference units."""
    return [
        sum(
            chunk.hyp_end_idx - chunk.hyp_start_idx
            if chunk.type == "insert"
            else chunk.ref_end_idx - chunk.ref_start_idx
            for chunk in chunks
            if chunk.type != "equal"
        )
        for chunks in output.alignments
    ]


def _align(references: Texts, hypotheses: Texts) -> tuple[jiwer.WordOutput, jiwer.CharacterOutput]:
    references, hypotheses = list(references), list(hypotheses)  # a polars Series too
    if len(references) != len(hypotheses):
        raise ValueError(
            f"{len(references)} references but {len(hypotheses)} hypotheses: one of each "
            "per utterance"
        )
    if not references:
        raise ValueError("no utterances to score")
    references, hypotheses = _tidy(references), _tidy(hypotheses)
    return (
        jiwer.process_words(references, hypotheses),
        jiwer.process_characters(references, hypotheses),
    )


def error_rates(references: Texts, hypotheses: Texts) -> ErrorRates:
    """Corpus WER and CER of ``hypotheses`` against ``references`` (one of each per
    utterance, in the same order)."""
    words, characters = _align(references, hypotheses)
    word_count = words.hits + words.substitutions + words.deletions
    character_count = characters.hits + characters.substitutions + characters.deletions
    word_errors = words.substitutions + words.deletions + words.insertions
    character_errors = characters.substitutions + characters.deletions + characters.insertions
    return ErrorRates(
        wer=_rate(word_errors, word_count),
        cer=_rate(character_errors, character_count),
        words=word_count,
        characters=character_count,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
    )


def _require(frame: pl.DataFrame, columns: Sequence[str]) -> None:
    """``frame`` has ``columns``, and its reference and hypothesis columns hold text."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"the transcripts have no column {missing} (they have {frame.columns})")
    for column in (REFERENCE, HYPOTHESIS):
        if column in columns and frame.schema[column] not in (pl.String, pl.Null):
            raise ValueError(
                f"the {column!r} column holds {frame.schema[column]}, not text (transcripts)"
            )


def utterance_rates(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with each utterance's ``wer`` and ``cer`` added, and the counts they come
    from (``words``, ``word_errors``, ``characters``, ``character_errors``; replaced if
    present), in the order of ``frame``."""
    _require(frame, [REFERENCE, HYPOTHESIS])
    words, characters = _align(frame[REFERENCE].to_list(), frame[HYPOTHESIS].to_list())
    word_counts = [len(reference) for reference in words.references]
    character_counts = [len(reference) for reference in characters.references]
    word_errors, character_errors = _errors(words), _errors(characters)
    return frame.with_columns(
        pl.Series("words", word_counts, dtype=pl.Int64),
        pl.Series("word_errors", word_errors, dtype=pl.Int64),
        pl.Series("characters", character_counts, dtype=pl.Int64),
        pl.Series("character_errors", character_errors, dtype=pl.Int64),
        pl.Series("wer", map(_rate, word_errors, word_counts), dtype=pl.Float64),
        pl.Series("cer", map(_rate, character_errors, character_counts), dtype=pl.Float64),
    )


def group_rates(frame: pl.DataFrame, group_columns: str | Sequence[str]) -> pl.DataFrame:
    """Corpus rates per value of ``group_columns`` (per combination when several): the group
    columns, ``utterances``, ``words``, ``wer``, ``cer``; worst WER first (ties in group
    order). A missing group value (null) is a group of its own."""
    columns = [group_columns] if isinstance(group_columns, str) else list(group_columns)
    _require(frame, columns)
    scored = utterance_rates(frame)
    errors = pl.col("word_errors").sum() / pl.max_horizontal(pl.col("words").sum(), 1)
    character_errors = pl.col("character_errors").sum() / pl.max_horizontal(
        pl.col("characters").sum(), 1
    )
    return (
        scored.group_by(columns)
        .agg(
            pl.len().cast(pl.Int64).alias("utterances"),
            pl.col("words").sum().alias("words"),
            errors.cast(pl.Float64).alias("wer"),
            character_errors.cast(pl.Float64).alias("cer"),
        )
        .sort(["wer", *columns], descending=[True, *[False] * len(columns)], nulls_last=True)
    )


def worst_utterances(frame: pl.DataFrame, n: int = 10) -> pl.DataFrame:
    """The ``n`` utterances with the highest WER, ties broken by CER, then by their order in
    ``frame``: every column of ``frame`` with the rates (``utterance_rates``)."""
    if n < 0:
        raise ValueError(f"n = {n}: the number of utterances must be >= 0")
    return utterance_rates(frame).sort(["wer", "cer"], descending=True, maintain_order=True).head(n)


def _cell(value: Any) -> str:
    """A value as a Markdown table cell: ``|`` escaped, line breaks flattened, an empty text
    shown as one (a hypothesis with nothing recognised)."""
    if value is None:
        return "(missing)"
    if value == "":
        return "(empty)"
    if isinstance(value, float):
        return f"{value:.4f}"
    return " ".join(str(value).split()).replace("|", "\\|")


def _scalar_columns(frame: pl.DataFrame) -> list[str]:
    """The columns JSON can hold as they are (text, numbers, booleans)."""
    return [
        name
        for name, dtype in frame.schema.items()
        if dtype == pl.String or dtype.is_numeric() or dtype == pl.Boolean
    ]


def _jsonable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose values JSON holds as they are; any other value (a date, ...) as text."""
    native = (str, int, float, bool, type(None))
    return [
        {key: value if isinstance(value, native) else str(value) for key, value in row.items()}
        for row in rows
    ]


def _markdown(title: str, summary: dict[str, Any]) -> str:
    overall = summary["overall"]
    lines = [
        f"# {title}",
        "",
        f"{summary['utterances']} utterances, {overall['words']} reference words: "
        f"WER **{overall['wer']:.4f}**, CER **{overall['cer']:.4f}** "
        f"({overall['substitutions']} substitutions, {overall['deletions']} deletions, "
        f"{overall['insertions']} insertions)",
    ]
    for column, rows in summary["groups"].items():
        lines += [
            "",
            f"## By {column} (worst WER first)",
            "",
            f"| {_cell(column)} | utterances | words | WER | CER |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {_cell(row[column])} | {row['utterances']} | {row['words']} "
            f"| {row['wer']:.4f} | {row['cer']:.4f} |"
            for row in rows
        ]
    lines += [
        "",
        f"## The {len(summary['worst'])} worst utterances",
        "",
        "| WER | CER | reference | hypothesis |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {row['wer']:.4f} | {row['cer']:.4f} | {_cell(row[REFERENCE])} "
        f"| {_cell(row[HYPOTHESIS])} |"
        for row in summary["worst"]
    ]
    return "\n".join(lines) + "\n"


def write_report(
    frame: pl.DataFrame,
    out_dir: Path,
    group_columns: Sequence[str],
    title: str,
    worst: int = 20,
) -> dict[str, Any]:
    """Write ``report.md`` (overall WER/CER, a table per group column, the ``worst``
    utterances with reference and hypothesis) and ``report.json`` (the same numbers) into
    ``out_dir``, atomically; returns the numbers."""
    _require(frame, [REFERENCE, HYPOTHESIS, *group_columns])
    overall = error_rates(frame[REFERENCE].to_list(), frame[HYPOTHESIS].to_list())
    worst_rows = worst_utterances(frame, worst)
    summary: dict[str, Any] = {
        "title": title,
        "utterances": frame.height,
        "overall": asdict(overall),
        "groups": {
            column: _jsonable(group_rates(frame, column).to_dicts()) for column in group_columns
        },
        "worst": worst_rows.select(_scalar_columns(worst_rows)).to_dicts(),
    }
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", summary)
    atomic_write_text(out_dir / "report.md", _markdown(title, summary))
    return summary
