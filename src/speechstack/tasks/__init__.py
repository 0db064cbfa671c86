"""Task readers: one module per dataset layout, one registry.

A task turns a dataset folder into manifests (polars frames, one row per clip) with the
columns every later stage relies on:

=========  ===================================================================
fname      unique clip id, as the submission / folds file spell it
path       absolute path of the audio file
start      seconds into the file where the clip starts
duration   seconds to read (null = the whole file)
gain_db    gain applied after decoding (silence cut from noise files at levels)
label      the task's label (what is scored and submitted)
target     the class the model is trained on (= label, or a finer class)
group      who spoke it (speaker/actor); folds never split a group
=========  ===================================================================

An optional boolean ``scored`` column marks the clips that are folded, validated and
stacked; clips with ``scored`` false only train (every fold whose validation side does not
hold their group), so a task can use every clip without skewing the CV's label mix.

The test manifest has ``fname``, ``path``, ``start``, ``duration``, ``gain_db``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from speechstack.config import Strict, TaskConfig, validate_params
from speechstack.params import TASK_PARAMS, bind_params
from speechstack.params.tasks import EmotionParams as EmotionParams  # crema_d, ravdess
from speechstack.registry import Registry, import_submodules

MANIFEST_COLUMNS = ["fname", "path", "start", "duration", "gain_db", "label", "target", "group"]
TEST_COLUMNS = ["fname", "path", "start", "duration", "gain_db"]


class DatasetError(ValueError):
    """The dataset folder does not match the task's layout; the message names the path."""


class Task(ABC):
    """A dataset layout: how to read it, its label space, its submission format."""

    params_schema: ClassVar[type[Strict]]  # the schema speechstack.params registers for it

    def __init__(self, data_dir: Path, params: Strict) -> None:
        self.data_dir = Path(data_dir)
        self.params = params
        if not self.data_dir.is_dir():
            raise DatasetError(
                f"{self.data_dir}: dataset folder not found (set task.data_dir, or DATA=...)"
            )

    @property
    @abstractmethod
    def labels(self) -> list[str]:
        """The label space that is scored and submitted, in column order."""

    def classes(self) -> list[str]:
        """The classes the model is trained on (default: the labels)."""
        return self.labels

    def class_to_label(self) -> np.ndarray:
        """(n_classes, n_labels) 0/1 matrix: label probabilities = class probabilities @ it."""
        return np.eye(len(self.labels), dtype=np.float32)

    @abstractmethod
    def train_manifest(self) -> pl.DataFrame:
        """Labelled clips (MANIFEST_COLUMNS plus task-specific ones), deterministic."""

    def test_manifest(self) -> pl.DataFrame | None:
        """Unlabelled clips to predict for the submission, or None if the layout has none."""
        return None

    def noise_files(self) -> list[Path]:
        """Background-noise recordings for augmentation (may be empty)."""
        return []

    def sample_submission(self) -> Path | None:
        """The competition's sample submission, used to validate ours."""
        return None

    def no_sample_submission_reason(self) -> str:
        """Why ``sample_submission()`` is None (said when a submission is not checked
        against one)."""
        return "the task has no sample submission"

    def solution(self) -> Path | None:
        """An answer key for the test set (demo data only), to score a submission."""
        return None

    def conditions(self) -> Path | None:
        """What each test clip holds (demo data only: voice, SNR, room, channel, word
        kind), to break the test accuracy down by condition."""
        return None

    def report_columns(self) -> list[str]:
        """Manifest columns the reports break accuracy down by (speaker, gender, ...)."""
        return ["group"]

    @classmethod
    def speaker_of(cls, fname: str) -> str | None:
        """The speaker of a clip outside the training manifest (test, prediction folder),
        read from its file name where the layout carries one, spelled as the training
        manifest's ``group``; None where it does not (per-speaker statistics then fall back
        to the training side's)."""
        return None

    @classmethod
    def speakers_of(cls, fnames: Iterable[str]) -> list[str | None]:
        """``speaker_of`` of each file name."""
        return [cls.speaker_of(fname) for fname in fnames]


class TaskRegistry(Registry[type[Task]]):
    """``TASKS``: registering a task also ties its name to its ``params_schema`` in
    ``speechstack.params.TASK_PARAMS``, where a config's ``task.params`` are validated
    (checked against the built-in schema, or added for a task defined elsewhere)."""

    def register(self, name: str) -> Callable[[type[Task]], type[Task]]:
        add = super().register(name)

        def decorator(task: type[Task]) -> type[Task]:
            add(task)
            bind_params(TASK_PARAMS, name, task.params_schema)
            return task

        return decorator


TASKS: Registry[type[Task]] = TaskRegistry("task")


def create_task(config: TaskConfig) -> Task:
    cls = TASKS.get(config.name)
    params = validate_params(cls.params_schema, config.params, f"task '{config.name}'", "task")
    return cls(config.data_dir, params)


WHOLE_FILE = {"start": 0.0, "duration": None, "gain_db": 0.0}  # a clip that is its file


def manifest_frame(rows: dict[str, list[Any]], columns: list[str]) -> pl.DataFrame:
    """Build a manifest with the standard column types, in a stable row order. ``start``,
    ``duration`` and ``gain_db`` left out (or left empty) mean the whole file, as read."""
    count = len(rows["fname"])
    rows = {**rows}
    for column, value in WHOLE_FILE.items():
        if not rows.get(column):
            rows[column] = [value] * count
    schema: dict[str, Any] = {
        "fname": pl.String,
        "path": pl.String,
        "start": pl.Float64,
        "duration": pl.Float64,
        "gain_db": pl.Float64,
        "label": pl.String,
        "target": pl.String,
        "group": pl.String,
    }
    frame = pl.DataFrame(rows, schema_overrides={c: t for c, t in schema.items() if c in rows})
    ordered = columns + [c for c in frame.columns if c not in columns]
    return frame.select(ordered).sort("fname")


class TranscriptTask(Task):
    """A speech-recognition corpus: each row is a clip and its ``sentence``; no labels, so
    only the transcriber families train on it (``transcribe.py``). Train trains, dev
    chooses the best epoch, test (``None``: the corpus has none) is transcribed and, where
    it has sentences, scored; a test without sentences is what a submission transcribes."""

    @property
    def labels(self) -> list[str]:
        return []

    def report_columns(self) -> list[str]:
        return ["gender", "group"]

    @abstractmethod
    def dev_manifest(self) -> pl.DataFrame: ...

    def sample_submission(self) -> Path | None:
        return None

    def no_sample_submission_reason(self) -> str:
        return f"{type(self).__name__} is scored by WER/CER on its test split, not by a submission"


def transcript_frame(rows: dict[str, list[Any]]) -> pl.DataFrame:
    """A transcript manifest from ``rows`` (``fname``, ``path``, ``group``, ``sentence`` when
    known, and any group columns): the standard columns with empty labels."""
    count = len(rows["fname"])
    rows = {**rows, "label": [""] * count, "target": [""] * count}
    columns = [*MANIFEST_COLUMNS, "sentence"] if "sentence" in rows else MANIFEST_COLUMNS
    return manifest_frame(rows, columns)


def label_subset(known: list[str], chosen: list[str] | None, what: str) -> list[str]:
    """``known`` (in its order) restricted to ``chosen`` (None: all of them); a name not in
    ``known`` is a DatasetError listing the known ones."""
    unknown = sorted(set(chosen or []) - set(known))
    if unknown:
        raise DatasetError(f"unknown {what} {unknown}; known: {known}")
    return [name for name in known if chosen is None or name in chosen]


def audio_files(folder: Path, pattern: str) -> list[Path]:
    """The files matching ``pattern`` in ``folder``, sorted; a missing folder or no match is a
    DatasetError naming the folder."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing folder")
    paths = sorted(path for path in folder.glob(pattern) if path.is_file())
    if not paths:
        raise DatasetError(f"{folder}: no files matching {pattern}")
    return paths


# Register every module of this package: the built-in tasks (@TASKS.register).
import_submodules(__name__, __path__)
