"""RAVDESS speech (Ryerson Audio-Visual Database of Emotional Speech and Song), audio only.

::

    <data_dir>/Actor_XX/MM-VV-EE-II-SS-RR-AA.wav

modality MM (03 = audio-only), vocal channel VV (01 = speech, 02 = song), emotion EE
(01..08 = neutral calm happy sad angry fearful disgust surprised), intensity II (01 normal,
02 strong; neutral has only 01), statement SS (01 "Kids are talking by the door", 02 "Dogs
are sitting by the door"), repetition RR, actor AA (01..24; odd = male, even = female).
1,440 speech files from 24 actors. Only audio-only speech files are read (song files, with
vocal channel 02, are skipped; other names are an error). The actor is the group, so folds
are speaker-independent; reports break accuracy down by gender, intensity and actor.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from speechstack.tasks import (
    MANIFEST_COLUMNS,
    TASKS,
    DatasetError,
    EmotionParams,
    Task,
    audio_files,
    label_subset,
    manifest_frame,
)

EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
FILE_NAME = re.compile(
    r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-"
    r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d\d)\.wav$"
)
ACTOR_FOLDER = re.compile(r"^Actor_(?P<actor>\d\d)$")


@TASKS.register("ravdess")
class Ravdess(Task):
    params_schema = EmotionParams
    params: EmotionParams

    def __init__(self, data_dir: Path, params: EmotionParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self._labels = label_subset(EMOTIONS, params.emotions, "RAVDESS emotions")
        self.actor_folders = sorted(path for path in self.data_dir.glob("Actor_*") if path.is_dir())
        if not self.actor_folders:
            raise DatasetError(
                f"{self.data_dir}: no Actor_XX folders; expected the RAVDESS layout "
                "Actor_XX/03-01-EE-II-SS-RR-AA.wav"
            )

    @property
    def labels(self) -> list[str]:
        return self._labels

    def report_columns(self) -> list[str]:
        return ["gender", "intensity", "group"]

    @classmethod
    def speaker_of(cls, fname: str) -> str | None:
        match = FILE_NAME.match(Path(fname).name)
        return None if match is None else f"actor{int(match['actor']):02d}"

    def train_manifest(self) -> pl.DataFrame:
        extra = ["actor", "gender", "intensity", "statement", "repetition"]
        rows: dict[str, list] = {c: [] for c in [*MANIFEST_COLUMNS, *extra]}
        labels = set(self.labels)
        for folder in self.actor_folders:
            folder_match = ACTOR_FOLDER.match(folder.name)
            if folder_match is None:
                raise DatasetError(f"{folder}: actor folders are named Actor_XX (two digits)")
            for path in audio_files(folder, "*.wav"):
                match = FILE_NAME.match(path.name)
                if match is None:
                    raise DatasetError(
                        f"{path}: file name does not follow the RAVDESS pattern "
                        "MM-VV-EE-II-SS-RR-AA.wav (e.g. 03-01-05-02-01-01-12.wav)"
                    )
                if match["actor"] != folder_match["actor"]:
                    raise DatasetError(
                        f"{path}: actor {match['actor']} in the name, but the file is in "
                        f"{folder.name}"
                    )
                if match["modality"] != "03" or match["channel"] != "01":
                    continue  # video files and songs: not audio-only speech
                emotion = EMOTIONS[int(match["emotion"]) - 1]
                if emotion not in labels:
                    continue
                actor = int(match["actor"])
                rows["fname"].append(f"{folder.name}/{path.name}")
                rows["path"].append(str(path.resolve()))
                rows["label"].append(emotion)
                rows["target"].append(emotion)
                rows["group"].append(f"actor{actor:02d}")
                rows["actor"].append(actor)
                rows["gender"].append("male" if actor % 2 else "female")
                rows["intensity"].append("normal" if match["intensity"] == "01" else "strong")
                rows["statement"].append(int(match["statement"]))
                rows["repetition"].append(int(match["repetition"]))
        frame = manifest_frame(rows, MANIFEST_COLUMNS)
        if frame.is_empty():
            raise DatasetError(f"{self.data_dir}: no audio-only speech files (03-01-...) found")
        return frame
