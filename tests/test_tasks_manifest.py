"""The manifest task (sentiment and any labelled audio): CSV and Excel sheets, configurable
columns, speaker groups, path-escape refusal, and clear errors naming the row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from speechstack.config import TaskConfig
from speechstack.tasks import DatasetError, create_task

TONE = 0.1 * np.sin(np.linspace(0, 400 * np.pi, 8000))


@pytest.fixture
def corpus(tmp_path: Path, write_wav) -> Path:
    """sheet/ with clips/<speaker>/<n>.wav and a manifest.csv of 8 rows (2 speakers)."""
    root = tmp_path / "sheet"
    rows = []
    for speaker in ("s1", "s2"):
        for index in range(4):
            write_wav(root / "clips" / speaker / f"{index}.wav", TONE, 16000)
            label = "positive" if index % 2 else "negative"
            rows.append((f"clips/{speaker}/{index}.wav", label, speaker, f"text {index}", "en"))
    pl.DataFrame(rows, schema=["path", "label", "speaker", "transcript", "language"],
                 orient="row").write_csv(root / "manifest.csv")  # fmt: skip
    return root


def manifest_task(root: Path, **params):
    return create_task(TaskConfig(name="manifest", data_dir=root, params=params))


def test_csv_manifest_gives_labels_groups_and_extra_columns(corpus: Path) -> None:
    task = manifest_task(corpus, transcript_column="transcript", group_columns=["language"])
    assert task.labels == ["negative", "positive"]
    manifest = task.train_manifest()
    assert manifest.height == 8
    row = manifest.filter(pl.col("fname") == "clips/s2/1.wav").row(0, named=True)
    assert (row["label"], row["group"], row["transcript"], row["language"]) == (
        "positive", "s2", "text 1", "en",
    )  # fmt: skip
    assert Path(row["path"]) == (corpus / "clips/s2/1.wav").resolve()
    assert task.report_columns() == ["language", "group"]


def test_excel_manifest_with_other_column_names(corpus: Path) -> None:
    import openpyxl

    table = pl.read_csv(corpus / "manifest.csv")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = "clips"
    sheet.append(["file", "sentiment", "who"])
    for path, label, speaker in table.select("path", "label", "speaker").iter_rows():
        sheet.append([path, label, speaker])
    book.save(corpus / "sheet.xlsx")
    task = manifest_task(corpus, file="sheet.xlsx", sheet="clips", path_column="file",
                         label_column="sentiment", speaker_column="who",
                         labels=["positive", "negative"])  # fmt: skip
    assert task.labels == ["positive", "negative"]
    manifest = task.train_manifest()
    assert manifest.height == 8 and set(manifest["group"]) == {"s1", "s2"}


def test_without_a_speaker_column_every_clip_is_its_own_group(corpus: Path) -> None:
    manifest = manifest_task(corpus, speaker_column=None).train_manifest()
    assert manifest["group"].n_unique() == manifest.height


@pytest.mark.parametrize("escape", ["../outside.wav", "clips/../../outside.wav", "ABSOLUTE"])
def test_paths_leaving_the_sheet_folder_are_refused(corpus: Path, write_wav, escape: str) -> None:
    outside = write_wav(corpus.parent / "outside.wav", TONE, 16000)
    path = str(outside) if escape == "ABSOLUTE" else escape
    table = pl.read_csv(corpus / "manifest.csv")
    table = pl.concat([table, table.head(1).with_columns(pl.lit(path).alias("path"))])
    table.write_csv(corpus / "manifest.csv")
    with pytest.raises(DatasetError, match="leaves the manifest's folder") as error:
        manifest_task(corpus).train_manifest()
    assert "row 9" in str(error.value) and "manifest.csv" in str(error.value)


def test_symlink_escaping_the_folder_is_refused(corpus: Path, write_wav) -> None:
    outside = write_wav(corpus.parent / "elsewhere" / "x.wav", TONE, 16000)
    (corpus / "clips" / "link.wav").symlink_to(outside)
    table = pl.read_csv(corpus / "manifest.csv")
    table = pl.concat([table, table.head(1).with_columns(pl.lit("clips/link.wav").alias("path"))])
    table.write_csv(corpus / "manifest.csv")
    with pytest.raises(DatasetError, match="leaves the manifest's folder"):
        manifest_task(corpus).train_manifest()


def first_row(table: pl.DataFrame, column: str, value: str | None) -> pl.DataFrame:
    first = pl.int_range(pl.len()) == 0
    return table.with_columns(
        pl.when(first).then(pl.lit(value, pl.String)).otherwise(pl.col(column)).alias(column)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop("label"), "missing columns \\['label'\\]"),
        (lambda t: first_row(t, "path", "clips/none.wav"), "row 1: audio file"),
        (lambda t: first_row(t, "label", None), "row 1: empty 'label'"),
        (lambda t: pl.concat([t, t.head(1)]), "row 1: 'clips/s1/0.wav' is listed more than once"),
        (lambda t: t.with_columns(pl.lit("positive").alias("label")), "at least two labels"),
        (lambda t: t.head(0), "no rows"),
    ],
    ids=["no-label-column", "missing-file", "empty-label", "duplicate", "one-label", "empty"],
)
def test_bad_manifests_name_the_sheet_and_the_problem(corpus: Path, change, message) -> None:
    change(pl.read_csv(corpus / "manifest.csv")).write_csv(corpus / "manifest.csv")
    with pytest.raises(DatasetError, match=message) as error:
        manifest_task(corpus).train_manifest()
    assert "manifest.csv" in str(error.value)


def test_labels_outside_the_declared_ones_are_refused(corpus: Path) -> None:
    with pytest.raises(DatasetError, match=r"label 'positive' is not in task\.params\.labels"):
        manifest_task(corpus, labels=["negative", "neutral"])
    with pytest.raises(DatasetError, match="manifest not found"):
        manifest_task(corpus, file="missing.csv")
