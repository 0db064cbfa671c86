"""CREMA-D (Crowd-sourced Emotional Multimodal Actors Dataset), audio.

::

    <data_dir>/AudioWAV/AAAA_SSS_EEE_LL.wav
    <data_dir>/VideoDemographics.csv        (optional: ActorID,Age,Sex,Race,Ethnicity)

actor AAAA (1001..1091), sentence SSS (one of 12 codes such as IEO, TIE, DFA), emotion EEE
(ANG DIS FEA HAP NEU SAD), level LL (LO MD HI for the IEO sentence, XX unspecified).
7,442 clips from 91 actors. The actor is the group, so folds are speaker-independent;
gender comes from the demographics file when present (else ``unknown``), and reports break
accuracy down by gender, level and actor.
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

EMOTIONS = ["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"]
SENTENCES = ["IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI"]
LEVELS = ["LO", "MD", "HI", "XX", "X"]  # a few real files spell the unspecified level "X"
FILE_NAME = re.compile(
    r"^(?P<actor>\d{4})_(?P<sentence>[A-Z]{3})_(?P<emotion>[A-Z]{3})_(?P<level>[A-Z]{1,2})\.wav$"
)
DEMOGRAPHICS = "VideoDemographics.csv"


@TASKS.register("crema_d")
class CremaD(Task):
    params_schema = EmotionParams
    params: EmotionParams

    def __init__(self, data_dir: Path, params: EmotionParams) -> None:  # type: ignore[override]
        super().__init__(data_dir, params)
        self._labels = label_subset(EMOTIONS, params.emotions, "CREMA-D emotions")
        self.audio_dir = self.data_dir / "AudioWAV"
        if not self.audio_dir.is_dir():
            raise DatasetError(
                f"{self.audio_dir}: missing folder; expected the CREMA-D layout "
                "AudioWAV/AAAA_SSS_EEE_LL.wav"
            )

    @property
    def labels(self) -> list[str]:
        return self._labels

    def report_columns(self) -> list[str]:
        return ["gender", "level", "group"]

    def _genders(self) -> dict[int, str]:
        """ActorID -> male/female from the demographics file (empty when it is absent)."""
        path = self.data_dir / DEMOGRAPHICS
        if not path.is_file():
            return {}
        try:
            table = pl.read_csv(path, infer_schema_length=0)
        except (pl.exceptions.ComputeError, OSError) as error:
            raise DatasetError(f"{path}: cannot read the demographics CSV ({error})") from error
        missing = [c for c in ("ActorID", "Sex") if c not in table.columns]
        if missing:
            raise DatasetError(f"{path}: missing columns {missing} (expected ActorID, Sex, ...)")
        genders = {}
        for actor, sex in table.select("ActorID", "Sex").iter_rows():
            if actor is None or not actor.strip().isdigit():
                raise DatasetError(f"{path}: ActorID {actor!r} is not a number")
            genders[int(actor)] = (sex or "unknown").strip().lower()
        return genders

    @classmethod
    def speaker_of(cls, fname: str) -> str | None:
        match = FILE_NAME.match(Path(fname).name)
        return None if match is None else f"actor{int(match['actor'])}"

    def train_manifest(self) -> pl.DataFrame:
        genders = self._genders()
        extra = ["actor", "gender", "sentence", "level"]
        rows: dict[str, list] = {c: [] for c in [*MANIFEST_COLUMNS, *extra]}
        labels = set(self.labels)
        for path in audio_files(self.audio_dir, "*.wav"):
            match = FILE_NAME.match(path.name)
            problem = (
                "does not follow the CREMA-D pattern AAAA_SSS_EEE_LL.wav (e.g. 1001_DFA_ANG_XX.wav)"
                if match is None
                else f"unknown emotion {match['emotion']!r} (known: {', '.join(EMOTIONS)})"
                if match["emotion"] not in EMOTIONS
                else f"unknown sentence {match['sentence']!r} (known: {', '.join(SENTENCES)})"
                if match["sentence"] not in SENTENCES
                else f"unknown level {match['level']!r} (known: LO, MD, HI, XX)"
                if match["level"] not in LEVELS
                else None
            )
            if problem is not None or match is None:
                raise DatasetError(f"{path}: file name {problem}")
            if match["emotion"] not in labels:
                continue
            actor = int(match["actor"])
            rows["fname"].append(path.name)
            rows["path"].append(str(path.resolve()))
            rows["label"].append(match["emotion"])
            rows["target"].append(match["emotion"])
            rows["group"].append(f"actor{actor}")
            rows["actor"].append(actor)
            rows["gender"].append(genders.get(actor, "unknown"))
            rows["sentence"].append(match["sentence"])
            rows["level"].append("XX" if match["level"] == "X" else match["level"])
        return manifest_frame(rows, MANIFEST_COLUMNS)
