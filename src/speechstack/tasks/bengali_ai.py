"""Bengali.AI Speech Recognition (Kaggle, 2023), the competition layout::

    <data_dir>/train.csv               id, sentence, split (train | valid)
    <data_dir>/train_mp3s/<id>.mp3
    <data_dir>/test_mp3s/<id>.mp3
    <data_dir>/sample_submission.csv   id, sentence (the test ids, in submission order)

A transcript task (``TranscriptTask``): ``split`` train rows train, valid rows choose the
best epoch (``dev_limit`` keeps the first N by id: the real valid split holds ~34,000
clips), and the test clips, which have no sentences, are transcribed into the submission
(``id,sentence``, scored by word error rate). The corpus names no speakers: each clip is its
own group. A missing file or column, an unknown split or a missing clip is an error naming
the file and line.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from speechstack.params.tasks import BengaliAIParams
from speechstack.tasks import TASKS, DatasetError, TranscriptTask, transcript_frame
from speechstack.tasks.manifest import read_sheet

SPLITS = {"train": "train", "valid": "dev"}


@TASKS.register("bengali_ai")
class BengaliAI(TranscriptTask):
    params_schema = BengaliAIParams
    params: BengaliAIParams

    def __init__(self, data_dir: Path, params: BengaliAIParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self.train_csv = self.data_dir / "train.csv"
        self.sample_csv = self.data_dir / "sample_submission.csv"

    def report_columns(self) -> list[str]:
        return []

    def _read(self, path: Path, columns: tuple[str, ...]) -> pl.DataFrame:
        table = read_sheet(path, missing="missing file (Bengali.AI layout)")
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing} (has {table.columns})")
        return table

    def _split(self, name: str) -> pl.DataFrame:
        table = self._read(self.train_csv, ("id", "sentence", "split"))
        rows: dict[str, list] = {"fname": [], "path": [], "group": [], "sentence": []}
        for line, row in enumerate(table.iter_rows(named=True), start=2):
            split = (row["split"] or "").strip()
            if split not in SPLITS:
                raise DatasetError(f"{self.train_csv}, line {line}: split {split!r} is not "
                                   f"train or valid")  # fmt: skip
            if SPLITS[split] != name:
                continue
            clip_id, sentence = (row["id"] or "").strip(), (row["sentence"] or "").strip()
            if not clip_id or not sentence:
                raise DatasetError(f"{self.train_csv}, line {line}: empty id or sentence")
            rows["fname"].append(clip_id)
            rows["path"].append(self._clip("train_mp3s", clip_id, self.train_csv, line))
            rows["group"].append(f"clip:{clip_id}")
            rows["sentence"].append(sentence)
        if not rows["fname"]:
            raise DatasetError(f"{self.train_csv}: no {name} rows")
        frame = transcript_frame(rows)
        if name == "dev" and self.params.dev_limit is not None:
            frame = frame.head(self.params.dev_limit)
        return frame

    def _clip(self, folder: str, clip_id: str, listed_in: Path, line: int) -> str:
        clip = self.data_dir / folder / f"{clip_id}.mp3"
        if not clip.is_file():
            raise DatasetError(f"{listed_in}, line {line}: clip {clip} not found")
        return str(clip.resolve())

    def train_manifest(self) -> pl.DataFrame:
        return self._split("train")

    def dev_manifest(self) -> pl.DataFrame:
        return self._split("dev")

    def test_manifest(self) -> pl.DataFrame:
        """The clips of ``sample_submission.csv``, without sentences."""
        table = self._read(self.sample_csv, ("id",))
        ids = [(value or "").strip() for value in table["id"]]
        paths = [
            self._clip("test_mp3s", clip_id, self.sample_csv, line)
            for line, clip_id in enumerate(ids, start=2)
        ]
        return transcript_frame({"fname": ids, "path": paths, "group": [f"clip:{i}" for i in ids]})

    def sample_submission(self) -> Path | None:
        return self.sample_csv if self.sample_csv.is_file() else None

    def solution(self) -> Path | None:
        """The demo's answer key (``id,sentence``; the real competition has none)."""
        path = self.data_dir / "demo_solution.csv"
        return path if path.is_file() else None
