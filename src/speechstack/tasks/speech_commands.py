"""Kaggle TensorFlow Speech Recognition Challenge / Speech Commands v0.01 and v0.02 layout.

::

    <data_dir>/train/audio/<word>/<speaker>_nohash_<n>.wav
    <data_dir>/train/audio/_background_noise_/*.wav
    <data_dir>/train/validation_list.txt, testing_list.txt   (optional)
    <data_dir>/test/audio/clip_*.wav                         (Kaggle only)
    <data_dir>/sample_submission.csv                         (Kaggle only)

Twelve labels are scored: ten commands, ``silence`` and ``unknown`` (every other word).
Silence clips are cut from the background-noise files at random offsets (training draws
a fresh offset every epoch); the noise file is their group, so clips of one file stay in
one fold. Every unknown-word clip is kept: ``unknown_ratio`` x the mean command count of
them are scored (folded, validated), the rest train every fold whose validation side does
not hold their speaker. With ``label_mode: words`` the model learns every word (31 classes on v0.01,
36 on v0.02) and the word probabilities are summed into the 12 labels at prediction time.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from speechstack.audio import audio_info
from speechstack.params.tasks import SpeechCommandsParams
from speechstack.tasks import (
    MANIFEST_COLUMNS,
    TASKS,
    TEST_COLUMNS,
    DatasetError,
    Task,
    manifest_frame,
)

COMMANDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
LABELS = [*COMMANDS, "silence", "unknown"]
NOISE_FOLDER = "_background_noise_"
CLIP_NAME = re.compile(r"^(?P<speaker>[0-9A-Za-z]+)_nohash_(?P<index>\d+)\.wav$")


@TASKS.register("speech_commands")
class SpeechCommands(Task):
    params_schema = SpeechCommandsParams
    params: SpeechCommandsParams

    def __init__(self, data_dir: Path, params: SpeechCommandsParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self.audio_dir = self.data_dir / "train" / "audio"
        if not self.audio_dir.is_dir():
            raise DatasetError(
                f"{self.audio_dir}: missing folder; expected the Kaggle layout "
                "train/audio/<word>/<speaker>_nohash_<n>.wav"
            )
        self._words = sorted(
            entry.name
            for entry in self.audio_dir.iterdir()
            if entry.is_dir() and entry.name != NOISE_FOLDER
        )
        if not self._words:
            raise DatasetError(f"{self.audio_dir}: no word folders found")

    @property
    def labels(self) -> list[str]:
        return LABELS

    def classes(self) -> list[str]:
        if self.params.label_mode == "labels":
            return LABELS
        return [*self._words, "silence", *(["unknown"] if self.params.unknown_class else [])]

    def class_to_label(self) -> np.ndarray:
        classes = self.classes()
        matrix = np.zeros((len(classes), len(LABELS)), dtype=np.float32)
        for row, name in enumerate(classes):
            matrix[row, LABELS.index(word_label(name))] = 1.0
        return matrix

    def noise_files(self) -> list[Path]:
        folder = self.audio_dir / NOISE_FOLDER
        return sorted(folder.glob("*.wav")) if folder.is_dir() else []

    def sample_submission(self) -> Path | None:
        path = self.data_dir / "sample_submission.csv"
        return path if path.is_file() else None

    def no_sample_submission_reason(self) -> str:
        return f"{self.data_dir / 'sample_submission.csv'} not found"

    def solution(self) -> Path | None:
        path = self.data_dir / "demo_solution.csv"
        return path if path.is_file() else None

    def conditions(self) -> Path | None:
        path = self.data_dir / "demo_conditions.csv"
        return path if path.is_file() else None

    @classmethod
    def speaker_of(cls, fname: str) -> str | None:
        match = CLIP_NAME.match(Path(fname).name)
        return None if match is None else match["speaker"]

    def _official_splits(self) -> dict[str, str]:
        splits: dict[str, str] = {}
        for split in ("validation", "testing"):
            listing = self.data_dir / "train" / f"{split}_list.txt"
            if listing.is_file():
                for line in listing.read_text().split():
                    splits[line.strip()] = split
        return splits

    def _word_clips(self) -> pl.DataFrame:
        rows: dict[str, list] = {c: [] for c in [*MANIFEST_COLUMNS, "word", "speaker"]}
        for word in self._words:
            for path in sorted((self.audio_dir / word).glob("*.wav")):
                match = CLIP_NAME.match(path.name)
                if match is None:
                    raise DatasetError(
                        f"{path}: file name does not follow <speaker>_nohash_<n>.wav"
                    )
                label = word_label(word)
                rows["fname"].append(f"{word}/{path.name}")
                rows["path"].append(str(path.resolve()))
                rows["label"].append(label)
                rows["target"].append(label if self.params.label_mode == "labels" else word)
                rows["group"].append(match["speaker"])
                rows["word"].append(word)
                rows["speaker"].append(match["speaker"])
        frame = manifest_frame(rows, MANIFEST_COLUMNS)
        if frame.is_empty():
            raise DatasetError(f"{self.audio_dir}: no <speaker>_nohash_<n>.wav clips found")
        splits = self._official_splits()
        return frame.with_columns(
            pl.col("fname").replace_strict(splits, default="train").alias("official_split")
        )

    def _mark_scored(self, clips: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        """Add ``scored``: every clip but the unknown ones beyond ``unknown_ratio`` x the mean
        command count (a seeded choice). Unscored clips are never validated, so the CV mix
        of labels stays near the test's, but every fold trains on them (see ``scored`` in
        ``speechstack.tasks``)."""
        ratio = self.params.unknown_ratio
        unknown = (clips["label"] == "unknown").to_numpy()
        scored = np.ones(clips.height, dtype=bool)
        if ratio is not None:
            keep = min(int(unknown.sum()), round(ratio * _mean_command_count(clips)))
            rows = np.flatnonzero(unknown)
            scored[rows] = False
            scored[np.sort(rng.choice(rows, size=keep, replace=False))] = True
        return clips.with_columns(pl.Series("scored", scored))

    def _silence_clips(self, count: int, rng: np.random.Generator) -> pl.DataFrame:
        rows: dict[str, list] = {c: [] for c in [*MANIFEST_COLUMNS, "word", "speaker"]}
        files = self.noise_files()
        if count and not files:
            raise DatasetError(
                f"{self.audio_dir / NOISE_FOLDER}: no noise files to cut silence clips from "
                "(set task.params.silence_clips=0 to train without silence)"
            )
        lengths = [audio_info(path)[1] for path in files]
        usable = [(path, length) for path, length in zip(files, lengths, strict=True) if length > 1]
        if count and not usable:
            raise DatasetError(f"{self.audio_dir / NOISE_FOLDER}: every noise file is <= 1 s long")
        per_file = np.bincount(np.arange(count) % max(len(usable), 1), minlength=len(usable))
        for (path, length), n in zip(usable, per_file, strict=True):
            positions = int((length - 1.0) * 1000) + 1  # 1 ms grid of start offsets
            if n > positions:
                raise DatasetError(
                    f"{path}: too short for {n} distinct 1 s silence clips; lower silence_clips"
                )
            starts = np.sort(rng.choice(positions, size=n, replace=False)) / 1000
            for start in starts.tolist():
                rows["fname"].append(f"{NOISE_FOLDER}/{path.name}@{start:.3f}")
                rows["path"].append(str(path.resolve()))
                rows["start"].append(start)
                rows["duration"].append(1.0)
                rows["gain_db"].append(0.0)
                rows["label"].append("silence")
                rows["target"].append("silence")
                rows["group"].append(f"noise:{path.stem}")
                rows["word"].append("silence")
                rows["speaker"].append(f"noise:{path.stem}")
        frame = manifest_frame(rows, MANIFEST_COLUMNS)
        return frame.with_columns(
            pl.lit("train").alias("official_split"), pl.lit(True).alias("scored")
        )

    def train_manifest(self) -> pl.DataFrame:
        # one stream each, so the silence offsets do not depend on the unknown choice
        seed = self.params.seed
        clips = self._mark_scored(self._word_clips(), np.random.default_rng([seed, 0]))
        rng = np.random.default_rng([seed, 1])
        silence_count = self.params.silence_clips
        if silence_count is None:
            silence_count = round(_mean_command_count(clips))
        silence = self._silence_clips(silence_count, rng)
        return pl.concat([clips, silence.select(clips.columns)]).sort("fname")

    def test_manifest(self) -> pl.DataFrame | None:
        folder = self.data_dir / "test" / "audio"
        if not folder.is_dir():
            return None
        paths = sorted(folder.glob("*.wav"))
        if not paths:
            raise DatasetError(f"{folder}: no .wav files")
        rows = {
            "fname": [path.name for path in paths],
            "path": [str(path.resolve()) for path in paths],
        }
        return manifest_frame(rows, TEST_COLUMNS)


def word_label(word: str) -> str:
    """The scored label of a spoken word (or of the ``silence`` class)."""
    if word in COMMANDS or word == "silence":
        return word
    return "unknown"


def _mean_command_count(clips: pl.DataFrame) -> float:
    counts = clips.filter(pl.col("label").is_in(COMMANDS)).group_by("label").len()
    if counts.is_empty():
        raise DatasetError("no clips of any command word (yes, no, up, ...) were found")
    return float(counts["len"].mean())  # type: ignore[arg-type]
