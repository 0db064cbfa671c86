"""Classification reports: the numbers on a constructed case, the files, the errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.report import summarise, with_manifest, write_report

LABELS = ["angry", "happy", "sad"]


def predictions(truth: list[str], predicted: list[str], gender: list[str]) -> pl.DataFrame:
    probabilities = np.full((len(truth), 3), 0.1)
    for row, label in enumerate(predicted):
        probabilities[row, LABELS.index(label)] = 0.8
    return pl.DataFrame(
        {
            "fname": [f"c{i}" for i in range(len(truth))],
            "label": truth,
            **{label: probabilities[:, i] for i, label in enumerate(LABELS)},
            "gender": gender,
        }
    )


CASE = predictions(
    truth=["angry", "angry", "angry", "happy", "happy", "sad"],
    predicted=["angry", "angry", "happy", "happy", "sad", "sad"],
    gender=["male", "female", "male", "female", "male", "female"],
)


def test_summary_numbers_match_a_hand_count() -> None:
    summary = summarise(CASE, LABELS, ["gender"])
    assert summary["accuracy"] == pytest.approx(4 / 6)
    assert summary["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    angry = summary["classes"]["angry"]
    assert (angry["precision"], angry["recall"], angry["support"]) == (1.0, pytest.approx(2 / 3), 3)
    happy = summary["classes"]["happy"]
    assert happy["precision"] == 0.5 and happy["recall"] == 0.5
    assert summary["averages"]["macro"]["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert summary["uar"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)  # every class occurs
    by_gender = {row["value"]: row for row in summary["groups"]["gender"]}
    assert by_gender["male"]["clips"] == 3 and by_gender["male"]["accuracy"] == pytest.approx(1 / 3)
    assert by_gender["female"]["accuracy"] == 1.0
    assert summary["groups"]["gender"][0]["value"] == "male"  # worst first


def test_uar_averages_the_recall_of_the_classes_that_occur() -> None:
    """UAR weighs every emotion alike, whatever its count, and ignores a class absent from
    the truth (sklearn's macro recall would count it as 0)."""
    imbalanced = predictions(
        truth=["angry"] * 8 + ["happy"] * 2,
        predicted=["angry"] * 8 + ["angry", "happy"],
        gender=["male"] * 10,
    )
    summary = summarise(imbalanced, LABELS, [])
    assert summary["accuracy"] == pytest.approx(0.9)
    assert summary["uar"] == pytest.approx((1.0 + 0.5) / 2)  # sad never occurs
    assert summary["averages"]["macro"]["recall"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_write_report_writes_markdown_png_and_json(tmp_path: Path) -> None:
    write_report(tmp_path / "run", "demo / cnn", CASE, LABELS, ["gender", "absent"])
    text = (tmp_path / "run" / "report.md").read_text()
    assert "accuracy **0.6667**, UAR 0.7222" in text
    assert "| **angry** | 2 | 1 | 0 |" in text
    assert "## Accuracy by gender (worst first)" in text and "absent" not in text
    assert (tmp_path / "run" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "run").glob("*.tmp*"))


def test_unknown_true_labels_and_unmatched_clips_are_errors() -> None:
    with pytest.raises(ValueError, match="not among the task's labels"):
        summarise(CASE.with_columns(pl.lit("bored").alias("label")), LABELS, [])
    manifest = CASE.select("fname", "label", "gender").head(3)
    with pytest.raises(ValueError, match="not in the task's manifest"):
        with_manifest(CASE.drop("label", "gender"), manifest, ["gender"])
