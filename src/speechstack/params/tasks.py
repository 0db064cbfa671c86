"""``task.params`` of every task, registered by task name in ``TASK_PARAMS``
(``speechstack.params``): the schemas only, so a config validates without importing the
readers (``speechstack.tasks``), which read a dataset with these params.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from speechstack.config import Strict
from speechstack.params import TASK_PARAMS


@TASK_PARAMS.register("bengali_ai")
class BengaliAIParams(Strict):
    dev_limit: int | None = Field(None, ge=1)  # valid clips kept (the first N by id; null: all)


@TASK_PARAMS.register("common_voice")
class CommonVoiceParams(Strict):
    locale: str | None = None  # keep one locale's rows (a multi-locale folder); null: all


@TASK_PARAMS.register("crema_d")
@TASK_PARAMS.register("ravdess")
class EmotionParams(Strict):
    """``task.params`` of the acted-emotion corpora (RAVDESS, CREMA-D)."""

    emotions: list[str] | None = Field(None, min_length=2)  # a subset to keep (null: all)


class SheetParams(Strict):
    """Where a sheet task's (``manifest``, ``transcript_manifest``) clips are listed."""

    file: str = "manifest.csv"  # the sheet, relative to data_dir (.csv, .tsv, .xlsx)
    sheet: str | None = None  # Excel: worksheet name (null = the first)
    path_column: str = "path"


@TASK_PARAMS.register("manifest")
class ManifestParams(SheetParams):
    label_column: str = "label"
    speaker_column: str | None = "speaker"  # null: no speakers (each clip its own group)
    transcript_column: str | None = None  # kept as column `transcript`
    group_columns: list[str] = Field(default_factory=list)  # extra report break-downs
    labels: list[str] | None = Field(None, min_length=2)  # label order (null: sorted)

    @model_validator(mode="after")
    def _distinct_labels(self) -> ManifestParams:
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be distinct (got {self.labels})")
        return self


@TASK_PARAMS.register("speech_commands")
class SpeechCommandsParams(Strict):
    label_mode: Literal["labels", "words"] = "labels"  # train on 12 labels or on every word
    unknown_class: bool = False  # words: one more class, `unknown`, that no word folder
    #   feeds: train.synthetic_unknown's non-words teach it (unseen words' landing place)
    unknown_ratio: float | None = Field(1.0, gt=0)  # unknown clips *scored* (in the folds,
    #   validated, stacked) = ratio x mean clips per command word; the others are kept as
    #   training-only clips (None: every unknown clip is scored)
    silence_clips: int | None = Field(None, ge=0)  # None = mean clips per command word
    seed: int = 0  # for choosing the scored unknown clips and the silence offsets


@TASK_PARAMS.register("transcript_manifest")
class TranscriptManifestParams(SheetParams):
    sentence_column: str = "sentence"
    speaker_column: str | None = "speaker"  # null: none (each clip its own group)
    split_column: str = "split"  # used when the sheet has it (train / dev|valid / test)
    group_columns: list[str] = Field(default_factory=lambda: ["gender"])  # those present
    #   are kept for the per-group error rates
    dev_fraction: float = Field(0.1, gt=0, lt=1)  # of the speakers, without a split column
    seed: int = 0  # which speakers are dev, without a split column
