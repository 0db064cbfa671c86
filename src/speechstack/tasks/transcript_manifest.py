"""Any transcribed audio listed in a CSV, TSV or Excel sheet: speech recognition on a corpus
of one's own.

::

    <data_dir>/<file>            manifest.csv / .tsv / .xlsx: one row per clip
    <data_dir>/<paths in it>     audio files (wav, flac, mp3, ...), relative to the sheet

The sheet needs a path column and a sentence column (names configurable). A speaker column
keeps each speaker in one split; ``group_columns`` (gender, accent, ...) are carried along
for the per-group error rates. Splits: the sheet's own ``split`` column when it has one
(``train``; ``dev``, ``valid`` or ``validation``; ``test``), else a share of the speakers
(``dev_fraction``, drawn with ``seed``) is held out as dev and there is no test split.
Paths are resolved relative to the sheet and refused if they leave its folder.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl

from speechstack.params.tasks import TranscriptManifestParams
from speechstack.tasks import TASKS, DatasetError, TranscriptTask, transcript_frame
from speechstack.tasks.manifest import RESERVED, read_sheet, resolve_audio

SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "test": "test"}


@TASKS.register("transcript_manifest")
class TranscriptManifest(TranscriptTask):
    params_schema = TranscriptManifestParams
    params: TranscriptManifestParams

    def __init__(self, data_dir: Path, params: TranscriptManifestParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self.sheet_path = self.data_dir / params.file
        self.frame = self._read()

    def report_columns(self) -> list[str]:
        return [*self._groups(), "group"]

    def _groups(self) -> list[str]:
        return [c for c in self.params.group_columns if c in self.frame.columns]

    def _read(self) -> pl.DataFrame:
        """Every row of the sheet as a transcript manifest with a ``split`` column."""
        path, params = self.sheet_path, self.params
        table = read_sheet(path, params.sheet)
        wanted = [params.path_column, params.sentence_column, params.speaker_column]
        missing = [c for c in wanted if c and c not in table.columns]
        if missing:
            raise DatasetError(
                f"{path}: missing columns {missing}; the sheet has {table.columns} "
                "(set task.params.path_column / sentence_column / speaker_column)"
            )
        clashing = sorted(set(params.group_columns) & (RESERVED | {"sentence", "split"}))
        if clashing:
            raise DatasetError(f"group_columns {clashing} clash with manifest columns; rename them")
        if table.is_empty():
            raise DatasetError(f"{path}: the manifest has no rows")
        has_split = params.split_column in table.columns
        groups = [c for c in params.group_columns if c in table.columns]
        rows: dict[str, list] = {k: [] for k in ("fname", "path", "group", "sentence", "split")}
        rows.update({column: [] for column in groups})
        for number, row in enumerate(table.iter_rows(named=True), start=1):
            relative = (row[params.path_column] or "").strip()
            sentence = (row[params.sentence_column] or "").strip()
            if not relative or not sentence:
                raise DatasetError(f"{path}: row {number}: empty path or sentence")
            speaker = (row[params.speaker_column] or "").strip() if params.speaker_column else ""
            if params.speaker_column and not speaker:
                raise DatasetError(f"{path}: row {number}: empty {params.speaker_column!r}")
            split = "train"
            if has_split:
                value = (row[params.split_column] or "").strip().lower()
                if value not in SPLIT_NAMES:
                    raise DatasetError(
                        f"{path}: row {number}: split {value!r} is none of {sorted(SPLIT_NAMES)}"
                    )
                split = SPLIT_NAMES[value]
            rows["fname"].append(relative)
            rows["path"].append(str(resolve_audio(path, relative, number)))
            rows["group"].append(speaker or f"clip:{relative}")
            rows["sentence"].append(sentence)
            rows["split"].append(split)
            for column in groups:
                rows[column].append(row[column] or "unknown")
        frame = transcript_frame(rows)
        repeated = frame.filter(pl.col("fname").is_duplicated())
        if not repeated.is_empty():
            raise DatasetError(f"{path}: {repeated['fname'][0]!r} is listed more than once")
        if not has_split:
            frame = frame.with_columns(
                pl.when(pl.col("group").is_in(self._dev_speakers(frame["group"])))
                .then(pl.lit("dev"))
                .otherwise(pl.col("split"))
                .alias("split")
            )
        return frame

    def _dev_speakers(self, groups: pl.Series) -> list[str]:
        speakers = sorted(set(groups.to_list()))
        count = max(1, math.ceil(self.params.dev_fraction * len(speakers)))
        if count >= len(speakers):
            raise DatasetError(
                f"{self.sheet_path}: {len(speakers)} speaker(s): too few to hold out "
                f"{self.params.dev_fraction:.0%} as dev and train on the rest"
            )
        order = np.random.default_rng(self.params.seed).permutation(len(speakers))
        return [speakers[i] for i in order[:count]]

    def _split(self, name: str) -> pl.DataFrame:
        return self.frame.filter(pl.col("split") == name).drop("split")

    def train_manifest(self) -> pl.DataFrame:
        frame = self._split("train")
        if frame.is_empty():
            raise DatasetError(f"{self.sheet_path}: no training rows")
        return frame

    def dev_manifest(self) -> pl.DataFrame:
        frame = self._split("dev")
        if frame.is_empty():
            raise DatasetError(
                f"{self.sheet_path}: no dev rows (split {self.params.split_column!r} has no "
                "dev/valid value; leave the column out to hold out speakers instead)"
            )
        return frame

    def test_manifest(self) -> pl.DataFrame | None:
        frame = self._split("test")
        return None if frame.is_empty() else frame
