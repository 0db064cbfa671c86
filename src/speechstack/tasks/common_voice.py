"""Common Voice (Mozilla), the speech-recognition layout::

    <data_dir>/clips/<name>.mp3 (or .wav)
    <data_dir>/train.tsv, dev.tsv, test.tsv   client_id, path, sentence, gender, ... (tab-
                                              separated, unquoted, UTF-8)

A transcript task (``TranscriptTask``): each row is a clip and its ``sentence``. The
corpus's own splits are used (train trains, dev chooses the best epoch, test is the held-out
score); no speaker (``client_id``, the group) is in two splits. ``gender`` (and
``accent``/``accents``, ``age``, ``locale`` where present) are kept for the per-group error
rates.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from speechstack.params.tasks import CommonVoiceParams
from speechstack.tasks import TASKS, DatasetError, TranscriptTask, transcript_frame

SPLITS = ("train", "dev", "test")
REQUIRED = ("client_id", "path", "sentence")
GROUP_COLUMNS = ("gender", "accent", "accents", "age", "locale")  # kept where present


@TASKS.register("common_voice")
class CommonVoice(TranscriptTask):
    params_schema = CommonVoiceParams
    params: CommonVoiceParams

    def __init__(self, data_dir: Path, params: CommonVoiceParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self.clips_dir = self.data_dir / "clips"
        if not self.clips_dir.is_dir():
            raise DatasetError(
                f"{self.clips_dir}: missing folder; expected the Common Voice layout "
                "clips/ + train.tsv, dev.tsv, test.tsv"
            )

    def split(self, name: str) -> pl.DataFrame:
        """The rows of ``<name>.tsv`` as a manifest with ``sentence`` and the group columns;
        a missing file or column, an empty sentence or a missing clip is an error naming
        the file (and the row: the line number in the file)."""
        path = self.data_dir / f"{name}.tsv"
        if not path.is_file():
            raise DatasetError(f"{path}: missing split file (Common Voice layout)")
        try:
            table = pl.read_csv(path, separator="\t", quote_char=None, infer_schema_length=0)
        except (pl.exceptions.ComputeError, OSError) as error:
            raise DatasetError(
                f"{path}: cannot read it as a tab-separated table ({error})"
            ) from error
        missing = [column for column in REQUIRED if column not in table.columns]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing} (has {table.columns})")
        if self.params.locale is not None and "locale" in table.columns:
            table = table.filter(pl.col("locale") == self.params.locale)
        rows: dict[str, list] = {column: [] for column in ("fname", "path", "group", "sentence")}
        extra = [column for column in GROUP_COLUMNS if column in table.columns]
        for column in extra:
            rows[column] = []
        for line, row in enumerate(table.iter_rows(named=True), start=2):
            name, sentence = (row["path"] or "").strip(), (row["sentence"] or "").strip()
            if not name or not sentence or not (row["client_id"] or "").strip():
                raise DatasetError(f"{path}, line {line}: empty client_id, path or sentence")
            clip = self.clips_dir / name
            if not clip.is_file():
                raise DatasetError(f"{path}, line {line}: clip {clip} not found")
            rows["fname"].append(name)
            rows["path"].append(str(clip.resolve()))
            rows["group"].append(row["client_id"].strip())
            rows["sentence"].append(sentence)
            for column in extra:
                rows[column].append(row[column] or "unknown")
        if not rows["fname"]:
            raise DatasetError(
                f"{path}: no rows"
                + (f" of locale {self.params.locale!r}" if self.params.locale else "")
            )
        return transcript_frame(rows)

    def train_manifest(self) -> pl.DataFrame:
        return self.split("train")

    def dev_manifest(self) -> pl.DataFrame:
        return self.split("dev")

    def test_manifest(self) -> pl.DataFrame:
        return self.split("test")

    def no_sample_submission_reason(self) -> str:
        return "Common Voice is scored by WER/CER on test.tsv, not by a submission file"
